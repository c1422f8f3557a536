//! Bad specs are rejected with errors that name the field and the value;
//! nothing panics and a running supervisor survives bad input.

use std::{sync::Arc, time::Duration};

use arbor::{testing::*, *};

fn errors_of(spec: &SupervisorSpec) -> Vec<String> {
    spec.validate()
        .expect_err("spec should be invalid")
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[tokio::test]
async fn a_zero_window_with_restarts_allowed_is_rejected() {
    let spec = SupervisorSpec::new("app").intensity(3, Duration::ZERO);
    assert_eq!(
        errors_of(&spec),
        ["restart_window: must be > 0 when max_restarts allows restarts (3) (got 0s)"]
    );
    assert!(
        SupervisorSpec::new("app")
            .intensity(0, Duration::ZERO)
            .validate()
            .is_ok()
    );
}

#[tokio::test]
async fn a_back_off_cap_below_its_initial_delay_is_rejected() {
    let spec = SupervisorSpec::new("app").backoff(BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(5),
        multiplier: 0.5,
        jitter: 1.5,
        ..BackoffPolicy::default()
    });
    assert_eq!(
        errors_of(&spec),
        [
            "backoff.max: must be >= initial (10s) (got 5s)",
            "backoff.multiplier: must be >= 1 (got 0.5)",
            "backoff.jitter: must be between 0 and 1 (got 1.5)",
        ]
    );
}

#[tokio::test]
async fn duplicate_child_ids_are_rejected() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .child(probe("web", &j))
        .child(probe("db", &j))
        .child(probe("web", &j));
    assert_eq!(
        errors_of(&spec),
        ["children[2].id: duplicate child id (also children[0]) (got \"web\")"]
    );
}

#[tokio::test]
async fn an_empty_argv_and_an_empty_id_are_rejected() {
    let rt: Arc<dyn Runtime> = Arc::new(MockRuntime::new());
    let spec = SupervisorSpec::new("app")
        .child(ChildSpec::container(
            "web",
            rt.clone(),
            ContainerSpec::command("web", Vec::<String>::new()),
        ))
        .child(ChildSpec::container(
            "",
            rt,
            ContainerSpec::shell("x", "true"),
        ));
    assert_eq!(
        errors_of(&spec),
        [
            "children[0].container.command: must not be empty: give the program and its arguments (argv) (got [])",
            "children[1].id: must not be empty (got \"\")",
        ]
    );
}

#[tokio::test]
async fn every_error_of_a_nested_spec_is_reported_with_its_path() {
    let j = Journal::new();
    let inner = SupervisorSpec::new("inner")
        .intensity(1, Duration::ZERO)
        .child(
            probe("x", &j).exit_rules(
                ExitRules::none()
                    .with([1], ExitAction::Retry)
                    .with([1], ExitAction::Done),
            ),
        );
    let spec = SupervisorSpec::new("").child(ChildSpec::supervisor("inner", inner));
    assert_eq!(
        errors_of(&spec),
        [
            "name: must not be empty (got \"\")",
            "children[0].supervisor.restart_window: must be > 0 when max_restarts allows restarts (1) (got 0s)",
            "children[0].supervisor.children[0].exit_codes[1].codes: exit code already has a rule (exit_codes[0]) (got 1)",
        ]
    );
}

#[tokio::test]
async fn starting_an_invalid_spec_fails_with_every_error() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(1, Duration::ZERO)
        .child(probe("a", &j))
        .child(probe("a", &j));
    let err = SupervisorRef::start(spec).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid spec for supervisor app: invalid spec (2 errors)"),
        "{text}"
    );
    assert!(
        text.contains("restart_window") && text.contains("children[1].id"),
        "{text}"
    );
    assert!(j.take().await.is_empty(), "nothing was started");
}

#[tokio::test]
async fn a_running_supervisor_survives_an_invalid_child() {
    let j = Journal::new();
    let rt: Arc<dyn Runtime> = Arc::new(MockRuntime::new());
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    let bad = ChildSpec::container("c", rt, ContainerSpec::command("c", [""]));
    let err = sup.start_child(bad).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("container.command[0]: program must not be empty"),
        "{err}"
    );
    assert_eq!(sup.count_children().await.unwrap().active, 1);
    sup.shutdown().await;
}

#[test]
fn supervisor_flags_parse_from_json_and_refuse_unknown_fields() {
    let flags: SupervisorFlags = serde_json::from_str(
        r#"{"strategy":"rest_for_one","max_restarts":3,"restart_window":"1m","on_limit":"backoff",
            "backoff":{"initial":"1s","max":"30s"}}"#,
    )
    .unwrap();
    assert_eq!(flags.strategy, Strategy::RestForOne);
    assert_eq!(flags.restart_window, Duration::from_secs(60));
    assert_eq!(flags.backoff.max, Duration::from_secs(30));
    assert_eq!(
        flags.backoff.multiplier, 2.0,
        "unset fields keep their defaults"
    );
    let err = serde_json::from_str::<SupervisorFlags>(r#"{"stratgy":"one_for_all"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `stratgy`"), "{err}");
    let err = serde_json::from_str::<Shutdown>(r#""soonish""#).unwrap_err();
    assert!(err.to_string().contains("\"soonish\""), "{err}");
}
