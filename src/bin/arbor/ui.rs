//! `arbor ui`: the address of the agent's web view, with the token in the
//! URL's fragment (which a browser keeps to itself: it is never sent to
//! the server or written in its logs), for the local user.
//!
//! A browser cannot open the agent's Unix socket, so the page is reached on
//! the agent's TCP listener (`--listen`): with the default `--agent` (the
//! socket), the URL comes from `api.url`, which the agent writes beside its
//! socket while it listens on TCP, and the token from `api.token` there
//! (or `--token-file`, `$ARBOR_TOKEN`).

use std::{path::Path, process::ExitCode};

use clap::Args;

use super::{
    client::{self, AgentUrl},
    common::{Conn, Fail, Outcome},
};

#[derive(Args)]
pub struct Ui {
    /// Also open it in the default browser (xdg-open).
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn ui(url: &AgentUrl, a: Ui) -> Outcome {
    let (base, token) = match url.socket() {
        Some(socket) => {
            let dir = socket.parent().unwrap_or(Path::new("."));
            // The agent must answer: a stale api.url outlives a killed agent.
            a.conn.client(url)?.get_value("/v1/health").await?;
            let file = dir.join("api.url");
            let base = std::fs::read_to_string(&file)
                .map(|t| t.trim().trim_end_matches('/').to_owned())
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Fail::failed(format!(
                        "the agent at {url} has no TCP listener, and a browser cannot open its Unix socket: \
                         start it with --listen 127.0.0.1:7070 (then run `arbor ui` again)"
                    ))
                })?;
            let token = match client::token(a.conn.token_file.as_ref(), url).map_err(Fail::usage)? {
                Some(t) => Some(t),
                None => std::fs::read_to_string(dir.join("api.token"))
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty()),
            };
            (base, token)
        }
        None => {
            let base = url.http_base().unwrap_or_default();
            let token = client::token(a.conn.token_file.as_ref(), url).map_err(Fail::usage)?;
            (base, token)
        }
    };
    let page = match &token {
        Some(t) => format!("{base}/ui#token={}", client::encode(t)),
        None => format!("{base}/ui"),
    };
    println!("{page}");
    if token.is_none() {
        eprintln!(
            "arbor: no token found (--token-file, $ARBOR_TOKEN or api.token in the state dir): the page will ask for it"
        );
    }
    if a.open {
        match std::process::Command::new("xdg-open")
            .arg(&page)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(Fail::failed(format!(
                    "xdg-open failed ({s}): open the URL above"
                )));
            }
            Err(e) => {
                return Err(Fail::failed(format!(
                    "failed to run xdg-open ({e}): open the URL above"
                )));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
