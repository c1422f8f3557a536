//! The HTTP API over a real socket, with real processes: health, the tree,
//! services, events and metrics of a crashing service, jobs triggered
//! through the API, ad-hoc runs, cancel, signals, the token, shutdown.

mod api_support;

use std::time::Duration;

use api_support::{Fixture, finished, log_path, until_execution};
use arbor::{
    ApiConfig, BackoffPolicy, ContainerSpec, JobSpec, OnLimit, SupervisorSpec,
    testing::eventually_async,
};
use serde_json::json;

fn service(f: &Fixture, name: &str, script: &str) -> SupervisorSpec {
    SupervisorSpec::service(
        name,
        f.node.runtime().clone(),
        ContainerSpec::shell(name, script),
        1,
    )
}

#[tokio::test]
async fn health_and_tree_answer_json_and_text() {
    let f = Fixture::start(ApiConfig::default()).await;
    let r = f.api.get("/v1/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = r.json();
    assert_eq!(h["ok"], true);
    assert_eq!(h["shutting_down"], false);
    assert_eq!(h["parts"]["executor"], true);

    let r = f.api.get("/v1/tree").await;
    assert_eq!(r.status, 200);
    let tree = r.json();
    assert_eq!(tree["name"], "node");
    assert_eq!(tree["kind"], "supervisor");
    assert!(
        tree["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "node:jobs" && c["strategy"] == "dynamic"),
        "{tree}"
    );

    let r = f.api.get("/v1/tree?format=text").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    assert!(text.starts_with("node [supervisor"), "{text}");
    assert!(
        text.contains("├── node:jobs [supervisor dynamic]"),
        "{text}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn services_are_listed_shown_and_restarted() {
    let f = Fixture::start(ApiConfig::default()).await;
    f.node
        .start_service("web", service(&f, "web", "sleep 1000"))
        .await
        .unwrap();
    eventually_async("web runs", || async {
        let r = f.api.get("/v1/services").await;
        r.status == 200
            && r.json()
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "web" && s["running"] == 1)
    })
    .await;
    let r = f.api.get("/v1/services/web").await;
    assert_eq!(r.status, 200);
    let web = r.json();
    assert_eq!(web["replicas"], 1);
    assert_eq!(web["state"], "running");
    assert_eq!(web["tree"]["children"][0]["name"], "web-0");

    let r = f.api.post("/v1/services/web/restart", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "web");
    let r = f.api.get("/v1/tree?format=text").await;
    assert!(r.text().contains("web-0"), "{}", r.text());
    f.shutdown().await;
}

#[tokio::test]
async fn a_crashing_service_shows_in_events_and_metrics() {
    let f = Fixture::start(ApiConfig::default()).await;
    let mut events = f.api.events("/v1/events").await;
    assert_eq!(events.status, 200, "{}", events.head);
    assert!(
        events
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        events.head
    );
    let spec = service(&f, "crashy", "exit 3")
        .intensity(1, Duration::from_secs(60))
        .on_limit(OnLimit::Backoff)
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
            ..BackoffPolicy::default()
        });
    f.node.start_service("crashy", spec).await.unwrap();

    let m = events
        .wait_for(Duration::from_secs(10), |m| {
            m.event.as_deref() == Some("child_restarted")
        })
        .await;
    let data = m.json();
    assert_eq!(data["event"], "child_restarted");
    assert_eq!(data["supervisor"], "crashy");
    assert_eq!(data["child_kind"], "container");
    assert_eq!(data["exit_code"], 3);
    let m = events
        .wait_for(Duration::from_secs(10), |m| {
            m.event.as_deref() == Some("crash_loop_back_off")
        })
        .await;
    assert_eq!(m.json()["supervisor"], "crashy");

    eventually_async("metrics count the restarts and the crash loop", || async {
        let text = f.api.get("/metrics").await.text();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        value("arbor_service_restarts_total{service=\"crashy\"}") >= 1
            && value("arbor_crash_loops_total{service=\"crashy\"}") >= 1
    })
    .await;
    let r = f.api.get("/metrics").await;
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for line in [
        "# TYPE arbor_service_restarts_total counter",
        "# TYPE arbor_execution_duration_seconds histogram",
        "arbor_executions_active 0",
        "arbor_executions{state=\"running\"} 0",
        "# TYPE arbor_events_dropped_total counter",
        "arbor_events_dropped_total 0",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }

    // Only the asked kinds.
    let mut only = f.api.events("/v1/events?kind=crash_loop_back_off").await;
    let m = only.wait_for(Duration::from_secs(10), |_| true).await;
    assert_eq!(m.event.as_deref(), Some("crash_loop_back_off"));
    f.shutdown().await;
}

