//! Health probes of a service's replicas, with Kubernetes' names and
//! defaults: `liveness` (failing: the replica is a failed child of its
//! supervisor), `readiness` (whether the replica is `ready`; gates the
//! services that depend on it) and `startup` (holds the other two back until
//! it passes once; failing: the replica failed).
//!
//! ```yaml
//! liveness:  { exec: [sh, -c, "test -f /run/web.ok"], period: 10s, timeout: 1s, failure_threshold: 3 }
//! readiness: { http: { port: 8080, path: /healthz }, period: 5s }
//! startup:   { tcp: { port: 8080 }, period: 1s, failure_threshold: 30 }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SpecError;

/// One probe: what it checks (exactly one of `exec`, `http`, `tcp`) and how
/// often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// A command run beside the replica's main process, in its environment
    /// (for a host process: its env, working directory and network
    /// namespace; for an OCI container: `runc exec`). Exit code 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// An HTTP GET; a status of 200 to 399 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connect; an accepted connection passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Wait before the first check (default 0s).
    #[serde(default, with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Time between checks (default 10s).
    #[serde(default = "period", with = "humantime_serde")]
    pub period: Duration,
    /// A check that takes longer fails (default 1s).
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Passes in a row that make a failing probe pass (default 1; must be 1
    /// for liveness and startup).
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Failures in a row that make a passing probe fail (default 3).
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

/// An HTTP GET probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The port.
    pub port: u16,
    /// The path (default `/`).
    #[serde(default = "root_path")]
    pub path: String,
    /// The host (default: the replica's overlay address, else 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A TCP connect probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// The port.
    pub port: u16,
    /// The host (default: the replica's overlay address, else 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeCheck<'a> {
    /// Run a command.
    Exec(&'a [String]),
    /// GET a URL.
    Http(&'a HttpProbe),
    /// Connect to a port.
    Tcp(&'a TcpProbe),
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Alive: a failure restarts the replica.
    Liveness,
    /// Ready: gates dependents.
    Readiness,
    /// Started: holds the other probes back.
    Startup,
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        })
    }
}

fn period() -> Duration {
    Duration::from_secs(10)
}

fn timeout() -> Duration {
    Duration::from_secs(1)
}

fn one() -> u32 {
    1
}

fn three() -> u32 {
    3
}

fn root_path() -> String {
    "/".to_owned()
}

/// The most failures (or successes) in a row a probe may ask for.
const MAX_THRESHOLD: u32 = 10_000;

impl ProbeSpec {
    /// A probe running `argv`, every other field at its default.
    pub fn exec<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            exec: Some(argv.into_iter().map(Into::into).collect()),
            ..Self::empty()
        }
    }

    /// A probe GETting `path` on `port`.
    pub fn http(port: u16, path: impl Into<String>) -> Self {
        Self {
            http: Some(HttpProbe {
                port,
                path: path.into(),
                host: None,
            }),
            ..Self::empty()
        }
    }

    /// A probe connecting to `port`.
    pub fn tcp(port: u16) -> Self {
        Self {
            tcp: Some(TcpProbe { port, host: None }),
            ..Self::empty()
        }
    }

    fn empty() -> Self {
        Self {
            exec: None,
            http: None,
            tcp: None,
            initial_delay: Duration::ZERO,
            period: period(),
            timeout: timeout(),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    /// Sets the period.
    pub fn period(mut self, d: Duration) -> Self {
        self.period = d;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets the failures in a row that fail the probe.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Sets the delay before the first check.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// What it checks (validation makes sure there is exactly one).
    pub fn check(&self) -> Option<ProbeCheck<'_>> {
        match (&self.exec, &self.http, &self.tcp) {
            (Some(argv), None, None) => Some(ProbeCheck::Exec(argv)),
            (None, Some(http), None) => Some(ProbeCheck::Http(http)),
            (None, None, Some(tcp)) => Some(ProbeCheck::Tcp(tcp)),
            _ => None,
        }
    }

    /// Every problem of this probe, fields relative to it (`exec`,
    /// `period`, ...); `kind` decides whether `success_threshold` may
    /// exceed 1.
    pub fn validate(&self, kind: ProbeKind) -> Vec<SpecError> {
        let mut errors = Vec::new();
        let given: Vec<&str> = [
            self.exec.as_ref().map(|_| "exec"),
            self.http.as_ref().map(|_| "http"),
            self.tcp.as_ref().map(|_| "tcp"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.len() {
            0 => errors.push(SpecError::new(
                "",
                "{}",
                "a probe needs one of exec, http or tcp",
            )),
            1 => {}
            _ => errors.push(SpecError::new(
                "",
                given.join(", "),
                "a probe takes exactly one of exec, http or tcp",
            )),
        }
        if let Some(argv) = &self.exec {
            if argv.is_empty() {
                errors.push(SpecError::new("exec", "[]", "must name a program"));
            }
            super::check::argv(&mut errors, "exec", argv);
        }
        if let Some(http) = &self.http {
            port(&mut errors, "http.port", http.port);
            if !http.path.starts_with('/') || http.path.chars().any(|c| c.is_ascii_control()) {
                errors.push(SpecError::new(
                    "http.path",
                    format!("{:?}", http.path),
                    "must start with '/' and hold no control characters",
                ));
            }
            host(&mut errors, "http.host", http.host.as_deref());
        }
        if let Some(tcp) = &self.tcp {
            port(&mut errors, "tcp.port", tcp.port);
            host(&mut errors, "tcp.host", tcp.host.as_deref());
        }
        for (field, d) in [
            ("initial_delay", self.initial_delay),
            ("period", self.period),
            ("timeout", self.timeout),
        ] {
            super::check::duration(&mut errors, field, d);
        }
        for (field, d) in [("period", self.period), ("timeout", self.timeout)] {
            if d.is_zero() {
                errors.push(SpecError::new(field, "0s", "must be more than 0s"));
            }
        }
        for (field, n) in [
            ("success_threshold", self.success_threshold),
            ("failure_threshold", self.failure_threshold),
        ] {
            if n == 0 || n > MAX_THRESHOLD {
                errors.push(SpecError::new(
                    field,
                    n,
                    format!("must be 1 to {MAX_THRESHOLD}"),
                ));
            }
        }
        if kind != ProbeKind::Readiness && self.success_threshold > 1 {
            errors.push(SpecError::new(
                "success_threshold",
                self.success_threshold,
                format!("must be 1 for a {kind} probe (as in Kubernetes)"),
            ));
        }
        errors
    }
}

fn port(errors: &mut Vec<SpecError>, field: &str, port: u16) {
    if port == 0 {
        errors.push(SpecError::new(field, 0, "must be 1 to 65535"));
    }
}

fn host(errors: &mut Vec<SpecError>, field: &str, host: Option<&str>) {
    if let Some(h) = host
        && (h.is_empty()
            || h.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/'))
    {
        errors.push(SpecError::new(
            field,
            format!("{h:?}"),
            "must be a host name or an IP address",
        ));
    }
}
