//! The HTTP client of the agent's API: one HTTP/1.1 connection per
//! request (hyper's client connection over the agent's Unix socket, or a
//! TCP socket; no pool, no TLS), JSON in and out, the API's error bodies
//! turned into messages, and a body stream for the event stream.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode, Uri,
    body::{Bytes, Incoming},
    header,
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ordinary request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent is: `unix:PATH` (its socket) or `http://HOST:PORT[/PREFIX]`.
#[derive(Debug, Clone)]
pub struct AgentUrl {
    /// As given (without a trailing `/`), for messages.
    shown: String,
    /// The socket, for `unix:PATH`.
    socket: Option<PathBuf>,
    /// `https://`.
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    prefix: String,
}

impl fmt::Display for AgentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl FromStr for AgentUrl {
    type Err = String;

    /// `unix:PATH`, `http://HOST[:PORT][/PREFIX]`, or `HOST:PORT` (taken
    /// as http).
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("no socket path; expected unix:PATH".into());
            }
            return Ok(Self {
                shown: format!("unix:{path}"),
                socket: Some(PathBuf::from(path)),
                tls: false,
                host: "localhost".into(),
                port: 0,
                authority: "localhost".into(),
                prefix: String::new(),
            });
        }
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "scheme {other}:// is not supported; expected unix:PATH, http://HOST:PORT or https://HOST:PORT"
                ));
            }
            None => return Err("expected http://HOST:PORT".into()),
        };
        let Some(authority) = uri.authority() else {
            return Err("no host; expected http://HOST:PORT".into());
        };
        if authority.as_str().contains('@') {
            return Err("user info is not supported; expected http://HOST:PORT".into());
        }
        if uri.query().is_some() {
            return Err("a query is not supported; expected http://HOST:PORT".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err("no host; expected http://HOST:PORT".into());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            shown: with_scheme.trim_end_matches('/').to_owned(),
            socket: None,
            tls,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            host,
            prefix,
        })
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No connection: nothing listens there, or it did not answer in time.
    Unreachable {
        /// The agent.
        url: String,
        /// `connection refused`, `timed out`, ...
        reason: String,
    },
    /// The agent answered with an error.
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The exchange failed half-way, or the answer was not what the API sends.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { url, reason } => write!(
                f,
                "cannot reach the agent at {url}: {reason} (start it with arbor agent --spec FILE)"
            ),
            Self::Api {
                status: 401,
                message,
                ..
            } => write!(
                f,
                "{message} (give the agent's token with --token-file FILE or ARBOR_TOKEN)"
            ),
            Self::Api { message, .. } => f.write_str(message),
            Self::Protocol(m) => f.write_str(m),
        }
    }
}

/// The short reason of a failed connection.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut => "timed out".into(),
        K::ConnectionReset => "connection reset".into(),
        K::AddrNotAvailable => "address not available".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

impl AgentUrl {
    /// `https://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The socket's path, for `unix:PATH`.
    pub fn socket(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// `http(s)://AUTHORITY/PREFIX` (no trailing `/`), for an HTTP agent.
    pub fn http_base(&self) -> Option<String> {
        if self.socket.is_some() {
            return None;
        }
        let scheme = if self.tls { "https" } else { "http" };
        Some(format!("{scheme}://{}{}", self.authority, self.prefix))
    }
}

/// A client of one agent.
#[derive(Clone)]
pub struct Client {
    url: AgentUrl,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the agent at `url`, sending `token` when given.
    pub fn new(url: AgentUrl, token: Option<String>) -> Self {
        Self {
            url,
            token,
            tls: None,
        }
    }