#[tokio::test]
async fn a_job_triggered_through_the_api_completes_with_logs() {
    let f = Fixture::start(ApiConfig::default()).await;
    f.node
        .executor()
        .register(JobSpec::shell(
            "hello",
            "echo hello-from-job; echo oops >&2",
        ))
        .await
        .unwrap();
    let mut events = f.api.events("/v1/events?kind=execution_finished").await;

    let r = f.api.post("/v1/jobs/hello/trigger", None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["job"], "hello");

    let rec = finished(&f.api, &id).await;
    assert_eq!(rec["state"]["status"], "completed", "{rec}");
    assert_eq!(rec["state"]["exit_code"], 0);
    assert_eq!(rec["job"], "hello");
    assert_eq!(rec["trigger"]["kind"], "endpoint");
    let addr = rec["trigger"]["remote_addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let r = f
        .api
        .get(&format!("/v1/executions/{id}/logs?stream=stdout"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = r.json();
    assert_eq!(logs["text"], "hello-from-job\n");
    assert_eq!(logs["stream"], "stdout");
    assert_eq!(logs["truncated"], false);
    let r = f
        .api
        .get(&format!("/v1/executions/{id}/logs?stream=full&tail=1"))
        .await;
    let full = r.json()["text"].as_str().unwrap().to_owned();
    assert_eq!(full.lines().count(), 1, "{full}");
    let r = f
        .api
        .get(&format!(
            "/v1/executions/{id}/logs?stream=stderr&format=text"
        ))
        .await;
    assert_eq!(r.text(), "oops\n");

    let m = events
        .wait_for(Duration::from_secs(10), |m| m.json()["id"] == id.as_str())
        .await;
    assert_eq!(m.json()["state"], "completed");

    let r = f.api.get("/v1/jobs").await;
    assert_eq!(r.status, 200);
    let jobs = r.json();
    let hello = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "hello")
        .unwrap_or_else(|| panic!("{jobs}"));
    assert_eq!(hello["latest"]["execution_id"], id.as_str());
    assert_eq!(hello["latest"]["state"]["status"], "completed");
    assert_eq!(hello["schedule"], serde_json::Value::Null);
    let r = f.api.get("/v1/jobs/hello").await;
    assert_eq!(r.json()["name"], "hello");

    let mut nightly = JobSpec::command("nightly", ["true"]);
    nightly.schedule = Some("0 3 * * *".into());
    f.node.executor().register(nightly).await.unwrap();
    let r = f.api.get("/v1/jobs/nightly").await;
    let job = r.json();
    assert_eq!(job["schedule"], "0 3 * * *", "{job}");
    assert_eq!(job["time_zone"], "UTC", "{job}");
    assert!(
        job["next_run"].as_str().unwrap().contains("T03:00:00"),
        "{job}"
    );
    assert_eq!(job["latest"], serde_json::Value::Null);

    let r = f.api.get("/v1/executions?job=hello").await;
    let list = r.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str()),
        "{list}"
    );
    let r = f.api.get("/v1/executions").await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = f.api.get("/v1/executions?job=other").await;
    assert_eq!(r.json(), json!([]));

    let text = f.api.get("/metrics").await.text();
    assert!(
        text.contains("arbor_executions_finished_total{job=\"hello\",state=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("arbor_execution_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("arbor_executions{state=\"completed\"} 1"),
        "{text}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn an_ad_hoc_run_fails_with_exit_code_3_and_both_tails() {
    let f = Fixture::start(ApiConfig::default()).await;
    let r = f
        .api
        .post_json(
            "/v1/runs",
            &json!({
                "command": ["sh", "-c", "echo out; echo err >&2; exit 3"],
                "env": {"SECRET": "hunter2", "PLAIN": "visible"},
                "mask": ["SECRET"],
                "timeout": "30s",
                "kill_after": "1s",
                "max_log_size": "64 KiB",
            }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let run = r.json();
    let id = run["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(run["job"], "sh");
    assert_eq!(run["env_vars"]["SECRET"], "***");
    assert_eq!(run["env_vars"]["PLAIN"], "visible");
    assert!(
        ["pending", "initializing", "running", "failed"].contains(&run["state"].as_str().unwrap()),
        "{run}"
    );
    let stdout_path = log_path(f.state_dir(), &id, "stdout.log");
    let stderr_path = log_path(f.state_dir(), &id, "stderr.log");
    assert_eq!(run["stdout_log_path"], stdout_path.to_str().unwrap());
    assert_eq!(run["stderr_log_path"], stderr_path.to_str().unwrap());
    assert!(!r.text().contains("hunter2"));

    let rec = finished(&f.api, &id).await;
    assert_eq!(rec["state"]["status"], "failed", "{rec}");
    assert_eq!(rec["state"]["exit_code"], 3, "{rec}");
    assert_eq!(rec["state"]["reason"]["kind"], "non_zero_exit", "{rec}");
    assert_eq!(rec["env"]["SECRET"], "***");

    let out = f
        .api
        .get(&format!("/v1/executions/{id}/logs?stream=stdout&tail=10"))
        .await
        .json();
    assert_eq!(out["text"], "out\n");
    let err = f
        .api
        .get(&format!(
            "/v1/executions/{id}/logs?stream=stderr&max_bytes=100"
        ))
        .await
        .json();
    assert_eq!(err["text"], "err\n");
    assert_eq!(std::fs::read_to_string(&stdout_path).unwrap(), "out\n");
    assert_eq!(std::fs::read_to_string(&stderr_path).unwrap(), "err\n");
    f.shutdown().await;
}

#[tokio::test]
async fn a_running_execution_is_cancelled_and_a_second_cancel_conflicts() {
    let f = Fixture::start(ApiConfig::default()).await;
    let r = f
        .api
        .post_json(
            "/v1/runs",
            &json!({"command": ["sleep", "1000"], "name": "nap"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    until_execution(&f.api, &id, |v| v["state"]["status"] == "running").await;

    let r = f
        .api
        .post(
            &format!("/v1/executions/{id}/cancel"),
            Some(r#"{"grace": "1s"}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    let rec = finished(&f.api, &id).await;
    assert_eq!(rec["state"]["status"], "cancelled", "{rec}");

    let r = f
        .api
        .post(&format!("/v1/executions/{id}/cancel"), None)
        .await;
    r.assert_error(409, "conflict", &[&id, "cancelled"]);
    f.shutdown().await;
}

#[tokio::test]
async fn signals_reach_the_process_group_and_stop_continue_pause() {
    let f = Fixture::start(ApiConfig::default()).await;
    let script = "trap 'echo got-usr1; exit 7' USR1; echo ready; while true; do sleep 0.05; done";
    let r = f
        .api
        .post_json("/v1/runs", &json!({"command": ["sh", "-c", script]}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    eventually_async("the trap is set", || async {
        f.api
            .get(&format!("/v1/executions/{id}/logs?stream=stdout"))
            .await
            .json()["text"]
            == "ready\n"
    })
    .await;

    let r = f
        .api
        .post(
            &format!("/v1/executions/{id}/signal"),
            Some(r#"{"signal": "SIGSTOP"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["signal"], "SIGSTOP");
    let rec = until_execution(&f.api, &id, |v| v["paused"] == true).await;
    assert_eq!(rec["state"]["status"], "running");
    let r = f
        .api
        .post(&format!("/v1/executions/{id}/resume"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["paused"], false);
    let r = f
        .api
        .post(&format!("/v1/executions/{id}/pause"), None)
        .await;
    assert_eq!(r.json()["paused"], true);
    let r = f
        .api
        .post(
            &format!("/v1/executions/{id}/signal"),
            Some(r#"{"signal": "cont"}"#),
        )
        .await;
    assert_eq!(r.json()["signal"], "SIGCONT");
    until_execution(&f.api, &id, |v| v["paused"] == false).await;

    // By number: SIGUSR1 is 10 on Linux.
    let r = f
        .api
        .post(
            &format!("/v1/executions/{id}/signal"),
            Some(r#"{"signal": 10}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["signal"], "SIGUSR1");
    let rec = finished(&f.api, &id).await;
    assert_eq!(rec["state"]["exit_code"], 7, "{rec}");
    let out = f
        .api
        .get(&format!(
            "/v1/executions/{id}/logs?stream=stdout&format=text"
        ))
        .await
        .text();
    // A child forked and not yet exec'd runs the trap too, now and then.
    assert!(out.starts_with("ready\ngot-usr1\n"), "{out:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_route_but_health_and_metrics_needs_it() {
    let f = Fixture::start(ApiConfig::default().token("s3cret-token-16bytes")).await;
    f.node
        .executor()
        .register(JobSpec::command("t", ["true"]))
        .await
        .unwrap();
    let id = f
        .node
        .executor()
        .trigger("t", arbor::JobTrigger::Cli)
        .await
        .unwrap();
    let run = json!({"command": ["true"]});
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/v1/tree".into()),
        ("GET", "/v1/services".into()),
        ("GET", "/v1/services/x".into()),
        ("POST", "/v1/services/x/restart".into()),
        ("POST", "/v1/services/x/stop".into()),
        ("POST", "/v1/services/x/start".into()),
        ("PUT", "/v1/services/x/replicas".into()),
        ("GET", "/v1/deployment".into()),
        ("PUT", "/v1/deployment".into()),
        ("GET", "/v1/jobs".into()),
        ("GET", "/v1/jobs/t".into()),
        ("POST", "/v1/jobs/t/trigger".into()),
        ("GET", "/v1/executions".into()),
        ("GET", format!("/v1/executions/{id}")),
        ("GET", format!("/v1/executions/{id}/logs")),
        ("GET", format!("/v1/executions/{id}/wait?timeout=1s")),
        ("POST", format!("/v1/executions/{id}/cancel")),
        ("POST", format!("/v1/executions/{id}/signal")),
        ("POST", format!("/v1/executions/{id}/pause")),
        ("POST", format!("/v1/executions/{id}/resume")),
        ("POST", "/v1/runs".into()),
        ("GET", "/v1/events".into()),
        ("GET", "/v1/events/recent".into()),
        ("GET", "/v1/services/x/logs".into()),
        ("GET", "/v1/nowhere".into()),
    ];
    let run = serde_json::to_vec(&run).unwrap();
    let body = |path: &str| (path == "/v1/runs").then_some(run.as_slice());
    for (method, path) in &routes {
        let r = f
            .api
            .request(
                method,
                path,
                &[("Content-Type", "application/json")],
                body(path),
            )
            .await;
        r.assert_error(401, "unauthorized", &["Authorization"]);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        let r = f
            .api
            .request(
                method,
                path,
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", "Bearer wrong-token-of-16-bytes"),
                ],
                body(path),
            )
            .await;
        r.assert_error(401, "unauthorized", &["token"]);
    }
    assert_eq!(f.node.executor().list_all().await.unwrap().len(), 1);

    // Liveness probes and scrapers need no token.
    assert_eq!(f.api.get("/v1/health").await.status, 200);
    assert_eq!(f.api.get("/metrics").await.status, 200);

    // With the token every route is served (the scheme is case-insensitive).
    for (i, (method, path)) in routes.iter().enumerate() {
        if path == "/v1/events" {
            continue; // a stream: checked below
        }
        let scheme = if i % 2 == 0 { "Bearer" } else { "bearer" };
        let auth = format!("{scheme} s3cret-token-16bytes");
        let r = f
            .api
            .request(
                method,
                path,
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &auth),
                ],
                body(path),
            )
            .await;
        assert_ne!(r.status, 401, "{method} {path}: {}", r.text());
    }
    let events = f
        .api
        .with_token("s3cret-token-16bytes")
        .events("/v1/events")
        .await;
    assert_eq!(events.status, 200);
    f.shutdown().await;
}

#[tokio::test]
async fn the_server_stops_gracefully_with_an_open_event_stream_and_a_pending_wait() {
    let mut f = Fixture::start(ApiConfig::default()).await;
    let mut events = f.api.events("/v1/events").await;
    assert_eq!(events.status, 200);
    let r = f
        .api
        .post_json("/v1/runs", &json!({"command": ["sleep", "1000"]}))
        .await;
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    until_execution(&f.api, &id, |v| v["state"]["status"] == "running").await;
    let api = f.api.clone();
    let path = format!("/v1/executions/{id}/wait?timeout=10m");
    let waiting = tokio::spawn(async move { api.get(&path).await });
    // The wait is in flight before the stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());

    f.stop_server(Duration::from_secs(5)).await.unwrap();
    assert!(events.ends_within(Duration::from_secs(5)).await);
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"]["status"], "running");
    f.shutdown().await;
}

#[tokio::test]
async fn a_shutting_down_node_answers_503() {
    let f = Fixture::start(ApiConfig::default()).await;
    f.node.shutdown(Duration::from_secs(2)).await;
    let r = f.api.get("/v1/health").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["shutting_down"], true);
    let r = f
        .api
        .post_json("/v1/runs", &json!({"command": ["true"]}))
        .await;
    r.assert_error(503, "unavailable", &["shutting down", "/v1/runs"]);
    f.shutdown().await;
}

#[tokio::test]
async fn a_bare_router_serves_and_records_an_unknown_caller() {
    let f = Fixture::start(ApiConfig::default()).await;
    f.node
        .executor()
        .register(JobSpec::command("t", ["true"]))
        .await
        .unwrap();
    // The same node behind `router` served without ConnectInfo.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = api_support::Client {
        addr: listener.local_addr().unwrap(),
        token: None,
    };
    let server = tokio::spawn(
        axum::serve(
            listener,
            arbor::api::router(f.node.clone(), ApiConfig::default()),
        )
        .into_future(),
    );
    let r = api.post("/v1/jobs/t/trigger", None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    let rec = finished(&api, &id).await;
    assert_eq!(rec["trigger"]["remote_addr"], "unknown");
    // Without a state dir in its config, runs report log paths under the
    // node's own state dir.
    let r = api
        .post_json("/v1/runs", &json!({"command": ["true"]}))
        .await;
    let id = r.json()["execution_id"].as_str().unwrap().to_owned();
    let path = r.json()["stdout_log_path"].as_str().unwrap().to_owned();
    assert!(
        path.ends_with(&format!("/executions/{id}/stdout.log")),
        "{path}"
    );
    server.abort();
    f.shutdown().await;
}
