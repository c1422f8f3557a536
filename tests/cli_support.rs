//! Shared by the `cli_*` tests: the real `arbor` binary run with a clean
//! environment and a time limit, an agent started on a free port, and
//! waiting for conditions.
#![allow(dead_code)]

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// How long any one command may run before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The binary with none of the variables it reads from the environment.
pub fn arbor() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
    for var in ["ARBOR_AGENT", "ARBOR_TOKEN", "ARBOR_STATE_DIR", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command left.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    /// stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the exit code, showing everything when it differs.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// Runs `cmd` to its end (at most [`LIMIT`]).
pub fn output(mut cmd: Command) -> Out {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the arbor binary starts");
    let read = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: start.elapsed(),
    }
}

/// `arbor ARGS...` to its end.
pub fn arbor_out<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = arbor();
    cmd.args(args);
    output(cmd)
}

/// An address nothing listens on (a port bound, then released).
pub fn unused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Polls `cond` every 20 ms for at most 20 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `dir/name`; its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `arbor agent`, killed if the test ends without stopping it.
pub struct Agent {
    pub child: Child,
    /// Its TCP API, `http://127.0.0.1:PORT` (every request but health and
    /// metrics needs [`Agent::token`]).
    pub url: String,
    /// Its Unix socket, `unix:PATH` (no token: the CLI's way in).
    pub socket: String,
    /// The bearer token it generated for TCP.
    pub token: String,
}

/// Where an agent's log goes: a file under `$ARBOR_TEST_AGENT_LOGS`, else
/// nowhere.
fn debug_log() -> Stdio {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some(dir) = std::env::var_os("ARBOR_TEST_AGENT_LOGS") else {
        return Stdio::null();
    };
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{}-{n}.log", std::process::id());
    std::fs::File::create(Path::new(&dir).join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl Agent {
    /// `arbor agent --spec SPEC --listen 127.0.0.1:0 --state-dir STATE`,
    /// once it printed `listening on ADDR`; `extra` are more flags.
    /// Its log (stderr) goes to `$ARBOR_TEST_AGENT_LOGS/<pid>.log` when
    /// that variable names a directory (for debugging a failed run).
    pub fn start(spec: &Path, state: &Path, extra: &[&str]) -> Self {
        Self::spawn(spec, state, extra, debug_log(), &[])
    }

    /// Like [`Agent::start`] with more environment variables.
    pub fn start_with_env(spec: &Path, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(spec, state, extra, debug_log(), env)
    }

    /// Like [`Agent::start`], its stderr lines (the log) arriving on the
    /// returned channel.
    pub fn start_logged(
        spec: &Path,
        state: &Path,
        extra: &[&str],
    ) -> (Self, mpsc::Receiver<String>) {
        let mut agent = Self::spawn(spec, state, extra, Stdio::piped(), &[]);
        let stderr = agent.child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        (agent, lines)
    }

    fn spawn(
        spec: &Path,
        state: &Path,
        extra: &[&str],
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = arbor()
            .envs(env.iter().copied())
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--shutdown-timeout",
                "5s",
            ])
            .arg("--spec")
            .arg(spec)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut listening = || {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_owned()
        };
        let addr = listening();
        let socket = listening();
        // Generated unless --token-file gave one.
        let token = std::fs::read_to_string(state.join("api.token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            child,
            url: format!("http://{addr}"),
            socket,
            token,
        }
    }

    /// `arbor --agent unix:SOCKET ARGS...` to its end.
    pub fn arbor<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = arbor();
        cmd.arg("--agent").arg(&self.socket).args(args);
        output(cmd)
    }

    /// `arbor --agent http://ADDR ARGS...` (its TCP API) to its end.
    pub fn arbor_tcp<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = arbor();
        cmd.arg("--agent").arg(&self.url).args(args);
        output(cmd)
    }

    /// `METHOD path` with `body` on its TCP API, with its token: the status
    /// and the body (the connection is closed after one answer).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::Write;
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_owned())
    }

    /// The services, as `arbor services --json` prints them.
    pub fn services(&self) -> Vec<serde_json::Value> {
        let out = self.arbor(["services", "--json"]).expect(0);
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// One service, as `arbor services --json` prints it (panics naming it
    /// when there is none).
    pub fn service(&self, name: &str) -> serde_json::Value {
        self.services()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// SIGTERM, then its exit code (within [`LIMIT`]).
    pub fn stop(mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < LIMIT, "the agent did not stop");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    /// SIGTERM first: a killed agent leaves its services running (live
    /// restore), which a test must not.
    fn drop(&mut self) {
        end_gracefully(&mut self.child);
    }
}

/// SIGTERM; if it is still stopping after a second (a replica in a long
/// stop grace), a second SIGTERM, which kills everything at once; SIGKILL
/// as a last resort.
pub fn end_gracefully(child: &mut Child) {
    let term = |child: &Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    };
    let ended = |child: &mut Child, within: Duration| {
        let start = Instant::now();
        while start.elapsed() < within {
            if !matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    };
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    term(child);
    if ended(child, Duration::from_secs(1)) {
        return;
    }
    term(child);
    if ended(child, Duration::from_secs(20)) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A command left running, its stdout read line by line.
pub struct Lines {
    pub child: Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, rx }
    }

    /// Lines until one matches `pred` (that one included), within 20 s.
    pub fn until(&self, what: &str, pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        if !self.within(Duration::from_secs(20), &mut seen, pred) {
            panic!("timed out waiting for {what}; saw {seen:#?}");
        }
        seen
    }

    /// Reads lines into `seen` until one matches `pred` (true) or `wait`
    /// passed (false).
    pub fn within(
        &self,
        wait: Duration,
        seen: &mut Vec<String>,
        mut pred: impl FnMut(&str) -> bool,
    ) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Its exit code, once it ended by itself (within [`LIMIT`]).
    pub fn wait(mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < LIMIT, "{:?} did not end", self.child);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An agent process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        end_gracefully(&mut self.0);
    }
}

