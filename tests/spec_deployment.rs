//! The deployment spec file: the example loads and validates, every field of
//! a full spec lands where it should and round-trips, start order, diff,
//! summary, env files, and conversion into supervisor specs.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use arbor::{
    runtime::mock::Call,
    spec::{Changes, ExitAction, OnLimit, Overlap, PanicAction, RestartType, Strategy},
    *,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/node.yaml");

/// The spec from the issue, every field given.
const FULL: &str = r#"
name: demo
supervisor:
  max_restarts: 10
  restart_window: 1m
  on_limit: escalate
services:
  web:
    command: ["python3", "-m", "http.server", "8080"]
    env: {PORT: "8080"}
    env_file: [".env"]
    cwd: /srv
    replicas: 2
    restart: permanent
    on_panic: restart
    exit_codes: {0: done, 75: retry}
    backoff: {initial: 1s, max: 30s, multiplier: 2, jitter: 0.1, reset_after: 10m}
    stop_timeout: 10s
    depends_on: [db]
    strategy: one_for_one
    max_restarts: 5
    restart_window: 5m
    on_limit: backoff
  db:
    image: "postgres:16"
    command: ["postgres", "-c", "fsync=off"]
    restart: transient
    on_panic: isolate
    strategy: one_for_all
jobs:
  backup:
    command: ["sh", "-c", "echo backing up"]
    init: [{command: ["true"]}]
    schedule: "*/5 * * * *"
    time_zone: Europe/Berlin
    concurrency: forbid
    max_concurrent: 1
    backoff_limit: 2
    deadline: 10m
    starting_deadline: 1m
    history: {successful: 3, failed: 1}
    retention: 1h
    max_log_size: 1MiB
    notify: {command: ["logger", "-t", "arbor"], file: /var/log/arbor-jobs.ndjson}
  report:
    command: ["sh", "-c", "echo report"]
"#;

fn full() -> Deployment {
    let d = Deployment::from_yaml(FULL).unwrap_or_else(|e| panic!("{e}"));
    d.validate().unwrap_or_else(|e| panic!("{e}"));
    d
}

/// The full spec loaded from a directory that has its `.env`.
fn full_with_env_file() -> (tempfile::TempDir, Deployment) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "FROM_FILE=yes\nPORT=1\n").unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, FULL).unwrap();
    let d = Deployment::load(&path).unwrap_or_else(|e| panic!("{e}"));
    d.validate().unwrap_or_else(|e| panic!("{e}"));
    (dir, d)
}

fn mock() -> Arc<dyn Runtime> {
    Arc::new(MockRuntime::new())
}

#[test]
fn the_example_file_loads_and_validates() {
    let d = Deployment::load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    d.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.name, "demo");
    assert_eq!(
        d.services.keys().collect::<Vec<_>>(),
        ["crasher", "web"],
        "a web-ish service and a crashing one"
    );
    assert_eq!(d.start_order(), ["web", "crasher"]);
    let crasher = &d.services["crasher"];
    assert_eq!(crasher.on_limit, OnLimit::Backoff);
    assert!(crasher.backoff.initial <= Duration::from_secs(2));
    assert!(d.jobs["report"].schedule.is_none(), "an on-demand job");
    assert!(d.jobs["tick"].schedule.is_some(), "a cron job");
    for (name, job) in &d.jobs {
        assert_eq!(&job.name, name);
    }
}

