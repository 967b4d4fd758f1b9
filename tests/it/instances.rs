//! Several deployd instances on one PostgreSQL database (issue 14).

mod failover;
mod fencing;
mod routing;
mod streams;
