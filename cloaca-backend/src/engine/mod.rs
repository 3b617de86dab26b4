//! The workflow engine: a plain Rust library, independent of Python.
//!
//! The PyO3 layer in `crate::python` stays a thin shell over it so that the
//! engine's logic is tested with `cargo test` alone.
//!
//! - [`dag`]: workflow structure, validation, order, version, context merging.
//! - [`retry`]: retry policies and task failures.
//! - [`store`]: durable state, one implementation per backend.
//! - [`registry`]: the workflows this process can run.
//! - [`runner`]: worker threads that claim, run and record task attempts.

pub mod backend;
pub mod cron;
pub mod dag;
pub mod error;
pub mod registry;
pub mod retry;
pub mod runner;
pub mod scheduler;
pub mod store;
pub mod tenants;
pub mod time;
pub mod url;

#[cfg(test)]
mod tests;

/// The state a workflow's tasks share: a JSON object.
pub type Context = serde_json::Map<String, serde_json::Value>;
