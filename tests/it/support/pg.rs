//! A fresh PostgreSQL database per test (being written).