#[tokio::test]
async fn the_example_file_needs_no_image_and_no_root() {
    let d = Deployment::load(EXAMPLE).unwrap();
    for (name, s) in &d.services {
        assert!(s.image.is_none(), "{name} runs a host command");
        assert!(!s.command.is_empty());
        let spec = s.supervisor_spec(name, mock()).unwrap();
        spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for job in d.jobs.values() {
        assert!(job.image.is_none());
        assert!(job.notify.file.is_none(), "no file outside the state dir");
    }
}

#[test]
fn the_example_summary_names_every_service_and_job() {
    let d = Deployment::load(EXAMPLE).unwrap();
    assert_eq!(
        d.summary(),
        "deployment demo: 2 services (web x2, crasher), 2 jobs (report, tick @ 0 * * * * * (UTC))"
    );
}

#[test]
fn every_field_of_the_full_spec_lands_where_it_belongs() {
    let d = full();
    assert_eq!(d.name, "demo");
    assert_eq!(d.supervisor.max_restarts, 10);
    assert_eq!(d.supervisor.restart_window, Duration::from_secs(60));

    let web = &d.services["web"];
    assert_eq!(web.command, ["python3", "-m", "http.server", "8080"]);
    assert_eq!(web.env["PORT"], "8080");
    assert_eq!(web.env_file, [std::path::PathBuf::from(".env")]);
    assert_eq!(web.cwd.as_deref(), Some(std::path::Path::new("/srv")));
    assert_eq!(web.replicas, 2);
    assert_eq!(web.restart, RestartType::Permanent);
    assert_eq!(web.on_panic, PanicAction::Restart);
    assert_eq!(
        web.exit_codes,
        BTreeMap::from([(0, ExitAction::Done), (75, ExitAction::Retry)])
    );
    assert_eq!(web.exit_rules().action_for(75), Some(ExitAction::Retry));
    assert_eq!(web.exit_rules().action_for(1), None);
    assert_eq!(web.backoff.initial, Duration::from_secs(1));
    assert_eq!(web.backoff.max, Duration::from_secs(30));
    assert_eq!(web.backoff.multiplier, 2.0);
    assert_eq!(web.backoff.jitter, 0.1);
    assert_eq!(web.backoff.reset_after, Duration::from_secs(600));
    assert_eq!(web.stop_timeout, Duration::from_secs(10));
    assert_eq!(web.shutdown(), Shutdown::Timeout(Duration::from_secs(10)));
    assert_eq!(web.depends_on, ["db"]);
    let flags = web.flags();
    assert_eq!(flags.strategy, Strategy::OneForOne);
    assert_eq!(flags.max_restarts, 5);
    assert_eq!(flags.restart_window, Duration::from_secs(300));
    assert_eq!(flags.on_limit, OnLimit::Backoff);
    assert_eq!(flags.backoff, web.backoff);

    let db = &d.services["db"];
    assert_eq!(db.image.as_deref(), Some("postgres:16"));
    assert_eq!(db.replicas, 1, "default");
    assert_eq!(db.restart, RestartType::Transient);
    assert_eq!(db.on_panic, PanicAction::Isolate);
    assert_eq!(db.flags().strategy, Strategy::OneForAll);
    assert_eq!(db.shutdown(), Shutdown::WORKER_DEFAULT);

    let backup = &d.jobs["backup"];
    assert_eq!(backup.name, "backup", "the key is the name");
    assert_eq!(backup.init.len(), 1);
    assert_eq!(backup.schedule.as_deref(), Some("*/5 * * * *"));
    assert_eq!(backup.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(backup.concurrency, Overlap::Forbid);
    assert_eq!(backup.max_concurrent, Some(1));
    assert_eq!(backup.backoff_limit, 2);
    assert_eq!(backup.deadline, Some(Duration::from_secs(600)));
    assert_eq!(backup.starting_deadline, Some(Duration::from_secs(60)));
    assert_eq!((backup.history.successful, backup.history.failed), (3, 1));
    assert_eq!(backup.retention, Duration::from_secs(3600));
    assert_eq!(backup.max_log_size.as_u64(), 1 << 20);
    assert_eq!(
        backup.notify.command.as_deref(),
        Some(&["logger".to_owned(), "-t".into(), "arbor".into()][..])
    );
    assert_eq!(d.jobs["report"].name, "report");
}

#[test]
fn the_full_spec_round_trips_through_yaml_and_json() {
    let d = full();
    let yaml = d.to_yaml().unwrap();
    assert!(
        !yaml.contains("name: backup"),
        "the key is the name:\n{yaml}"
    );
    let back = Deployment::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(back, d, "{yaml}");
    assert!(d.diff(&back).is_empty());

    let json = serde_json::to_string(&d).unwrap();
    let back: Deployment = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
}

#[test]
fn an_empty_file_is_refused_but_an_explicit_empty_mapping_is_an_empty_deployment() {
    for text in ["", "  \n", "# nothing yet\n", "---\n# still nothing\n"] {
        let e = Deployment::from_yaml(text).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{text:?}: {e}");
    }
    let d = Deployment::from_yaml("{}").unwrap();
    assert_eq!(d, Deployment::default());
    assert_eq!(d.name, "default");
    d.validate().unwrap();
    assert_eq!(d.summary(), "deployment default: 0 services, 0 jobs");
}

#[test]
fn a_deployment_built_in_code_validates_like_a_file() {
    let d = Deployment::new("code")
        .service("db", ServiceSpec::shell("exec sleep 1000"))
        .service(
            "web",
            ServiceSpec::shell("serve").replicas(3).depends_on("db"),
        )
        .job(JobSpec::shell("backup", "echo hi"));
    d.validate().unwrap();
    assert_eq!(
        d.summary(),
        "deployment code: 2 services (db, web x3), 1 job (backup)"
    );
    let bad = d.service("web", ServiceSpec::shell("serve").depends_on("nope"));
    let errors = bad.validate().unwrap_err();
    assert_eq!(errors.0[0].field, "services.web.depends_on[0]");
}

#[test]
fn start_order_puts_dependencies_first_and_breaks_ties_by_name() {
    let d = Deployment::from_yaml(
        r#"
services:
  web: {command: [w], depends_on: [api, cache]}
  api: {command: [a], depends_on: [db]}
  cache: {command: [c]}
  db: {command: [d]}
  zz: {command: [z]}
  admin: {command: [x], depends_on: [db]}
"#,
    )
    .unwrap();
    d.validate().unwrap();
    assert_eq!(
        d.start_order(),
        ["cache", "db", "admin", "api", "web", "zz"]
    );
    assert_eq!(full().start_order(), ["db", "web"]);
}

#[test]
fn start_order_keeps_services_of_a_cycle_at_the_end() {
    let d = Deployment::from_yaml(
        r#"
services:
  a: {command: [a], depends_on: [b]}
  b: {command: [b], depends_on: [a]}
  c: {command: [c], depends_on: [missing]}
"#,
    )
    .unwrap();
    assert!(d.validate().is_err());
    assert_eq!(d.start_order(), ["c", "a", "b"]);
}

#[test]
fn diff_sorts_services_and_jobs_into_added_removed_changed_unchanged() {
    let old = full();
    let mut new = old.clone();
    new.services.remove("db");
    new.services.get_mut("web").unwrap().depends_on.clear();
    new.services.get_mut("web").unwrap().replicas = 3;
    new.services
        .insert("worker".into(), ServiceSpec::shell("work"));
    new.jobs.get_mut("backup").unwrap().schedule = Some("@hourly".into());
    new.jobs
        .insert("cleanup".into(), JobSpec::shell("cleanup", "rm -f x"));

    let diff = old.diff(&new);
    assert_eq!(
        diff.services,
        Changes {
            added: vec!["worker".into()],
            removed: vec!["db".into()],
            changed: vec!["web".into()],
            unchanged: vec![],
        }
    );
    assert_eq!(
        diff.jobs,
        Changes {
            added: vec!["cleanup".into()],
            removed: vec![],
            changed: vec!["backup".into()],
            unchanged: vec!["report".into()],
        }
    );
    assert!(!diff.supervisor_changed && !diff.name_changed);
    assert!(!diff.is_empty());

    let reverse = new.diff(&old);
    assert_eq!(reverse.services.added, ["db"]);
    assert_eq!(reverse.services.removed, ["worker"]);
}

#[test]
fn diff_sees_a_default_written_out_as_no_change() {
    let a = Deployment::from_yaml("services:\n  web: {command: [w]}\n").unwrap();
    let b = Deployment::from_yaml(
        "name: default\nservices:\n  web: {command: [w], replicas: 1, restart: permanent, stop_timeout: 5s}\n",
    )
    .unwrap();
    let diff = a.diff(&b);
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(diff.services.unchanged, ["web"]);

    let c =
        Deployment::from_yaml("supervisor: {max_restarts: 1}\nservices:\n  web: {command: [w]}\n")
            .unwrap();
    assert!(a.diff(&c).supervisor_changed);
    assert!(a.diff(&c).services.is_empty());
}

#[test]
fn container_spec_reads_env_files_in_order_and_env_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.env"), "A=from-a\nB=from-a\nC=from-a\n").unwrap();
    std::fs::write(dir.path().join("b.env"), "B=from-b\nC=from-b\n").unwrap();
    let spec = dir.path().join("node.yaml");
    std::fs::write(
        &spec,
        "services:\n  web:\n    command: [w]\n    env_file: [a.env, b.env]\n    env: {C: from-env}\n    cwd: /tmp\n    labels: {tier: front}\n",
    )
    .unwrap();
    let d = Deployment::load(&spec).unwrap();
    d.validate().unwrap();
    let web = &d.services["web"];
    assert_eq!(
        web.env_file[0],
        dir.path().join("a.env"),
        "resolved against the file's directory"
    );

    let c = web.container_spec("web").unwrap();
    assert_eq!(c.name, "web");
    assert_eq!(c.command, ["w"]);
    assert_eq!(c.env["A"], "from-a");
    assert_eq!(c.env["B"], "from-b", "a later file wins");
    assert_eq!(c.env["C"], "from-env", "env wins over files");
    assert_eq!(c.cwd.as_deref(), Some(std::path::Path::new("/tmp")));
    assert_eq!(c.labels["tier"], "front");
    assert!(c.inherit_env);
}

#[tokio::test]
async fn container_spec_names_the_env_file_it_cannot_read() {
    let d = Deployment::from_yaml(
        "services:\n  web:\n    command: [w]\n    env_file: [/nonexistent/arbor-test.env]\n",
    )
    .unwrap();
    d.validate().unwrap();
    let web = &d.services["web"];
    let e = web.container_spec("web").unwrap_err();
    assert_eq!(e.field, "services.web.env_file[0]");
    assert!(e.value.contains("/nonexistent/arbor-test.env"), "{e}");
    assert!(web.supervisor_spec("web", mock()).is_err());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "OK=1\nnot a line\n").unwrap();
    let mut web = web.clone();
    web.env_file = vec![bad];
    let e = web.container_spec("web").unwrap_err();
    assert!(e.message.contains("line 2"), "{e}");
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let e = Deployment::load("/nonexistent/node.yaml").unwrap_err();
    assert_eq!(e.0[0].field, "file");
    assert!(e.to_string().contains("/nonexistent/node.yaml"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let e = Deployment::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");

    let spec = dir.path().join("node.yaml");
    std::fs::write(&spec, "services:\n  web:\n    replicas: two\n").unwrap();
    let e = Deployment::load(&spec).unwrap_err();
    assert!(
        e.to_string().contains(&format!("{}:3:15", spec.display())),
        "a file's errors point into it: {e}"
    );
}

#[test]
fn stop_timeout_zero_kills_at_once() {
    let d = Deployment::from_yaml("services:\n  web: {command: [w], stop_timeout: 0s}\n").unwrap();
    d.validate().unwrap();
    assert_eq!(d.services["web"].shutdown(), Shutdown::BrutalKill);
}

#[test]
fn an_image_is_not_a_validation_error_the_runtime_decides() {
    let d = Deployment::from_yaml("services:\n  db: {image: \"postgres:16\"}\n").unwrap();
    d.validate().unwrap();
    let c = d.services["db"].container_spec("db").unwrap();
    assert_eq!(c.image.as_deref(), Some("postgres:16"));
    assert!(c.command.is_empty());
}

#[tokio::test]
async fn supervisor_spec_carries_flags_and_every_replica_policy() {
    let (_dir, d) = full_with_env_file();
    let web = d.services["web"].container_spec("web").unwrap();
    assert_eq!(web.env["FROM_FILE"], "yes");
    assert_eq!(web.env["PORT"], "8080", "env wins over the file");
    let spec = d.services["web"].supervisor_spec("web", mock()).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.name(), "web");
    assert_eq!(spec.get_flags(), &d.services["web"].flags());
    let shown = format!("{spec:?}");
    for expected in [
        "id: \"web-0\"",
        "id: \"web-1\"",
        "restart: Permanent",
        "shutdown: Timeout(10s)",
        "on_panic: Restart",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    assert!(!shown.contains("web-2"));

    let db = d.services["db"].supervisor_spec("db", mock()).unwrap();
    let shown = format!("{db:?}");
    assert!(shown.contains("restart: Transient") && shown.contains("on_panic: Isolate"));
}

#[tokio::test(start_paused = true)]
async fn a_service_from_the_spec_runs_its_replicas_and_stops_them_with_its_grace() {
    let (_dir, d) = full_with_env_file();
    let rt = MockRuntime::new();
    let runtime: Arc<dyn Runtime> = Arc::new(rt.clone());
    let spec = d.services["web"].supervisor_spec("web", runtime).unwrap();
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert_eq!(rt.running().await, ["web-0", "web-1"]);
    sup.shutdown().await;
    let calls = rt.calls().await;
    let graces: Vec<Duration> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Stop { grace, .. } => Some(*grace),
            _ => None,
        })
        .collect();
    assert_eq!(graces, [Duration::from_secs(10); 2], "{calls:?}");
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_services_run_and_crash_under_the_process_runtime() {
    let d = Deployment::load(EXAMPLE).unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new().expect("process runtime"));

    let web = d.services["web"]
        .supervisor_spec("web", runtime.clone())
        .unwrap();
    let (web, _) = SupervisorRef::start(web).await.unwrap();
    let children = web.which_children().await.unwrap();
    assert_eq!(children.len(), 2);
    assert!(
        children.iter().all(|c| c.state == ChildState::Running),
        "{children:?}"
    );

    let crasher = d.services["crasher"]
        .supervisor_spec("crasher", runtime)
        .unwrap();
    let (crasher, _) = SupervisorRef::start(crasher).await.unwrap();
    let mut events = crasher.events();
    let restarted = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if let Event::ChildRestarted { exit_code, .. } = event {
                return exit_code;
            }
        }
        None
    })
    .await
    .expect("the crasher restarts");
    assert_eq!(restarted, Some(3));

    crasher.shutdown().await;
    web.shutdown().await;
}

