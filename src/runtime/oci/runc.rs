//! The runc binary, behind one small wrapper: every invocation goes through
//! here, so every failure says which runc command failed and what runc said.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

use super::OciError;

/// How to call runc: its binary and a state root private to this node (so
/// `runc --root ROOT list` shows only this node's containers).
#[derive(Debug, Clone)]
pub(crate) struct Runc {
    pub(crate) binary: PathBuf,
    pub(crate) root: PathBuf,
}

impl Runc {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.stdin(Stdio::null()).kill_on_drop(false);
        cmd
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("runc {}", args.join(" "))
    }

    /// Runs `runc ARGS` to its end; its stdout, or an error with its stderr.
    pub(crate) async fn run(&self, args: &[&str]) -> Result<Vec<u8>, OciError> {
        let out = self
            .command(args)
            .output()
            .await
            .map_err(|source| OciError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(OciError::Runc {
                command: self.describe(args),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// The command line of `runc create` (binary first): the init is left
    /// waiting for `start`, its pid written to `pid_file`; runc's own
    /// messages go to `log` (the init's stdout and stderr belong to the
    /// container).
    pub(crate) fn create_argv(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
    ) -> Vec<std::ffi::OsString> {
        // `--root` must come before `--log`.
        let (root, log, bundle, pid_file) = (
            self.root.as_os_str(),
            log.as_os_str(),
            bundle.as_os_str(),
            pid_file.as_os_str(),
        );
        [
            self.binary.as_os_str(),
            "--root".as_ref(),
            root,
            "--log".as_ref(),
            log,
            "--log-format".as_ref(),
            "json".as_ref(),
            "create".as_ref(),
            "--bundle".as_ref(),
            bundle,
            "--pid-file".as_ref(),
            pid_file,
            id.as_ref(),
        ]
        .into_iter()
        .map(ToOwned::to_owned)
        .collect()
    }

    /// The error of a failed `runc create` (`status`), from its log.
    pub(crate) fn create_failed(id: &str, bundle: &Path, log: &Path, status: String) -> OciError {
        OciError::Runc {
            command: format!("runc create --bundle {} {id}", bundle.display()),
            status,
            stderr: log_errors(log),
        }
    }

    /// `runc create`: the container's init gets `stdout` and `stderr` (the
    /// write ends of our pipes) and is left waiting for `start`; its pid is
    /// written to `pid_file`. runc's own messages go to `log` (the pipes
    /// belong to the container), and are read back when it fails.
    pub(crate) async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<(), OciError> {
        let argv = self.create_argv(id, bundle, pid_file, log);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .kill_on_drop(false);
        cmd.stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
        let spawned = cmd.spawn();
        // Close our copies of the write ends now: only the container keeps them.
        drop(cmd);
        let mut child = spawned.map_err(|source| OciError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let status = child.wait().await.map_err(|source| OciError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        Err(Self::create_failed(id, bundle, log, status.to_string()))
    }

    /// What `runc state` says of container `id` (`created`, `running`,
    /// `paused`, `stopped`), or `None` when runc does not know it.
    pub(crate) async fn status(&self, id: &str) -> Option<String> {
        let out = self.run(&["state", id]).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out).ok()?;
        v["status"].as_str().map(str::to_owned)
    }
}

impl Runc {
    /// `runc exec ID ARGV...`: its exit status and output (stdout then
    /// stderr, capped), or `None` when it did not end within `timeout`
    /// (runc, in a process group of its own, is then killed).
    pub(crate) async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> Result<Option<(std::process::ExitStatus, Vec<u8>)>, OciError> {
        let mut args = vec!["exec", id];
        args.extend(argv.iter().map(String::as_str));
        let mut cmd = self.command(&args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            tokio::join!(
                child.wait(),
                crate::runtime::read_capped(out.as_mut()),
                crate::runtime::read_capped(err.as_mut())
            )
        };
        match tokio::time::timeout(timeout, run).await {
            Ok((status, mut out, err)) => {
                let status = status.map_err(|source| OciError::Spawn {
                    binary: self.binary.clone(),
                    source,
                })?;
                out.extend_from_slice(&err);
                out.truncate(crate::runtime::EXEC_OUTPUT_LIMIT);
                Ok(Some((status, out)))
            }
            Err(_) => Ok(None),
        }
    }
}

/// The error messages of a runc JSON log (all of it when none parse).
fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect();
    if msgs.is_empty() {
        text.trim().to_owned()
    } else {
        msgs.join("; ")
    }
}

/// Finds `name` on PATH.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
