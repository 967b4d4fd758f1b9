//! deployd owns the deployment lifecycle of apps on clusters. A client uploads
//! a source and asks for a deploy; the server creates the record, runs the
//! cluster's build → push → activate steps as real processes, moves the record
//! through the phases of the pure state machine in [`machine`] as the work
//! really happens, and streams every change to whoever watches. One
//! [`target`] actor per (app, cluster), spawned by the [`supervisor`],
//! serializes everything that happens to that target, so locking is inherent;
//! its decisions are a pure core ([`target::TargetCore`]). Every state change
//! is committed to the [`store`] before anyone hears of it ([`daemon::Daemon::commit`]).

#[cfg(feature = "cli")]
pub mod client;
pub mod compaction;
pub mod config;
pub mod daemon;
pub mod events;
pub mod http;
pub mod instance;
pub mod layout;
pub mod listen;
pub mod machine;
pub mod metrics;
pub mod model;
pub mod names;
#[cfg(feature = "cli")]
pub mod pack;
pub mod pipeline;
pub mod reconcile;
pub mod redact;
pub mod server;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod target;
pub mod telemetry;
pub mod users;
