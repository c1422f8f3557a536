//! A command run beside a container's main process (an `exec` probe): the
//! container's environment, working directory and network namespace, in a
//! process group of its own that is killed whole at the timeout.
//!
//! The command is the node's child, reaped by tokio: it is in no
//! container's process group or cgroup, so the reaper leaves it alone.

use std::{os::fd::AsRawFd, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal as NixSignal, killpg},
    unistd::Pid,
};
use tokio::process::Command;

use super::spawn::open_netns;
use crate::runtime::{
    Cause, ContainerId, ContainerSpec, EXEC_OUTPUT_LIMIT, ExecOutput, Op, RuntimeError, read_capped,
};

/// Runs `argv` in the environment of the container `spec` describes.
pub(super) async fn exec(
    id: &ContainerId,
    spec: &ContainerSpec,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let fail = |cause| RuntimeError::new(Op::Exec, id, cause);
    let Some(program) = argv.first() else {
        return Err(fail(Cause::Unsupported("an empty command".into())));
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    super::spawn::environment(&mut cmd, spec);
    let netns = match &spec.netns {
        Some(path) => Some(open_netns(path).map_err(fail)?),
        None => None,
    };
    if let Some(ns) = &netns {
        let fd = ns.as_raw_fd();
        // SAFETY: runs in the forked child before exec; setns(2) is a plain
        // system call and `fd` stays open (the parent holds it).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(Cause::CommandNotFound(program.clone()))
        } else {
            fail(Cause::io(format!("failed to run {program:?}"), e))
        }
    })?;
    drop(netns);
    let pgid = child.id().map(|p| p as i32);
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let (status, out, err) = tokio::join!(
            child.wait(),
            read_capped(stdout.as_mut()),
            read_capped(stderr.as_mut())
        );
        (status, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((status, mut out, err)) => {
            let status = status.map_err(|e| fail(Cause::io("failed to wait for it", e)))?;
            out.extend_from_slice(&err);
            out.truncate(EXEC_OUTPUT_LIMIT);
            Ok(ExecOutput {
                status: status.into(),
                output: String::from_utf8_lossy(&out).trim_end().to_owned(),
            })
        }
        Err(_) => {
            // The whole group: a shell's children too. The leader is
            // reaped by tokio (kill_on_drop) when `child` goes.
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), NixSignal::SIGKILL);
            }
            Err(fail(Cause::TimedOut(timeout)))
        }
    }
}
