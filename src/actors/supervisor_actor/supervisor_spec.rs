//! What a supervisor is built from: its name, flags, children and hooks.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use super::child::{ChildExit, ChildSpec};
use crate::spec::{BackoffPolicy, OnLimit, SpecError, SpecErrors, Strategy, SupervisorFlags};

/// What the isolate hook is told about an isolated child.
#[derive(Debug, Clone)]
pub struct Isolated {
    /// The supervisor's name.
    pub supervisor: String,
    /// The child's id.
    pub child: String,
    /// How it failed.
    pub exit: ChildExit,
    /// What the child kept for debugging, when it names it (the
    /// container's id, for a container).
    pub retained: Option<String>,
}

/// Called (synchronously, inside the supervisor: keep it short) when a child
/// is isolated.
pub type IsolateHook = Arc<dyn Fn(&Isolated) + Send + Sync>;

/// What the failure hook is told about a child that stays down.
#[derive(Debug, Clone)]
pub struct GaveUp {
    /// The supervisor's name.
    pub supervisor: String,
    /// The child's id.
    pub child: String,
    /// Why it stays down.
    pub reason: String,
    /// How it last ended.
    pub exit: ChildExit,
    /// Restarts it had.
    pub restarts: u32,
}

/// Called (synchronously, inside the supervisor: keep it short; spawn
/// anything slow) when a child gives up (`backoff.give_up_after`) or fails
/// by its panic action `fail`.
pub type FailHook = Arc<dyn Fn(&GaveUp) + Send + Sync>;

/// A supervisor: its flags and its children in start order.
#[derive(Clone)]
pub struct SupervisorSpec {
    pub(crate) name: String,
    pub(crate) flags: SupervisorFlags,
    pub(crate) children: Vec<ChildSpec>,
    pub(crate) on_isolate: Option<IsolateHook>,
    pub(crate) on_fail: Option<FailHook>,
    pub(crate) max_children: Option<usize>,
    pub(crate) concurrent: bool,
    pub(crate) persist: Option<super::persist::Persist>,
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("name", &self.name)
            .field("flags", &self.flags)
            .field("children", &self.children)
            .field("max_children", &self.max_children)
            .field("concurrent", &self.concurrent)
            .finish_non_exhaustive()
    }
}

impl SupervisorSpec {
    /// A `one_for_one` supervisor with the default flags and no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            flags: SupervisorFlags::default(),
            children: Vec::new(),
            on_isolate: None,
            on_fail: None,
            max_children: None,
            concurrent: false,
            persist: None,
        }
    }

    /// Keeps the children's restart state in `store` under `scope` (a
    /// service's name): restart counts, the intensity window and pending
    /// back-offs continue in the next agent (see
    /// [`crate::store::supervision`]).
    pub fn persist(
        mut self,
        store: crate::store::supervision::SupervisionStore,
        scope: impl Into<String>,
    ) -> Self {
        self.persist = Some(super::persist::Persist {
            store,
            scope: scope.into(),
        });
        self
    }

    /// A dynamic supervisor: children are added with `start_child`; they
    /// are independent, so they start and stop concurrently.
    pub fn dynamic(name: impl Into<String>) -> Self {
        Self::new(name).strategy(Strategy::Dynamic).concurrent(true)
    }

    /// Declares the children independent of each other (a service's
    /// replicas): the supervisor starts them all at once instead of each
    /// after the one before, and stops them all at once instead of in
    /// reverse order, so a slow start or a long grace period of one does
    /// not hold the others. Group restarts (`one_for_all`,
    /// `rest_for_one`) then stop the group at once and start it at once.
    /// Off by default (OTP order); on for `dynamic` supervisors.
    pub fn concurrent(mut self, concurrent: bool) -> Self {
        self.concurrent = concurrent;
        self
    }

    /// Replaces all flags.
    pub fn flags(mut self, flags: SupervisorFlags) -> Self {
        if flags.strategy == Strategy::Dynamic {
            self.concurrent = true;
        }
        self.flags = flags;
        self
    }

    /// Sets the strategy (`dynamic` also makes the children concurrent).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.flags.strategy = strategy;
        if strategy == Strategy::Dynamic {
            self.concurrent = true;
        }
        self
    }

    /// Allows `max_restarts` restarts within `window`.
    pub fn intensity(mut self, max_restarts: u32, window: Duration) -> Self {
        self.flags.max_restarts = max_restarts;
        self.flags.restart_window = window;
        self
    }

    /// Sets what happens past the restart limit.
    pub fn on_limit(mut self, on_limit: OnLimit) -> Self {
        self.flags.on_limit = on_limit;
        self
    }

    /// Sets the back-off of crash-looping children.
    pub fn backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.flags.backoff = backoff;
        self
    }

    /// Adds a child (started after the ones before it).
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Adds children in order.
    pub fn children(mut self, children: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(children);
        self
    }

    /// Applies `f` to every child given so far (e.g. to set the panic action
    /// of all replicas of a service).
    pub fn map_children(mut self, f: impl FnMut(ChildSpec) -> ChildSpec) -> Self {
        self.children = self.children.into_iter().map(f).collect();
        self
    }

    /// Sets the hook called when a child is isolated.
    pub fn on_isolate(mut self, hook: impl Fn(&Isolated) + Send + Sync + 'static) -> Self {
        self.on_isolate = Some(Arc::new(hook));
        self
    }

    /// Sets the hook called when a child stays down `failed` (it gave up
    /// after `backoff.give_up_after` crash loops, or failed by its panic
    /// action `fail`).
    pub fn on_fail(mut self, hook: impl Fn(&GaveUp) + Send + Sync + 'static) -> Self {
        self.on_fail = Some(Arc::new(hook));
        self
    }

    /// Refuses `start_child` past `max` children.
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = Some(max);
        self
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its flags.
    pub fn get_flags(&self) -> &SupervisorFlags {
        &self.flags
    }

    /// Checks the spec and every child, reporting every error with its field.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        SpecErrors(self.errors()).into_result()
    }

    pub(crate) fn errors(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push(SpecError::new(
                "name",
                format!("{:?}", self.name),
                "must not be empty",
            ));
        }
        errors.extend(self.flags.validate());
        if let Some(max) = self.max_children
            && self.children.len() > max
        {
            errors.push(SpecError::new(
                "max_children",
                max,
                format!(
                    "is below the number of children given ({})",
                    self.children.len()
                ),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, child) in self.children.iter().enumerate() {
            let at = format!("children[{i}]");
            errors.extend(child.validate().into_iter().map(|e| e.within(&at)));
            if let Some(first) = seen.insert(child.id(), i) {
                errors.push(SpecError::new(
                    format!("{at}.id"),
                    format!("{:?}", child.id()),
                    format!("duplicate child id (also children[{first}])"),
                ));
            }
        }
        errors
    }
}
