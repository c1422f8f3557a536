//! Specs: supervisor flags, restart and shutdown policies, back-off, and
//! their validation. Plain data (serde) with no actors in it, so a spec file,
//! the HTTP API and Rust code all build the same values.

mod backoff;
pub(crate) mod check;
pub use check::MAX_DURATION;
pub(crate) mod container;
mod deployment;
mod error;
mod flags;
mod job;
pub(crate) mod network;
mod probe;

pub use backoff::BackoffPolicy;
pub(crate) use backoff::fmt as fmt_duration;
pub use container::{BindMount, PullPolicy, Resources, RuntimeKind};
pub use deployment::{
    Changes, Deployment, DeploymentDiff, LogLimits, MAX_NAME_LEN, MAX_REPLICAS, MAX_SPEC_FILE,
    Placement, PlacementScope, ServiceSpec, Spread, StartTimeoutAction,
};
pub use error::{SpecError, SpecErrors};
pub use flags::{
    ChildKind, ExitAction, ExitRule, ExitRules, OnLimit, PanicAction, RestartType, Shutdown,
    Strategy, SupervisorFlags,
};
pub use job::{History, InitStep, JobSpec, NotifySpec, Overlap};
pub use network::NetworkSpec;
pub use probe::{HttpProbe, ProbeCheck, ProbeKind, ProbeSpec, TcpProbe};