    /// Speaks TLS, trusting the certificates in `ca` (default: the
    /// system's bundle).
    pub fn tls(mut self, ca: Option<&std::path::Path>) -> Result<Self, String> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        use tokio_rustls::rustls;
        let file = ca.map_or_else(
            || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            PathBuf::from,
        );
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("--ca-cert {}: failed to read it: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--ca-cert {}: not PEM: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--ca-cert {}: {e}", file.display()))?;
        }
        #[allow(deprecated)] // ring: see arbor::api::tls
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("failed to set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        )));
        Ok(self)
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            url: self.url.shown.clone(),
            reason,
        }
    }

    async fn handshake<T>(
        &self,
        stream: T,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request; `timeout` bounds the wait for the response head.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut sender = match &self.url.socket {
            Some(path) => {
                let connect = tokio::net::UnixStream::connect(path);
                let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Err(_) => return Err(self.unreachable("timed out connecting".into())),
                    Ok(Err(e)) => return Err(self.unreachable(io_reason(&e))),
                    Ok(Ok(s)) => s,
                };
                self.handshake(stream).await?
            }
            None => {
                let connect =
                    tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port));
                let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Err(_) => return Err(self.unreachable("timed out connecting".into())),
                    Ok(Err(e)) => return Err(self.unreachable(io_reason(&e))),
                    Ok(Ok(s)) => s,
                };
                let _ = stream.set_nodelay(true);
                match &self.tls {
                    Some(connector) => {
                        let name = rustls_pki_types::ServerName::try_from(self.url.host.clone())
                            .map_err(|e| self.unreachable(format!("invalid host name: {e}")))?;
                        let tls =
                            tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
                                .await
                                .map_err(|_| {
                                    self.unreachable("timed out in the TLS handshake".into())
                                })?
                                .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
                        self.handshake(tls).await?
                    }
                    None => self.handshake(stream).await?,
                }
            }
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header(header::HOST, &self.url.authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("arbor/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(format!("invalid request {path}: {e}")))?;
        match tokio::time::timeout(timeout, sender.send_request(req)).await {
            Err(_) => Err(ClientError::Protocol(format!(
                "the agent at {} did not answer {path} within {}s",
                self.url,
                timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(ClientError::Protocol(format!(
                "the request {path} to the agent at {} failed: {e}",
                self.url
            ))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// The whole body of a successful answer; an error answer as
    /// [`ClientError::Api`].
    async fn body(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let resp = self.send(method, path, body, timeout).await?;
        let status = resp.status();
        let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .map_err(|_| {
                ClientError::Protocol(format!("the answer to {path} did not end in time"))
            })?
            .map_err(|e| {
                ClientError::Protocol(format!("failed to read the answer to {path}: {e}"))
            })?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(api_error(status, &bytes))
        }
    }

    /// `GET path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_within(path, REQUEST_TIMEOUT).await
    }

    /// `GET path` as JSON, waiting up to `timeout`.
    pub async fn get_within<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.body(Method::GET, path, None, timeout).await?;
        parse(path, &bytes)
    }

    /// `GET path` as text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let bytes = self.body(Method::GET, path, None, REQUEST_TIMEOUT).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET path` as a raw JSON value (what `--json` prints).
    pub async fn get_value(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.get(path).await
    }

    /// `POST path` with a JSON body (or none), answered with JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(format!("failed to encode the request: {e}")))?;
        let bytes = self.body(Method::POST, path, body, REQUEST_TIMEOUT).await?;
        parse(path, &bytes)
    }

    /// `method path` with a raw body, answered with JSON, waiting up to
    /// `timeout` (a stop runs its replicas' graces).
    pub async fn send_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.body(method, path, body, timeout).await?;
        parse(path, &bytes)
    }

    /// `GET path` as a stream of body chunks (the event stream).
    pub async fn stream(&self, path: &str) -> Result<Incoming, ClientError> {
        let resp = self.send(Method::GET, path, None, REQUEST_TIMEOUT).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(api_error(status, &bytes))
    }
}

fn parse<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ClientError::Protocol(format!(
            "unexpected answer to {path} (is this an arbor agent?): {e}"
        ))
    })
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            message: b.error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            ClientError::Api {
                status: status.as_u16(),
                message: format!("the agent answered {status}: {text}"),
            }
        }
    }
}

/// The token to send: from `--token-file`, else `$ARBOR_TOKEN`.
/// The token: `--token-file`, else `$ARBOR_TOKEN`, else (for an agent
/// reached over TCP) the token the agent generated in its state dir, when
/// this user may read it.
pub fn token(file: Option<&PathBuf>, url: &AgentUrl) -> Result<Option<String>, String> {
    let given = given_token(file)?;
    if given.is_some() || url.socket.is_some() {
        return Ok(given);
    }
    Ok(default_state_dir()
        .and_then(|d| std::fs::read_to_string(d.join("api.token")).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// The agent's state dir as the client commands find it: `$ARBOR_STATE_DIR`,
/// else `$HOME/.local/state/arbor`.
pub fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("ARBOR_STATE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(super::agent::default_state_dir)
}

/// Where the client commands look for the agent without `--agent` or
/// `$ARBOR_AGENT`: the socket in the default state dir.
pub fn default_agent() -> String {
    match default_state_dir() {
        Some(d) => format!("unix:{}", d.join("arbor.sock").display()),
        None => "unix:arbor.sock".into(),
    }
}

fn given_token(file: Option<&PathBuf>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            Ok(_) => Err(format!(
                "--token-file {}: the file is empty",
                path.display()
            )),
            Err(e) => Err(format!(
                "--token-file {}: failed to read it: {e}",
                path.display()
            )),
        };
    }
    Ok(std::env::var("ARBOR_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
