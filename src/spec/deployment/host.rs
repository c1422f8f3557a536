//! Checks of a spec against this host that need no process: the program
//! of a command exists and is executable (on `PATH`, or at its path), and
//! a `cwd` is a directory.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Warnings about `command` and `cwd` of the entry at `path`.
pub(super) fn check(
    path: &str,
    command: &[String],
    cwd: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = cwd
        && !dir.is_dir()
    {
        out.push(format!(
            "{path}.cwd: {} is not a directory on this host",
            dir.display()
        ));
    }
    let Some(program) = command.first().filter(|p| !p.is_empty()) else {
        return out;
    };
    if program.contains('/') {
        let at = match cwd {
            Some(dir) if !program.starts_with('/') => dir.join(program),
            _ => PathBuf::from(program),
        };
        match std::fs::metadata(&at) {
            Err(_) => out.push(format!(
                "{path}.command[0]: {program:?} does not exist on this host"
            )),
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => out.push(format!(
                "{path}.command[0]: {program:?} is not an executable file"
            )),
            Ok(_) => {}
        }
        return out;
    }
    let search = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    let found = search.split(':').filter(|d| !d.is_empty()).any(|d| {
        std::fs::metadata(Path::new(d).join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if !found {
        out.push(format!(
            "{path}.command[0]: program {program:?} is not on PATH on this host"
        ));
    }
    out
}
