//! The one integration test binary.

mod pg_schema;
mod support;
