//! The one integration test binary.

mod cli;
mod cli_config;
mod daemon;
mod faults;
mod instances;
mod pg_schema;
mod pins;
mod record;
mod restore;
mod retention;
mod security;
mod short_ids;
mod store_contract;
mod support;
