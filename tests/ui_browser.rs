//! The web view in a real browser: headless Chromium from Debian's
//! `chromium` package, driven through WebDriver (`chromedriver` from
//! `chromium-driver`) with fantoccini, against the real agent binary.
//!
//! Without both programs the test is reported ignored (this file has its
//! own harness so that it can say so) and prints how to install them.
//! Screenshots of the tree, a crash loop and the log views are written
//! under `target/ui/`.

mod cli_support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cli_support::{Agent, write_file};
use fantoccini::{Client, ClientBuilder, Locator};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};

fn main() {
    let args = Arguments::from_args();
    let tools = browser();
    if let Err(why) = &tools {
        eprintln!(
            "ui_browser: skipped: {why}; install them with `apt-get install chromium chromium-driver` (.ci/run does)"
        );
    }
    let ignored = tools.is_err();
    let trials = vec![
        Trial::test(
            "the_web_view_follows_the_live_tree_and_its_actions_reach_the_agent",
            move || run(tools.clone()),
        )
        .with_ignored_flag(ignored),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Chromium's and chromedriver's paths, or what is missing.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(n))
                    .find(|p| p.is_file())
            })
        })
    };
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        (None, Some(_)) => Err("chromium is not installed".into()),
        (Some(_), None) => Err("chromedriver is not installed".into()),
        (None, None) => Err("chromium and chromedriver are not installed".into()),
    }
}

fn run(tools: Result<(PathBuf, PathBuf), String>) -> Result<(), Failed> {
    let (chromium, driver) = tools.map_err(Failed::from)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(web_view(&chromium, &driver))
}

