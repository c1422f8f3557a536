//! The web view without a browser: the agent serves its page and assets
//! without the token (they hold no data) and everything else still needs
//! it; `arbor ui` prints the page's address with the token, and says what
//! to do when the agent has no TCP listener.

mod cli_support;

use cli_support::{Agent, arbor_out, start_agent, write_file};

const SPEC: &str = "services:\n  web:\n    command: [\"sleep\", \"3004\"]\n";

/// `GET path` on `agent`'s TCP API without a token: status, head, body.
fn get_open(agent: &Agent, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let addr = agent.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn the_page_and_its_assets_load_without_the_token_and_the_data_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);

    let (status, head, body) = get_open(&agent, "/ui");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(body.contains("<script src=\"/ui/app.js\""), "{body}");
    assert!(!body.contains(&agent.token));

    let (status, head, body) = get_open(&agent, "/ui/app.js");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("/v1/events"));
    let (status, head, _) = get_open(&agent, "/ui/app.css");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"), "{head}");

    for path in ["/v1/tree", "/v1/services", "/v1/events", "/ui/../v1/tree"] {
        let (status, _, body) = get_open(&agent, path);
        assert_eq!(status, 401, "{path}: {body}");
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn arbor_ui_prints_the_page_with_the_token_and_forgets_it_when_the_agent_stops() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");
    let agent = Agent::start(&spec, &state, &[]);

    let out = agent.arbor(["ui"]).expect(0);
    assert_eq!(
        out.stdout.trim(),
        format!("{}/ui#token={}", agent.url, agent.token)
    );
    // Over TCP, with the token given.
    let token = write_file(dir.path(), "token", &agent.token);
    let out = agent
        .arbor_tcp(["ui", "--token-file", token.to_str().unwrap()])
        .expect(0);
    assert_eq!(
        out.stdout.trim(),
        format!("{}/ui#token={}", agent.url, agent.token)
    );

    let socket = agent.socket.clone();
    assert_eq!(agent.stop(), 0);
    assert!(
        !state.join("api.url").exists(),
        "api.url outlived the agent"
    );
    let out = arbor_out(["--agent", &socket, "ui"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}

#[test]
fn arbor_ui_without_a_tcp_listener_says_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, line) = start_agent(dir.path(), SPEC, std::iter::empty::<&str>());
    let socket = line.strip_prefix("listening on ").unwrap().to_owned();
    let out = arbor_out(["--agent", &socket, "ui"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("has no TCP listener"), "{}", out.stderr);
    assert!(out.stderr.contains("--listen 127.0.0.1:"), "{}", out.stderr);
}

#[test]
fn recent_events_hold_what_happened_before_a_client_came() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  crashy:\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    backoff: {initial: 1h, max: 1h}\n",
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    cli_support::eventually("a crash loop", || {
        agent.service("crashy")["status"] == "crash_loop_back_off"
    });
    let (code, body) = agent.http(
        "GET",
        "/v1/events/recent?kind=child_exited,crash_loop_back_off",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = events.as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "child_exited" && e["child"] == "crashy-0"),
        "{body}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "crash_loop_back_off"),
        "{body}"
    );
    assert!(events.iter().all(|e| e["at"].is_string()), "{body}");
    let (code, body) = agent.http("GET", "/v1/events/recent?limit=1", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (code, body) = agent.http("GET", "/v1/events/recent?limit=0", "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
    let (code, body) = agent.http("GET", "/v1/events/recent?kind=nope", "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nope"), "{body}");
    assert_eq!(agent.stop(), 0);
}
