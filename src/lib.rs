#![doc = include_str!("../README.md")]

pub mod actors;
pub mod api;
pub mod args;
pub mod chaos;
pub mod cluster;
pub mod cron;
pub mod error;
pub mod events;
pub mod execution;
pub mod exit;
pub mod hooks;
pub mod image;
pub mod journal;
pub mod keeper;
pub mod node;
pub mod overlay;
pub mod panics;
pub mod part;
pub mod runtime;
pub mod spec;
pub mod store;
pub mod testing;
pub mod tokens;

mod owned;

pub use actors::{
    container_actor::{ContainerActor, ContainerArgs, ContainerMsg},
    cron_actor::{CronActor, CronArgs, CronMsg, CronStats},
    executor_actor::{Executor, ExecutorConfig, ExecutorError},
    job_actor::{JobActor, JobMsg, TaskContext},
    overlay_actor::{Disabled, Overlay, OverlayBackend, OverlayError, RecordingOverlay},
    supervisor_actor::{
        ChildContext, ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState,
        Isolated, Supervisor, SupervisorError, SupervisorMsg, SupervisorRef, SupervisorSpec,
        TreeNode,
    },
};
pub use api::{ApiConfig, ApiError};
pub use cron::{
    Clock, CronError, CronFire, CronRef, CronSchedule, CronTarget, FireRecorder, ScheduleInfo,
    ScheduleSpec, SystemClock, TokioClock, jitter_offset,
};
pub use error::{Error, Result};
pub use events::{Event, EventBus, EventStream};
pub use execution::{
    ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState, JobTrigger,
};
pub use node::{Health, Node, NodeConfig, ServiceInfo};
pub use runtime::{
    ContainerId, ContainerSpec, ContainerState, ExitStatus, FaultRuntime, MockRuntime, Output,
    OutputSink, ProcessRuntime, Runtime, RuntimeError,
};
pub use spec::{
    BackoffPolicy, Deployment, DeploymentDiff, ExitAction, ExitRules, History, InitStep, JobSpec,
    NotifySpec, OnLimit, Overlap, PanicAction, RestartType, ServiceSpec, Shutdown, SpecError,
    SpecErrors, Strategy, SupervisorFlags,
};
pub use store::{
    CompletionEvent, CompletionRecord, Delivery, ExecutionFiles, ExecutionOutput, LogSnapshot,
    LogSnapshotQuery, SnapshotStream, Store, StoreError,
};
pub use tokens::{NoTokens, RecordingTokens, TokenSink};
