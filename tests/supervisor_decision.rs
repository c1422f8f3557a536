//! The restart decision as a table: no actors, no clock, no I/O.

use std::{collections::VecDeque, time::Duration};

use arbor::{
    ChildExit, ExitAction, ExitRules, ExitStatus, OnLimit, PanicAction, RestartType, Strategy,
    SupervisorFlags,
    actors::supervisor_actor::decision::{
        ChildPolicy, Decision, ExitClass, History, classify, decide, effective_step, restart_scope,
    },
};
use tokio::time::Instant;

fn flags() -> SupervisorFlags {
    SupervisorFlags::default()
}

fn exited(code: i32) -> ChildExit {
    ChildExit::Exited {
        status: ExitStatus::Code(code),
        container: None,
        oom_killed: false,
    }
}

fn killed_by(signal: i32) -> ChildExit {
    ChildExit::Exited {
        status: ExitStatus::Signal(signal),
        container: None,
        oom_killed: false,
    }
}

fn failed() -> ChildExit {
    ChildExit::Failed {
        reason: "boom".into(),
    }
}

fn normal() -> ChildExit {
    ChildExit::Normal { reason: None }
}

struct Case<'a> {
    flags: SupervisorFlags,
    restart: RestartType,
    on_panic: PanicAction,
    rules: ExitRules,
    restarts: VecDeque<Instant>,
    step: u32,
    started_at: Option<Instant>,
    id: &'a str,
}

impl<'a> Case<'a> {
    fn new(restart: RestartType) -> Self {
        Self {
            flags: flags(),
            restart,
            on_panic: PanicAction::Restart,
            rules: ExitRules::none(),
            restarts: VecDeque::new(),
            step: 0,
            started_at: None,
            id: "web-0",
        }
    }

    fn decide(&self, exit: &ChildExit, now: Instant) -> Decision {
        let policy = ChildPolicy {
            id: self.id,
            restart: self.restart,
            on_panic: self.on_panic,
            exit_rules: &self.rules,
        };
        let history = History {
            restarts: &self.restarts,
            backoff_step: self.step,
            started_at: self.started_at,
        };
        decide(&self.flags, &policy, exit, &history, now)
    }
}

