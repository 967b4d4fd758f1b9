//! The one integration test binary.

mod cli_config;
mod support;
