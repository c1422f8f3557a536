//! Reading `/proc`: processes by pid, group and parent, the node's own
//! children, cgroup paths. The reaper uses it to decide what is a
//! container's; tests and invariant checks use it to prove that nothing was
//! left behind (no process, no zombie).

use std::{fs, path::Path};

/// A process as `/proc/<pid>/stat` shows it (zombies included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Its pid.
    pub pid: i32,
    /// State letter (`R`, `S`, `Z` for a zombie, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// Start time in clock ticks since boot: `(pid, start)` names one process
    /// even when pids are reused.
    pub start: u64,
}

impl ProcStat {
    /// True while this very process (same pid, same start time) exists,
    /// even as a zombie.
    pub fn exists(&self) -> bool {
        stat(self.pid).is_some_and(|now| now.start == self.start)
    }

    /// True for a zombie (exited, not yet reaped).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The stat line of `pid`, if it exists.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp session tty tpgid flags ... starttime(22) ...";
    // comm may hold spaces and parentheses, so fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Every process on the machine.
pub fn all() -> Vec<ProcStat> {
    pids().filter_map(stat).collect()
}

/// Every process (zombies included) in process group `pgid`.
pub fn group(pgid: i32) -> Vec<ProcStat> {
    all().into_iter().filter(|p| p.pgrp == pgid).collect()
}

/// Pids of this process's own children (all threads), zombies included.
pub fn own_children() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// The zombie children of this process.
pub fn own_zombies() -> Vec<ProcStat> {
    own_children()
        .into_iter()
        .filter_map(stat)
        .filter(ProcStat::is_zombie)
        .collect()
}

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/<pid>/cgroup`),
/// which an exiting process and a zombie keep.
pub fn cgroup_path(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The command line of `pid`, arguments separated by spaces.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

/// True when `pid` ignores signal number `signal` (`SigIgn` of its status).
pub fn ignores_signal(pid: i32, signal: i32) -> bool {
    signal_mask_has(pid, "SigIgn:", signal)
}

/// True when `pid` has a handler for signal number `signal` (`SigCgt` of
/// its status; a shell's `trap 'cmd' TERM`).
pub fn catches_signal(pid: i32, signal: i32) -> bool {
    signal_mask_has(pid, "SigCgt:", signal)
}

fn signal_mask_has(pid: i32, field: &str, signal: i32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signal) && mask & (1 << (signal - 1)) != 0)
}

/// Live processes whose environment holds `key=value` (a zombie has none).
pub fn with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    pids()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

fn pids() -> impl Iterator<Item = i32> {
    fs::read_dir(Path::new("/proc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// What is left of a container: members of process group `pgid` (zombies
/// included) and those of `recorded` that still exist.
pub fn leftovers(pgid: i32, recorded: &[ProcStat]) -> Vec<ProcStat> {
    let mut left = group(pgid);
    left.extend(recorded.iter().filter(|p| p.pgrp != pgid && p.exists()));
    left
}
