//! Where the agent's API listens, and who may use it.
//!
//! By default only on a Unix socket, `<state-dir>/arbor.sock`, mode 0600:
//! the agent's own user (root, usually) and nobody else, as docker's and
//! containerd's sockets; `--socket-group NAME` opens it to a group (0660).
//! A stale socket of a dead agent is replaced; a live one makes this agent
//! refuse to start. TCP is opt-in (`--listen`), and every request on it but
//! health and metrics needs the bearer token: `--token-file`, or one the
//! agent generates in `<state-dir>/api.token` (256 random bits, 0600). A
//! non-loopback `--listen` needs TLS (`--tls-cert`/`--tls-key`) or
//! `--insecure-http`, which is warned about at every start.

use std::{
    fs,
    io::{Read, Write},
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// A token shorter than this is refused: guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why the agent cannot listen: a usage error (exit 2) or a failure (1).
pub enum ListenError {
    Usage(String),
    Failed(String),
}

/// Creates the state dir owner-only (0700) when it does not exist yet.
pub fn state_dir(dir: &Path) -> Result<(), ListenError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            ListenError::Failed(format!(
                "failed to create the state dir {}: {e}",
                dir.display()
            ))
        })
}

/// Refuses a non-loopback TCP address unless it is served over TLS or
/// `--insecure-http` says so (`clear`: no TLS).
pub fn check_listen(addr: SocketAddr, allowed: bool, clear: bool) -> Result<(), ListenError> {
    if addr.ip().is_loopback() || (allowed && !clear) {
        return Ok(());
    }
    if allowed {
        tracing::warn!(%addr, "--insecure-http: the API is served in clear text on a non-loopback address; its bearer token can be read on the network");
        eprintln!(
            "arbor: warning: --listen {addr} with --insecure-http: the API and its token travel in clear text"
        );
        return Ok(());
    }
    Err(ListenError::Usage(format!(
        "--listen {addr} is not a loopback address: serve it over TLS (--tls-cert FILE --tls-key FILE), or pass --insecure-http to let requests and the token travel in clear text"
    )))
}

/// The token of the TCP listener: `--token-file`, else
/// `<state-dir>/api.token`, generated when missing.
pub fn token(file: Option<&Path>, state_dir: &Path) -> Result<String, ListenError> {
    let usage = |m: String| ListenError::Usage(m);
    match file {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|e| {
                usage(format!(
                    "--token-file {}: failed to read it: {e}",
                    path.display()
                ))
            })?;
            let t = text.trim();
            if t.is_empty() {
                return Err(usage(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                )));
            }
            if t.len() < MIN_TOKEN_BYTES {
                return Err(usage(format!(
                    "--token-file {}: the token is {} bytes, too easy to guess: use at least {MIN_TOKEN_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)",
                    path.display(),
                    t.len()
                )));
            }
            Ok(t.to_owned())
        }
        None => generated(&state_dir.join("api.token")),
    }
}

/// The token in `path`, written there first (0600) when missing.
fn generated(path: &Path) -> Result<String, ListenError> {
    let failed = |what: &str, e: std::io::Error| {
        ListenError::Failed(format!("failed to {what} {}: {e}", path.display()))
    };
    if let Ok(t) = fs::read_to_string(path) {
        let t = t.trim();
        if t.len() >= MIN_TOKEN_BYTES {
            return Ok(t.to_owned());
        }
    }
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| failed("read random bytes for", e))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed("write the API token", e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| failed("write the API token", e))?;
    tracing::info!(file = %path.display(), "generated the API token for --listen");
    Ok(token)
}

/// Binds the agent's Unix socket at `path`: 0600, or 0660 with `group`.
pub fn socket(path: &Path, group: Option<&str>) -> Result<tokio::net::UnixListener, ListenError> {
    let failed = |m: String| ListenError::Failed(m);
    let gid = match group {
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            Ok(None) => {
                return Err(ListenError::Usage(format!(
                    "--socket-group {name}: no such group"
                )));
            }
            Err(e) => {
                return Err(ListenError::Usage(format!(
                    "--socket-group {name}: failed to look it up: {e}"
                )));
            }
        },
        None => None,
    };
    if path.as_os_str().len() > 100 {
        return Err(ListenError::Usage(format!(
            "the socket path {} is too long for a Unix socket (at most about 100 bytes): pass a shorter --socket PATH",
            path.display()
        )));
    }
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(failed(format!(
                "{} exists and is not a socket: remove it or pass another --socket PATH",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(failed(format!(
                "another agent is already serving {}: stop it first, or give this one another --state-dir or --socket",
                path.display()
            )));
        }
        // A dead agent's socket.
        fs::remove_file(path).map_err(|e| {
            failed(format!(
                "failed to remove the stale socket {}: {e}",
                path.display()
            ))
        })?;
    }
    // Created owner-only: no moment where another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener =
        bound.map_err(|e| failed(format!("failed to listen on {}: {e}", path.display())))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
            failed(format!(
                "failed to give {} to group {}: {e}",
                path.display(),
                group.unwrap_or_default()
            ))
        })?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o660))
            .map_err(|e| failed(format!("failed to set the mode of {}: {e}", path.display())))?;
    }
    Ok(listener)
}

/// The default socket of a state dir.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("arbor.sock")
}

/// The file in the state dir that holds the TCP listener's URL
/// (`http://127.0.0.1:7070`), for `arbor ui`.
pub const URL_FILE: &str = "api.url";

/// Writes the URL a local browser reaches `addr` at (a wildcard address is
/// reached on loopback) into `path`, atomically.
pub fn write_url(path: &Path, addr: SocketAddr, tls: bool) -> std::io::Result<()> {
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let scheme = if tls { "https" } else { "http" };
    let tmp = path.with_extension("url.tmp");
    fs::write(&tmp, format!("{scheme}://{host}:{}\n", addr.port()))?;
    fs::rename(&tmp, path)
}