/// `arbor agent --spec <dir>/node.yaml --state-dir <dir>/state EXTRA...`
/// with `spec` as the spec; returns once it printed its first line, with
/// that line (`listening on ...`).
pub fn start_agent<I, S>(dir: &Path, spec: &str, extra: I) -> (Running, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let spec_path = dir.join("node.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let mut child = arbor()
        .arg("agent")
        .arg("--spec")
        .arg(&spec_path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Running(child), line.trim().to_owned())
}

// ------------------------------------------------- replicas of a real agent

/// `<state>/services/<service>/<replica>`: a replica's log directory.
pub fn replica_dir(state: &Path, service: &str, replica: &str) -> PathBuf {
    state.join("services").join(service).join(replica)
}

/// The pid of the last `started`/`re-adopted` marker of `replica`.
pub fn marked_pid(state: &Path, service: &str, replica: &str) -> Option<(String, i32)> {
    let full =
        std::fs::read_to_string(replica_dir(state, service, replica).join("full.log")).ok()?;
    full.lines().rev().find_map(|l| {
        let (_, rest) = l.split_once(" [ARBOR] ")?;
        let (how, rest) = rest.split_once(&format!(" {replica} (pid "))?;
        let pid = rest.trim_end_matches(')').parse().ok()?;
        Some((how.to_owned(), pid))
    })
}

/// How many start markers (`started`/`re-adopted`) `replica`'s log has.
pub fn markers(state: &Path, service: &str, replica: &str) -> usize {
    std::fs::read_to_string(replica_dir(state, service, replica).join("full.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" [ARBOR] ") && l.contains(&format!(" {replica} (pid ")))
        .count()
}

/// [`marked_pid`] of the first marker after the first `before` ones.
pub fn marked_after(
    state: &Path,
    service: &str,
    replica: &str,
    before: usize,
) -> Option<(String, i32)> {
    eventually("a new start marker", || {
        markers(state, service, replica) > before
    });
    marked_pid(state, service, replica)
}

/// [`marked_pid`], once the replica's log has a marker (it is written
/// as the replica starts, and can come after the agent listens).
pub fn wait_marked(state: &Path, service: &str, replica: &str) -> (String, i32) {
    eventually("the replica's start marker", || {
        marked_pid(state, service, replica).is_some()
    });
    marked_pid(state, service, replica).unwrap()
}

pub fn alive(pid: i32) -> bool {
    // Not a zombie: a reaped or zombie process no longer runs.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z'))
}

// ------------------------------------------------------------ OCI containers

/// The containers in the agent's runc root (`<state>/oci/runc`), sorted.
pub fn runc_list(state: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(state.join("oci/runc"))
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// Builds a busybox image (from /bin/busybox, no download) as an image
/// tarball under `dir` and imports it as `name` into `state` with `arbor
/// image import`, as a user would.
pub fn import_busybox_as_a_user_would(dir: &Path, state: &Path, name: &str) {
    let build = dir.join("build");
    arbor::image::build::busybox_rootfs(Path::new("/bin/busybox"), &build.join("rootfs")).unwrap();
    let config = arbor::image::ImageConfig {
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let layout =
        arbor::image::pack_layout(&build.join("rootfs"), name, &config, &build.join("layout"))
            .unwrap();
    let tarball = dir.join("busybox.tar");
    arbor::image::write_tarball(&layout, &tarball).unwrap();
    arbor_out([
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ])
    .expect(0);
}
