//! arbor: an actor-model supervision tree runtime for node agents.
//!
//! Every supervised service replica and every job execution runs as an actor
//! (on `ractor` and `tokio`) under an Erlang/OTP-style supervision tree.
//! Start with [`SupervisorSpec`] and [`SupervisorRef::start`]; supervise your
//! own ractor actors with [`ChildSpec::actor`], host processes with
//! [`ChildSpec::container`] and a [`ProcessRuntime`]. DESIGN.md explains the
//! semantics.

pub mod actors;
pub mod error;
pub mod events;
pub mod panics;
pub mod runtime;
pub mod spec;
pub mod testing;

mod owned;

pub use actors::{
    container_actor::{ContainerActor, ContainerArgs, ContainerMsg},
    supervisor_actor::{
        ChildContext, ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState,
        Isolated, Supervisor, SupervisorError, SupervisorMsg, SupervisorRef, SupervisorSpec,
        TreeNode,
    },
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
