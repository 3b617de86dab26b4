//! Running workflows from Python: `DefaultRunner` ([`default_runner`]), its
//! results (`ExecutionHandle`, `PipelineResult`, in [`results`]), its task
//! records and events ([`records`]), its
//! settings (`DefaultRunnerConfig`, in [`config`]) and the dicts its cron
//! and trigger methods return ([`cron`], [`triggers`]).

mod config;
mod cron;
mod default_runner;
mod records;
mod results;
mod triggers;

pub(crate) use config::PyDefaultRunnerConfig;
pub(crate) use default_runner::{shutdown_all_runners, PyDefaultRunner};
pub(crate) use records::{PyExecutionEvent, PyTaskRecord};
pub(crate) use results::{PyExecutionHandle, PyPipelineResult};
