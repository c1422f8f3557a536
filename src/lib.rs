#![doc = include_str!("../README.md")]

pub mod actors;
pub mod cron;
pub mod error;
pub mod events;
pub mod panics;
pub mod runtime;
pub mod spec;
pub mod testing;

mod owned;

pub use actors::{
    container_actor::{ContainerActor, ContainerArgs, ContainerMsg},
    cron_actor::{CronActor, CronArgs, CronMsg, CronStats},
    supervisor_actor::{
        ChildContext, ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState,
        Isolated, Supervisor, SupervisorError, SupervisorMsg, SupervisorRef, SupervisorSpec,
        TreeNode,
    },
};
pub use cron::{
    Clock, CronError, CronFire, CronRef, CronSchedule, CronTarget, FireRecorder, ScheduleInfo,
    ScheduleSpec, SystemClock, TokioClock, jitter_offset,
};
pub use error::{Error, Result};
pub use events::{Event, EventBus, EventStream};
pub use runtime::{
    ContainerId, ContainerSpec, ContainerState, ExitStatus, MockRuntime, ProcessRuntime, Runtime,
    RuntimeError,
};
pub use spec::{
    BackoffPolicy, ExitAction, ExitRules, OnLimit, PanicAction, RestartType, Shutdown, SpecError,
    SpecErrors, Strategy, SupervisorFlags,
};
