//! Scenario actors.
use crate::env::{Backend, Env};
use crate::report::Report;

pub async fn run(_env: &Env, backend: Backend) -> anyhow::Result<Report> {
    Ok(Report::new("actors", backend.name()))
}
