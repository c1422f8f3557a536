//! The parsers of the command line's values (`arbor run --kill-after 10s`,
//! `arbor kill --signal USR1`, `--env K=V`, `--replicas 3`...): in the
//! library so that the fuzz tests reach exactly what the CLI runs. Each
//! error says what was expected; none panics.

use std::{str::FromStr, time::Duration};

use crate::{
    execution::ExecutionId,
    spec::{MAX_DURATION, MAX_REPLICAS},
};

/// An execution id: a UUID.
pub fn execution_id(s: &str) -> Result<ExecutionId, String> {
    ExecutionId::from_str(s.trim()).map_err(|e| {
        format!(
            "not an execution id ({e}); expected a UUID like 67e55044-10b1-426f-9247-bb680e5fe0c8"
        )
    })
}

/// A duration (`500ms`, `30s`, `5m`, `1h 30m`), at most ten years.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); expected e.g. 500ms, 30s, 5m"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{} is too long: must be at most 10 years",
            s.trim()
        ));
    }
    Ok(d)
}

/// A signal: `TERM`, `SIGTERM`, `sigterm` or `15`; its canonical name
/// (`SIGTERM`).
pub fn signal(s: &str) -> Result<String, String> {
    use nix::sys::signal::Signal;
    let t = s.trim();
    let sig = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full).ok()
    };
    sig.map(|s| s.as_str().to_owned()).ok_or_else(|| {
        "not a signal; expected a name like TERM, SIGUSR1, KILL or a number such as 15".into()
    })
}

/// `KEY=VALUE`.
pub fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("the key is empty; expected KEY=VALUE".into()),
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err("no '=' in it; expected KEY=VALUE".into()),
    }
}

/// A JSON array of strings with a program first (`'["notify-send", "done"]'`).
pub fn json_argv(s: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = serde_json::from_str(s).map_err(|e| {
        format!("not a JSON array of strings ({e}); expected e.g. '[\"notify-send\", \"done\"]'")
    })?;
    if argv.first().is_none_or(String::is_empty) {
        return Err("the program is missing; expected e.g. '[\"notify-send\", \"done\"]'".into());
    }
    Ok(argv)
}

/// A replica count: 1 to [`MAX_REPLICAS`].
pub fn replicas(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a count: {e}"))?;
    if n == 0 || n > MAX_REPLICAS {
        return Err(format!("{n}: must be between 1 and {MAX_REPLICAS}"));
    }
    Ok(n)
}
