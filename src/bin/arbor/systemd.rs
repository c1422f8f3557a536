//! The agent as a systemd `Type=notify` service (crate `sd-notify`):
//! `READY=1` with a `STATUS=` summary once the first deploy is applied,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` only while the root supervisor
//! answers a call in time (a wedged node stops the pings, and systemd
//! restarts it), and `STOPPING=1` when it stops. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op. Children never see these
//! variables: the process runtime removes them from what they inherit.

use std::{process::ExitCode, time::Duration};

use arbor::Node;
use clap::Args;
use sd_notify::NotifyState;

/// Tells the service manager the node is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the node is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog task, when systemd asked for one: pings at half the
/// interval, each after the root supervisor answered within a quarter of
/// it. Returns `None` without a watchdog.
pub fn watchdog(node: &Node) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(10));
    let patience = (interval / 4).max(Duration::from_millis(5));
    let root = node.root().clone();
    tracing::info!(interval = ?interval, "systemd watchdog: pinging while the root supervisor answers");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answering = true;
        loop {
            tick.tick().await;
            let answered = matches!(
                tokio::time::timeout(patience, root.count_children()).await,
                Ok(Ok(_))
            );
            if answered {
                send(&[NotifyState::Watchdog]);
            } else if answering {
                tracing::error!(
                    "the root supervisor did not answer within {patience:?}: no watchdog ping (systemd will restart the agent if this lasts)"
                );
            }
            answering = answered;
        }
    }))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "failed to notify the service manager");
    }
}

/// `arbor notify`: what to send.
#[derive(Args)]
pub struct Notify {
    /// READY=1: startup is finished (arbor marks the replica ready).
    #[arg(long)]
    ready: bool,
    /// STATUS=TEXT: a one-line status (shown in `arbor tree`).
    #[arg(long, value_name = "TEXT")]
    status: Option<String>,
    /// WATCHDOG=1: still alive (with a service's `watchdog` period).
    #[arg(long)]
    watchdog: bool,
    /// STOPPING=1: the process is stopping.
    #[arg(long)]
    stopping: bool,
    /// More raw assignments (`STATE=VALUE`), sent as given.
    #[arg(value_name = "STATE=VALUE", value_parser = assignment)]
    states: Vec<String>,
}

fn assignment(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !s.contains('\n') => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not STATE=VALUE on one line")),
    }
}

/// Sends `args` to `$NOTIFY_SOCKET`.
pub fn notify(args: Notify) -> ExitCode {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        eprintln!(
            "arbor: NOTIFY_SOCKET is not set: not run by a service manager that listens (set notify: true on the service)"
        );
        return ExitCode::FAILURE;
    }
    let mut states = Vec::new();
    if args.ready {
        states.push(NotifyState::Ready);
    }
    if let Some(s) = &args.status {
        states.push(NotifyState::Status(s));
    }
    if args.watchdog {
        states.push(NotifyState::Watchdog);
    }
    if args.stopping {
        states.push(NotifyState::Stopping);
    }
    states.extend(args.states.iter().map(|s| NotifyState::Custom(s)));
    if states.is_empty() {
        eprintln!(
            "arbor: nothing to send: give --ready, --status, --watchdog, --stopping or STATE=VALUE"
        );
        return ExitCode::from(2);
    }
    match sd_notify::notify(&states) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "arbor: failed to notify {:?}: {e}",
                std::env::var_os("NOTIFY_SOCKET").unwrap_or_default()
            );
            ExitCode::FAILURE
        }
    }
}