/// chromedriver on a free port, killed when dropped.
struct Driver(Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(driver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver(child, format!("http://127.0.0.1:{port}"));
    cli_support::eventually("chromedriver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    d
}

/// Where the screenshots go: `target/ui/`.
fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    let path = shots().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("ui_browser: wrote {}", path.display());
}

/// Evaluates `expr` in the page (as `return (expr);`).
async fn js(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Polls `expr` in the page until it is truthy (every 50 ms, at most
/// `within`); its value and how long it took.
async fn until(c: &Client, what: &str, expr: &str, within: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let v = js(c, expr).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what} ({expr} = {v})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` names. The page re-renders its rows on every
/// tree update, so the element found can be replaced before the click
/// reaches it (WebDriver's "stale element reference"); it is then looked up
/// again, as a user's second click would find the new row.
async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        let element = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(e)
                if e.to_string().contains("stale element")
                    && start.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// The pids of `replica`'s starts, oldest first, read from the service's
/// logs through the API (`[ARBOR] started web-0 (pid N)`).
fn starts(agent: &Agent, service: &str, replica: &str) -> Vec<i32> {
    let (status, body) = agent.http(
        "GET",
        &format!("/v1/services/{service}/logs?replica={replica}&tail=1000"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let lines: Value = serde_json::from_str(&body).unwrap();
    let marker = format!("[ARBOR] started {replica} (pid ");
    lines["lines"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["text"].as_str())
        .filter_map(|t| t.split_once(&marker))
        .filter_map(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .collect()
}

const SPEC: &str = r#"
name: browser
services:
  web:
    command: ["sh", "-c", "echo web up; exec sleep 3001"]
    replicas: 2
  crashy:
    command: ["sh", "-c", "echo crashing now >&2; exit 3"]
    max_restarts: 1
    restart_window: 1m
    on_limit: backoff
    backoff: {initial: 40s, max: 1m, multiplier: 2, jitter: 0}
jobs:
  hello:
    command: ["sh", "-c", "echo hello from the job; echo and a second line"]
"#;

async fn web_view(chromium: &Path, driver: &Path) -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    // In a cluster with one peer: the Cluster tab follows it.
    let cookie = write_file(dir.path(), "cookie", "browser test cookie\n");
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (main_port, peer_port): (u16, u16) = (port(()), port(()));
    let cluster = |name: &str, port: u16, join: Option<u16>| -> Vec<String> {
        let mut a = vec![
            "--cluster-listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--cluster-cookie-file".into(),
            cookie.display().to_string(),
            "--node-name".into(),
            name.into(),
            "--heartbeat-interval".into(),
            "200ms".into(),
        ];
        if let Some(j) = join {
            a.extend(["--join".into(), format!("127.0.0.1:{j}")]);
        }
        a
    };
    let main_args = cluster("main", main_port, None);
    let agent = Agent::start(
        &spec,
        &dir.path().join("state"),
        &main_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let peer_spec = write_file(
        dir.path(),
        "peer.yaml",
        "services:\n  idle:\n    command: [sleep, '3000']\n",
    );
    let peer_args = cluster("peer", peer_port, Some(main_port));
    let peer = Agent::start(
        &peer_spec,
        &dir.path().join("peer"),
        &peer_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let driver = start_driver(driver);

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,900",
                     "--user-data-dir=".to_owned() + &dir.path().join("chrome").display().to_string()],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.1)
        .await
        .map_err(|e| format!("failed to start a chromium session: {e}"))?;
    let result = match steps(&c, &agent).await {
        Ok(()) => cluster_steps(&c, peer).await,
        Err(e) => Err(e),
    };
    let _ = c.close().await;
    drop(driver);
    assert_eq!(agent.stop(), 0);
    result
}

async fn steps(c: &Client, agent: &Agent) -> Result<(), Failed> {
    // `arbor ui` finds the TCP listener and the token beside the socket;
    // the token comes in the fragment and the page takes it out of the URL.
    let page = agent.arbor(["ui"]).expect(0).stdout.trim().to_owned();
    assert_eq!(page, format!("{}/ui#token={}", agent.url, agent.token));
    c.goto(&page).await.map_err(|e| e.to_string())?;

    // The page lists the services of the agent, with their replicas.
    let second = Duration::from_secs(1);
    let row = |name: &str| format!("document.querySelector('.row[data-name=\"{name}\"]')");
    for name in ["web", "web-0", "web-1", "crashy", "crashy-0"] {
        until(c, name, &row(name), 20 * second).await;
    }
    until(
        c,
        "the live dot",
        "document.getElementById('live').dataset.live === 'true'",
        20 * second,
    )
    .await;
    assert!(
        !js(c, "location.href")
            .await
            .as_str()
            .unwrap()
            .contains("token"),
        "the token left the address bar"
    );
    assert_eq!(
        js(c, &format!("{}.dataset.state", row("web-0"))).await,
        "running"
    );
    let loaded = js(c, "window.arborPage.loadedAt").await;
    shot(c, "tree.png").await;

    // SIGKILL of a replica's process: the restart shows without a reload.
    let before = js(c, &format!("+{}.dataset.restarts", row("web"))).await;
    let pid = *starts(agent, "web", "web-0").last().expect("web-0 started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_, took) = until(
        c,
        "web's restart count to go up",
        &format!("+{}.dataset.restarts > {before}", row("web")),
        2 * second,
    )
    .await;
    eprintln!("ui_browser: the kill of web-0 showed in the page after {took:?}");
    until(
        c,
        "web-0 running again",
        &format!("{}.dataset.state === 'running'", row("web-0")),
        20 * second,
    )
    .await;
    assert_eq!(
        js(c, "window.arborPage.loadedAt").await,
        loaded,
        "the page was reloaded"
    );

    // A crash-looping service shows its back-off with a countdown.
    let (text, _) = until(
        c,
        "crashy's countdown",
        &format!("{0} && {0}.dataset.state === 'crash_loop_back_off' && ({0}.querySelector('.countdown') || {{}}).textContent", row("crashy")),
        20 * second,
    )
    .await;
    let first = text.as_str().unwrap().to_owned();
    assert!(first.starts_with("restart in "), "{first}");
    // It counts down.
    until(
        c,
        "the countdown to tick",
        &format!(
            "{}.querySelector('.countdown').textContent !== '{first}'",
            row("crashy")
        ),
        5 * second,
    )
    .await;
    click(c, ".row[data-name=\"crashy\"] .name").await;
    until(
        c,
        "crashy's log in the detail pane",
        "(document.getElementById('log') || {}).textContent?.includes('crashing now')",
        20 * second,
    )
    .await;
    until(
        c,
        "the next restart in the detail pane",
        "document.querySelector('#detail .countdown')?.textContent.startsWith('restart in')",
        5 * second,
    )
    .await;
    // Its crashes happened before the page was opened: still listed.
    until(
        c,
        "crashy's earlier exits among its recent events",
        "[...document.querySelectorAll('#detail .events .ek')].some(e => e.textContent === 'child exited')",
        5 * second,
    )
    .await;
    shot(c, "crash-loop.png").await;

    // A replica's following log tail.
    click(c, ".row[data-name=\"web-1\"] .name").await;
    until(
        c,
        "web-1's log",
        "(document.getElementById('log') || {}).textContent?.includes('web up')",
        20 * second,
    )
    .await;
    shot(c, "service-log.png").await;

    // The restart button restarts the service: new starts in its logs.
    click(c, ".row[data-name=\"web\"] .name").await;
    let starts_before = starts(agent, "web", "web-1").len();
    click(
        c,
        "#detail button[data-action=\"restart\"][data-service=\"web\"]",
    )
    .await;
    until(
        c,
        "the restart's toast",
        "document.querySelector('.toast')?.textContent.includes('Restarted web')",
        20 * second,
    )
    .await;
    cli_support::eventually("a new start of web-1 in its logs", || {
        starts(agent, "web", "web-1").len() > starts_before
    });
    assert_eq!(agent.service("web")["running"], 2);

    // Jobs: clicking a job shows its executions, clicking one its logs.
    let (status, body) = agent.http("POST", "/v1/jobs/hello/trigger", "");
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    click(c, "#tab-jobs").await;
    click(c, "tr[data-job=\"hello\"]").await;
    click(c, &format!("tr[data-execution=\"{id}\"]")).await;
    until(
        c,
        "the execution's logs",
        "(document.getElementById('exec-log') || {}).textContent?.includes('hello from the job')",
        20 * second,
    )
    .await;
    until(
        c,
        "the execution's state",
        "document.querySelector('#exec-detail .pill')?.textContent === 'completed'",
        20 * second,
    )
    .await;
    shot(c, "job-log.png").await;

    // The trigger button starts another execution (seen through the API).
    click(c, "button[data-trigger=\"hello\"]").await;
    cli_support::eventually("a second execution of hello", || {
        let (_, body) = agent.http("GET", "/v1/executions?job=hello", "");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            == Some(2)
    });

    // A narrow window (500 px, the least a headless Chromium window has)
    // stacks the panes and still shows the tree.
    c.set_window_size(500, 900)
        .await
        .map_err(|e| e.to_string())?;
    click(c, "#tab-tree").await;
    until(
        c,
        "the tree in a narrow window",
        &format!("{}.getBoundingClientRect().width > 300", row("web")),
        5 * second,
    )
    .await;
    shot(c, "narrow.png").await;
    c.set_window_size(1400, 900)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The Cluster tab: both members up, then the peer leaves and its row
/// goes, with a `node left` event, without a reload.
async fn cluster_steps(c: &Client, peer: Agent) -> Result<(), Failed> {
    let second = Duration::from_secs(1);
    until(
        c,
        "the cluster tab",
        "!document.getElementById('tab-cluster').hidden",
        20 * second,
    )
    .await;
    click(c, "#tab-cluster").await;
    let member =
        |name: &str| format!("document.querySelector('#members tr[data-member=\"{name}\"]')");
    until(
        c,
        "the peer up in the members table",
        &format!("{}?.textContent.includes('up')", member("peer")),
        20 * second,
    )
    .await;
    until(
        c,
        "this node in the members table",
        &format!("{}?.textContent.includes('this node')", member("main")),
        5 * second,
    )
    .await;
    let loaded = js(c, "window.arborPage.loadedAt").await;
    shot(c, "cluster.png").await;
    assert_eq!(peer.stop(), 0);
    until(
        c,
        "the peer's row gone and a node left event",
        &format!(
            "!{} && document.getElementById('cluster-events').textContent.includes('node left')",
            member("peer")
        ),
        20 * second,
    )
    .await;
    assert_eq!(
        js(c, "window.arborPage.loadedAt").await,
        loaded,
        "the page reloaded"
    );
    Ok(())
}
