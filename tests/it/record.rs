//! "The record never lies": what deployd stores and reports is what really
//! happened, whatever bytes a client or a step sends and whatever happens to
//! the files under the data dir or to the daemon itself.
//!
//! - `input`: control characters in request fields are 400 naming the field,
//!   before anything is done; step output and errors with NUL bytes are
//!   stored (NUL replaced) on both stores.
//! - `sources`: a source file changed on disk is refused by its digest and
//!   repaired by a new upload; data subdirectories removed at run time come
//!   back.
//! - `steps`: a step dies with a SIGKILLed daemon; the `local` cluster
//!   refuses to activate a release directory that is gone.
//! - `stopping`: one step per target — cancel, supersede and a timeout end a
//!   deployment only once its step is gone; a store outage is not a crash.

mod input;
mod sources;
mod steps;
mod stopping;
