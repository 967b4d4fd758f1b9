//! The one integration test binary.

mod cli_config;
mod store_contract;
mod support;