/// Every restart type x clean/abnormal exit x strategy: the decision and
/// which children it restarts (start order a, b, c, d; b exits).
#[test]
fn every_cell_of_the_restart_table() {
    use Decision::*;
    use RestartType::*;
    let now = Instant::now();
    let clean = [normal(), exited(0)];
    let abnormal = [exited(3), killed_by(9), failed(), ChildExit::Killed];
    let order = ["a", "b", "c", "d"];
    let scopes = [
        (Strategy::OneForOne, vec!["b"]),
        (Strategy::Dynamic, vec!["b"]),
        (Strategy::OneForAll, vec!["a", "b", "c", "d"]),
        (Strategy::RestForOne, vec!["b", "c", "d"]),
    ];
    let table = [
        (Permanent, true, Restart),
        (Permanent, false, Restart),
        (Transient, true, Complete),
        (Transient, false, Restart),
        (Temporary, true, Drop),
        (Temporary, false, Drop),
    ];
    let mut cells = 0;
    for (restart, is_clean, expected) in table {
        let exits: &[ChildExit] = if is_clean { &clean } else { &abnormal };
        for exit in exits {
            for (strategy, scope) in &scopes {
                let mut case = Case::new(restart);
                case.flags.strategy = *strategy;
                assert_eq!(
                    case.decide(exit, now),
                    expected,
                    "{restart:?} child, exit {exit}, {strategy}"
                );
                if expected == Restart {
                    assert_eq!(&restart_scope(*strategy, order, "b"), scope, "{strategy}");
                }
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 3 * (2 + 4) * 4);
}

#[test]
fn transient_child_restarts_on_abnormal_exit() {
    let case = Case::new(RestartType::Transient);
    assert_eq!(case.decide(&exited(1), Instant::now()), Decision::Restart);
}

#[test]
fn transient_child_completes_on_clean_exit() {
    let case = Case::new(RestartType::Transient);
    assert_eq!(case.decide(&exited(0), Instant::now()), Decision::Complete);
}

#[test]
fn temporary_child_is_never_restarted() {
    let case = Case::new(RestartType::Temporary);
    for exit in [
        normal(),
        exited(2),
        failed(),
        ChildExit::StartFailed { reason: "x".into() },
    ] {
        assert_eq!(case.decide(&exit, Instant::now()), Decision::Drop, "{exit}");
    }
}

#[test]
fn exit_code_rules_override_the_default_classification() {
    let rules = ExitRules::none()
        .with([75], ExitAction::Retry)
        .with([0], ExitAction::Done)
        .with([143], ExitAction::Normal)
        .with([1], ExitAction::Failure);
    assert_eq!(classify(&exited(75), &rules), ExitClass::Retry);
    assert_eq!(classify(&exited(0), &rules), ExitClass::Done);
    assert_eq!(classify(&exited(143), &rules), ExitClass::Normal);
    assert_eq!(classify(&exited(1), &rules), ExitClass::Abnormal);
    assert_eq!(classify(&exited(2), &rules), ExitClass::Abnormal);
    // Rules name codes: signals and actor errors keep their default class.
    assert_eq!(classify(&killed_by(15), &rules), ExitClass::Abnormal);
    assert_eq!(classify(&normal(), &rules), ExitClass::Normal);

    let now = Instant::now();
    let mut permanent = Case::new(RestartType::Permanent);
    permanent.rules = rules.clone();
    assert_eq!(
        permanent.decide(&exited(0), now),
        Decision::Complete,
        "done: a permanent child finished"
    );
    let mut transient = Case::new(RestartType::Transient);
    transient.rules = rules.clone();
    assert_eq!(
        transient.decide(&exited(75), now),
        Decision::Restart,
        "retry restarts a transient child"
    );
    assert_eq!(
        transient.decide(&exited(143), now),
        Decision::Complete,
        "143 treated as a clean exit"
    );
    let mut temporary = Case::new(RestartType::Temporary);
    temporary.rules = rules;
    assert_eq!(
        temporary.decide(&exited(75), now),
        Decision::Drop,
        "temporary children never restart"
    );
}

#[test]
fn retry_codes_do_not_trigger_the_panic_action() {
    let mut case = Case::new(RestartType::Permanent);
    case.on_panic = PanicAction::Isolate;
    case.rules = ExitRules::none().with([75], ExitAction::Retry);
    assert_eq!(case.decide(&exited(75), Instant::now()), Decision::Restart);
    assert_eq!(case.decide(&exited(3), Instant::now()), Decision::Isolate);
}

#[test]
fn isolate_applies_to_abnormal_exits_of_any_restart_type() {
    for restart in [
        RestartType::Permanent,
        RestartType::Transient,
        RestartType::Temporary,
    ] {
        let mut case = Case::new(restart);
        case.on_panic = PanicAction::Isolate;
        assert_eq!(
            case.decide(&exited(3), Instant::now()),
            Decision::Isolate,
            "{restart:?}"
        );
        assert_ne!(
            case.decide(&exited(0), Instant::now()),
            Decision::Isolate,
            "{restart:?}"
        );
    }
}

#[test]
fn shutdown_action_stops_the_service_on_an_abnormal_exit() {
    let mut case = Case::new(RestartType::Permanent);
    case.on_panic = PanicAction::Shutdown;
    assert_eq!(
        case.decide(&failed(), Instant::now()),
        Decision::ShutdownService
    );
    assert_eq!(case.decide(&normal(), Instant::now()), Decision::Restart);
}

#[test]
fn fail_action_leaves_a_child_down_on_an_abnormal_exit_even_with_restarts_to_spare() {
    let mut case = Case::new(RestartType::Permanent);
    case.on_panic = PanicAction::Fail;
    let now = Instant::now();
    assert_eq!(case.decide(&failed(), now), Decision::Fail);
    assert_eq!(case.decide(&exited(3), now), Decision::Fail);
    assert_eq!(case.decide(&killed_by(9), now), Decision::Fail);
    // A normal end is not a failure: the restart type applies.
    assert_eq!(case.decide(&normal(), now), Decision::Restart);
    assert_eq!(case.decide(&exited(0), now), Decision::Restart);
}

#[test]
fn a_failed_start_is_a_restart_attempt_not_a_panic() {
    let mut case = Case::new(RestartType::Transient);
    case.on_panic = PanicAction::Isolate;
    let exit = ChildExit::StartFailed {
        reason: "no such command".into(),
    };
    assert_eq!(case.decide(&exit, Instant::now()), Decision::Restart);
}

#[test]
fn intensity_exceeded_escalates_to_parent() {
    let now = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.max_restarts = 3;
    case.flags.restart_window = Duration::from_secs(10);
    case.restarts = VecDeque::from(vec![now, now, now]);
    assert_eq!(
        case.decide(&failed(), now),
        Decision::Escalate,
        "a 4th restart within 10s is above 3"
    );
    case.restarts.pop_back();
    assert_eq!(
        case.decide(&failed(), now),
        Decision::Restart,
        "the 3rd restart is allowed"
    );
}

#[test]
fn max_restarts_zero_gives_up_at_the_first_crash() {
    let mut case = Case::new(RestartType::Permanent);
    case.flags.max_restarts = 0;
    assert_eq!(case.decide(&failed(), Instant::now()), Decision::Escalate);
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let start = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.max_restarts = 1;
    case.flags.restart_window = Duration::from_secs(60);
    case.restarts = VecDeque::from(vec![start]);
    assert_eq!(
        case.decide(&failed(), start + Duration::from_secs(60)),
        Decision::Escalate,
        "inclusive edge"
    );
    assert_eq!(
        case.decide(&failed(), start + Duration::from_secs(61)),
        Decision::Restart
    );
}

#[test]
fn exits_that_are_not_restarted_never_hit_the_limit() {
    let now = Instant::now();
    let mut case = Case::new(RestartType::Transient);
    case.flags.max_restarts = 0;
    assert_eq!(case.decide(&normal(), now), Decision::Complete);
}

#[test]
fn intensity_exceeded_backs_off_with_the_formula() {
    let now = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.on_limit = OnLimit::Backoff;
    case.flags.max_restarts = 0;
    case.flags.backoff.jitter = 0.0;
    let expected = [10, 20, 40, 80, 160, 300, 300];
    for (step, secs) in expected.into_iter().enumerate() {
        case.step = step as u32;
        assert_eq!(
            case.decide(&failed(), now),
            Decision::Backoff {
                delay: Duration::from_secs(secs),
                next_step: step as u32 + 1
            }
        );
    }
}

#[test]
fn backoff_jitter_is_deterministic_per_child() {
    let now = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.on_limit = OnLimit::Backoff;
    case.flags.max_restarts = 0;
    let first = case.decide(&failed(), now);
    assert_eq!(first, case.decide(&failed(), now));
    let Decision::Backoff { delay, .. } = first else {
        panic!("expected back-off, got {first:?}");
    };
    assert!(
        delay >= Duration::from_secs(10) && delay <= Duration::from_secs(11),
        "{delay:?}"
    );
    assert_eq!(delay, case.flags.backoff.delay(0, "web-0"));
}

#[test]
fn backoff_step_resets_after_a_stable_run() {
    let start = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.on_limit = OnLimit::Backoff;
    case.flags.max_restarts = 0;
    case.flags.backoff.jitter = 0.0;
    case.step = 4;
    case.started_at = Some(start);
    let history = History {
        restarts: &case.restarts,
        backoff_step: case.step,
        started_at: case.started_at,
    };
    let reset_after = case.flags.backoff.reset_after;
    assert_eq!(
        effective_step(
            &case.flags,
            &history,
            start + reset_after - Duration::from_secs(1)
        ),
        4
    );
    assert_eq!(
        effective_step(&case.flags, &history, start + reset_after),
        0
    );
    assert_eq!(
        case.decide(&failed(), start + reset_after),
        Decision::Backoff {
            delay: Duration::from_secs(10),
            next_step: 1
        }
    );
    assert_eq!(
        case.decide(&failed(), start + Duration::from_secs(1)),
        Decision::Backoff {
            delay: Duration::from_secs(160),
            next_step: 5
        }
    );
}

#[test]
fn rest_for_one_restarts_exactly_the_later_siblings() {
    let order = [1, 2, 3, 4, 5];
    assert_eq!(restart_scope(Strategy::RestForOne, order, 3), [3, 4, 5]);
    assert_eq!(restart_scope(Strategy::RestForOne, order, 5), [5]);
    assert_eq!(restart_scope(Strategy::RestForOne, order, 1), order);
}

#[test]
fn backoff_gives_up_once_the_step_reaches_give_up_after() {
    let now = Instant::now();
    let mut case = Case::new(RestartType::Permanent);
    case.flags.on_limit = OnLimit::Backoff;
    case.flags.max_restarts = 0;
    case.flags.backoff.give_up_after = Some(3);
    for step in 0..3 {
        case.step = step;
        assert!(
            matches!(case.decide(&failed(), now), Decision::Backoff { next_step, .. } if next_step == step + 1),
            "step {step}"
        );
    }
    case.step = 3;
    assert_eq!(
        case.decide(&failed(), now),
        Decision::GiveUp { crash_loops: 3 }
    );
    // A clean exit of a transient child never reaches the ladder.
    let mut transient = Case::new(RestartType::Transient);
    transient.flags = case.flags;
    transient.step = 3;
    assert_eq!(transient.decide(&normal(), now), Decision::Complete);
}
