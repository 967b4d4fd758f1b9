//! Several deployd instances on one PostgreSQL database (issue 14).

mod streams;
