//! Specs: supervisor flags, restart and shutdown policies, back-off, and
//! their validation. Plain data (serde) with no actors in it, so a spec file,
//! the HTTP API and Rust code all build the same values.

mod backoff;
mod error;
mod flags;
mod job;

pub use backoff::BackoffPolicy;
pub(crate) use backoff::fmt as fmt_duration;
pub use error::{SpecError, SpecErrors};
pub use flags::{
    ExitAction, ExitRule, ExitRules, OnLimit, PanicAction, RestartType, Shutdown, Strategy,
    SupervisorFlags,
};
pub use job::{History, InitStep, JobSpec, NotifySpec, Overlap};
