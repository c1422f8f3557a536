//! Supervisor flags and per-child policies, as OTP names them.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::backoff::{BackoffPolicy, fmt as fmt_duration};
use super::error::SpecError;

/// What kind of child a supervisor has (shown in snapshots and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChildKind {
    /// A user actor.
    Worker,
    /// A container or host process, run by a container actor.
    Container,
    /// A nested arbor supervisor.
    Supervisor,
}

impl fmt::Display for ChildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Worker => "worker",
            Self::Container => "container",
            Self::Supervisor => "supervisor",
        })
    }
}

/// Which children restart when one of them exits and must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited (default).
    #[default]
    OneForOne,
    /// Every child: the others are stopped in reverse start order, then all
    /// start again in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
    /// One-for-one for many children added at run time with `start_child`;
    /// on shutdown they are stopped concurrently, not in order.
    Dynamic,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
            Self::Dynamic => "dynamic",
        })
    }
}

/// What the supervisor does when restarts go above `max_restarts` in `restart_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// OTP: stop every child in reverse order and fail to the parent with
    /// "restart intensity exceeded". The window counts the restarts of all
    /// children (default).
    #[default]
    Escalate,
    /// kubelet: the child enters `CrashLoopBackOff` and restarts after a
    /// growing delay. The window counts each child's own restarts.
    Backoff,
}

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted (default).
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (non-zero code, signal, error, panic).
    Transient,
    /// Never restarted; dropped from the supervisor when it exits.
    Temporary,
}

/// What happens to a child that exits abnormally (from the seed's panic actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicAction {
    /// Apply the restart type and strategy (default).
    #[default]
    Restart,
    /// Keep the failed child's container for debugging, call the isolate
    /// hook, never restart it.
    Isolate,
    /// Stop every child of this supervisor (the whole service).
    Shutdown,
    /// Leave the child down in state `failed`, with its reason: never
    /// restarted (nor counted as a restart) until an operator restarts it.
    /// The node puts each service's supervisor under its root this way, so
    /// a service that gives up fails alone.
    Fail,
}

/// How a child is stopped when its supervisor stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Shutdown {
    /// Killed at once: no graceful stop.
    BrutalKill,
    /// Asked to stop, killed if it has not stopped after the duration.
    Timeout(Duration),
    /// Asked to stop and waited for, however long it takes (default for
    /// child supervisors).
    Infinity,
}

impl Shutdown {
    /// Default for workers: a graceful stop with 5 s to finish.
    pub const WORKER_DEFAULT: Shutdown = Shutdown::Timeout(Duration::from_secs(5));
}

impl fmt::Display for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BrutalKill => f.write_str("brutal_kill"),
            Self::Infinity => f.write_str("infinity"),
            Self::Timeout(d) => f.write_str(&fmt_duration(*d)),
        }
    }
}

impl FromStr for Shutdown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "brutal_kill" => Ok(Self::BrutalKill),
            "infinity" => Ok(Self::Infinity),
            other => humantime::parse_duration(other).map(Self::Timeout).map_err(|e| {
                format!(
                    "invalid shutdown {other:?}: expected brutal_kill, infinity or a duration like 5s ({e})"
                )
            }),
        }
    }
}

impl TryFrom<String> for Shutdown {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Shutdown> for String {
    fn from(s: Shutdown) -> Self {
        s.to_string()
    }
}

/// How an exit code is treated, overriding the default (0 normal, anything else abnormal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitAction {
    /// A clean exit: permanent children restart, transient and temporary do not.
    Normal,
    /// A failure: the panic action applies, permanent and transient restart.
    Failure,
    /// Restart the child (not temporary ones) without applying the panic action.
    Retry,
    /// The child finished its work: never restarted, whatever its restart type.
    Done,
}

/// One rule: these exit codes are treated as `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitRule {
    /// Exit codes the rule applies to.
    pub codes: Vec<i32>,
    /// How they are treated.
    pub action: ExitAction,
}

/// Exit-code rules of a child; the first rule naming a code wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExitRules(pub Vec<ExitRule>);

impl ExitRules {
    /// No rules: 0 is normal, anything else abnormal.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Adds a rule treating `codes` as `action`.
    pub fn with(mut self, codes: impl IntoIterator<Item = i32>, action: ExitAction) -> Self {
        self.0.push(ExitRule {
            codes: codes.into_iter().collect(),
            action,
        });
        self
    }

    /// The action a rule gives `code`, if any.
    pub fn action_for(&self, code: i32) -> Option<ExitAction> {
        self.0
            .iter()
            .find(|r| r.codes.contains(&code))
            .map(|r| r.action)
    }

    /// Checks that no code is named twice and no rule is empty.
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        let mut seen = std::collections::BTreeMap::new();
        for (i, rule) in self.0.iter().enumerate() {
            if rule.codes.is_empty() {
                errors.push(SpecError::new(
                    format!("[{i}].codes"),
                    "[]",
                    "must name at least one exit code",
                ));
            }
            for code in &rule.codes {
                if let Some(first) = seen.insert(*code, i) {
                    errors.push(SpecError::new(
                        format!("[{i}].codes"),
                        code,
                        format!("exit code already has a rule (exit_codes[{first}])"),
                    ));
                }
            }
        }
        errors
    }
}

/// A supervisor's flags: strategy, restart intensity, and what to do past it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorFlags {
    /// Which children restart together.
    pub strategy: Strategy,
    /// Restarts allowed inside `restart_window`; one more triggers `on_limit`
    /// (so 0 means the first restart already does). Default 5.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in (default 300 s).
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// What happens past the limit.
    pub on_limit: OnLimit,
    /// Back-off of crash-looping children (used with `on_limit: backoff`).
    pub backoff: BackoffPolicy,
}

impl Default for SupervisorFlags {
    fn default() -> Self {
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: 5,
            restart_window: Duration::from_secs(300),
            on_limit: OnLimit::Escalate,
            backoff: BackoffPolicy::default(),
        }
    }
}

impl SupervisorFlags {
    /// Checks the flags; field names are relative (`restart_window`, `backoff.max`).
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.restart_window.is_zero() && self.max_restarts > 0 {
            errors.push(SpecError::new(
                "restart_window",
                fmt_duration(self.restart_window),
                format!(
                    "must be > 0 when max_restarts allows restarts ({})",
                    self.max_restarts
                ),
            ));
        }
        errors.extend(
            self.backoff
                .validate()
                .into_iter()
                .map(|e| e.within("backoff")),
        );
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_parses_the_three_forms_and_names_bad_input() {
        assert_eq!("brutal_kill".parse(), Ok(Shutdown::BrutalKill));
        assert_eq!("infinity".parse(), Ok(Shutdown::Infinity));
        assert_eq!(
            "1m 30s".parse(),
            Ok(Shutdown::Timeout(Duration::from_secs(90)))
        );
        let err = "soon".parse::<Shutdown>().unwrap_err();
        assert!(err.contains("\"soon\""), "{err}");
    }

    #[test]
    fn first_rule_naming_a_code_wins_and_duplicates_are_errors() {
        let rules = ExitRules::none()
            .with([75], ExitAction::Retry)
            .with([0, 75], ExitAction::Done);
        assert_eq!(rules.action_for(75), Some(ExitAction::Retry));
        assert_eq!(rules.action_for(0), Some(ExitAction::Done));
        assert_eq!(rules.action_for(1), None);
        let errors = rules.validate();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "[1].codes");
        assert_eq!(errors[0].value, "75");
    }
}