#[test]
fn a_networked_job_gets_the_zone_search_domains_unless_it_names_its_own() {
    let d = arbor::Deployment::from_yaml(
        "name: shop\nzone: corp.example\njobs:\n  a:\n    command: [a]\n    network: {}\n  b:\n    command: [b]\n    network: {dns_search: [x.example]}\n  c:\n    command: [c]\n",
    )
    .unwrap();
    d.validate().unwrap();
    let search = |j: &str| {
        d.job_spec(j)
            .unwrap()
            .network
            .map(|n| n.dns_search)
            .unwrap_or_default()
    };
    assert_eq!(search("a"), ["shop.corp.example", "corp.example"]);
    assert_eq!(search("b"), ["x.example"]);
    assert!(search("c").is_empty(), "not networked");
}

#[test]
fn a_new_zone_changes_the_networked_jobs_and_services_only() {
    let yaml = |zone: &str| {
        format!(
            "zone: {zone}\nservices:\n  web:\n    command: [serve]\n    network: {{}}\n  db:\n    command: [db]\njobs:\n  a:\n    command: [a]\n    network: {{}}\n  b:\n    command: [b]\n"
        )
    };
    let old = arbor::Deployment::from_yaml(&yaml("one.example")).unwrap();
    let new = arbor::Deployment::from_yaml(&yaml("two.example")).unwrap();
    let diff = old.diff(&new);
    assert_eq!(diff.services.changed, ["web"]);
    assert_eq!(diff.jobs.changed, ["a"]);
}

#[test]
fn durations_past_ten_years_are_refused_with_their_field() {
    let d = Deployment::from_yaml(
        "services:\n  web:\n    command: [sleep, \"1\"]\n    stop_timeout: 18446744073709551615s\njobs:\n  j:\n    command: [\"true\"]\n    deadline: 18446744073709551615s\n",
    )
    .unwrap();
    let e = d.validate().unwrap_err().to_string();
    assert!(e.contains("services.web.stop_timeout"), "{e}");
    assert!(e.contains("jobs.j.deadline"), "{e}");
    assert!(e.contains("at most 10 years"), "{e}");
}

#[test]
fn the_summary_of_a_large_spec_lists_a_dozen_names_and_counts_the_rest() {
    let mut text = String::from("services:\n");
    for i in 0..30 {
        text.push_str(&format!("  s{i}:\n    command: [sleep, \"1\"]\n"));
    }
    let d = arbor::Deployment::from_yaml(&text).unwrap();
    let summary = d.summary();
    assert!(summary.contains("30 services ("), "{summary}");
    assert!(summary.contains("and 18 more)"), "{summary}");
    assert!(summary.len() < 200, "{summary}");
}
