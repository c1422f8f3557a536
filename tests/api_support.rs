//! Shared by the `api_*` tests: a node with real processes and a temp state
//! dir, its API served on 127.0.0.1:0, and a small HTTP/1.1 client on a
//! plain socket (so tests can also send what no well-behaved client sends).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arbor::{ApiConfig, Node, NodeConfig, ProcessRuntime, api};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

/// A node serving its API.
pub struct Fixture {
    pub node: Node,
    pub runtime: ProcessRuntime,
    pub api: Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Fixture {
    /// A node with a state dir, serving the API with `config` (its state
    /// dir set to the node's).
    pub async fn start(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::builder().build().unwrap();
        let node = Node::start(NodeConfig::new(Arc::new(runtime.clone())).state_dir(dir.path()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = config.state_dir(dir.path());
        let server = tokio::spawn(api::serve(node.clone(), listener, config, async move {
            let _ = stopped.await;
        }));
        Self {
            node,
            runtime,
            api: Client { addr, token: None },
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Asks the server to stop and waits for it (at most `within`).
    pub async fn stop_server(&mut self, within: Duration) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = self.server.take().expect("the server runs");
        tokio::time::timeout(within, server)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic")
    }

    /// Stops the server, the node and every process.
    pub async fn shutdown(mut self) {
        if self.server.is_some() {
            self.stop_server(Duration::from_secs(10)).await.unwrap();
        }
        self.node.shutdown(Duration::from_secs(2)).await;
        self.runtime.shutdown(Duration::from_secs(2)).await;
    }
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an error response: status, code, and a message containing
    /// every one of `names`.
    pub fn assert_error(&self, status: u16, code: &str, names: &[&str]) {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        for n in names {
            assert!(message.contains(n), "message {message:?} should name {n:?}");
        }
        assert!(
            self.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{:?}",
            self.headers
        );
    }
}

/// An HTTP/1.1 client, one connection per request.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer` on every request when set.
    pub token: Option<String>,
}

impl Client {
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            addr: self.addr,
            token: Some(token.into()),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None).await
    }

    /// POST with a JSON body (or none).
    pub async fn post(&self, path: &str, body: Option<&str>) -> Reply {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        self.request("POST", path, headers, body.map(str::as_bytes))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, Some(&body.to_string())).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            s.write_all(&self.head(method, path, headers, body.map(<[u8]>::len)))
                .await
                .unwrap();
            if let Some(b) = body {
                // The server may answer (413) before reading it all.
                let _ = s.write_all(b).await;
            }
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw).await;
            parse(&raw)
        })
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
    }

    fn head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        len: Option<usize>,
    ) -> Vec<u8> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = len {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        } else if method == "POST" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Opens an event stream.
    pub async fn events(&self, path: &str) -> EventReader {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(&self.head("GET", path, &[("Accept", "text/event-stream")], None))
            .await
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("event stream headers in time")
                .unwrap();
            assert!(n > 0, "the connection closed before the headers");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        EventReader {
            stream: s,
            status,
            head,
            raw: raw[end + 4..].to_vec(),
            text: String::new(),
        }
    }
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub event: Option<String>,
    pub data: String,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// A chunked `text/event-stream` response, read as it comes.
pub struct EventReader {
    stream: TcpStream,
    pub status: u16,
    pub head: String,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet split into messages.
    pub text: String,
}

impl EventReader {
    /// The next message (comments skipped); `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            while let Some(i) = self.text.find("\n\n") {
                let block: String = self.text.drain(..i + 2).collect();
                let mut msg = SseMessage {
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        msg.event = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !msg.data.is_empty() {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(msg);
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Waits (at most `within`) for a message matching `pred`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&SseMessage) -> bool,
    ) -> SseMessage {
        tokio::time::timeout(within, async {
            loop {
                match self.next().await {
                    Some(m) if pred(&m) => return m,
                    Some(_) => {}
                    None => panic!("the event stream ended"),
                }
            }
        })
        .await
        .expect("the awaited event in time")
    }

    /// True when the stream ends (the server closes it) within `within`.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async { while self.next().await.is_some() {} })
            .await
            .is_ok()
    }

    /// Reads more and de-chunks what is complete; false at the end.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let n = self.stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        self.raw.extend_from_slice(&buf[..n]);
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return true;
            };
            let size_line = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
            if size == 0 {
                return false;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return true;
            }
            let data = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.raw.drain(..eol + 2 + size + 2);
            self.text.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse(raw: &[u8]) -> Reply {
    let end = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = find(rest, b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// Polls `GET /v1/executions/{id}` until `pred` holds (at most 20 s).
pub async fn until_execution(
    api: &Client,
    id: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = api.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {id} never matched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the execution to end (through `/wait`) and returns its record.
pub async fn finished(api: &Client, id: &str) -> Value {
    let r = api
        .get(&format!("/v1/executions/{id}/wait?timeout=20s"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let status = v["state"]["status"].as_str().unwrap_or("").to_owned();
    assert!(
        ["completed", "failed", "cancelled"].contains(&status.as_str()),
        "still active after the wait: {v}"
    );
    v
}

/// `<dir>/executions/<id>/<file>`.
pub fn log_path(dir: &Path, id: &str, file: &str) -> PathBuf {
    dir.join("executions").join(id).join(file)
}
