//! The one integration test binary.

mod pg_schema;
mod store_contract;
mod support;
