//! The one integration test binary.

mod cli_config;
mod pg_schema;
mod store_contract;
mod support;
