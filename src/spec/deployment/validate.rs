//! Every check of a deployment, each error with its path. The checks of the
//! parts (`SupervisorFlags`, `BackoffPolicy`, `ContainerSpec`, `JobSpec`,
//! the cron parser) are reused, their fields prefixed with where the part
//! sits in the file.

use crate::spec::ProbeKind;
use std::{collections::BTreeMap, path::Path};

use super::{Deployment, ServiceSpec, key_path, service::MAX_REPLICAS};
use crate::{
    cron::{CronError, CronSchedule, MAX_DURATION},
    spec::{JobSpec, SpecError, SupervisorFlags, fmt_duration},
};

/// The longest name of a deployment, service or job.
pub const MAX_NAME_LEN: usize = 64;

/// Highest exit code a process can report.
const MAX_EXIT_CODE: i32 = 255;

pub(super) fn errors(d: &Deployment) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if let Some(problem) = name_problem(&d.name) {
        errors.push(SpecError::new("name", quote(&d.name), problem));
    }
    if let Some(zone) = &d.zone {
        crate::spec::network::domain(&mut errors, "zone", zone);
    }
    errors.extend(flag_errors(&d.supervisor).map(|e| e.within("supervisor")));
    for (name, service) in &d.services {
        service_errors(d, name, service, &mut errors);
    }
    cycle_errors(d, &mut errors);
    for (name, job) in &d.jobs {
        job_errors(d, name, job, &mut errors);
    }
    errors
}

/// What is wrong with a name, if anything. Names become container names,
/// directory names and URL path segments, so they are kept to one plain
/// segment: ASCII letters, digits, `.`, `_`, `-`.
pub(super) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(match c {
            '/' | '\\' => "must not contain '/' or '\\' (a name is one path segment)".into(),
            c if c.is_control() => "must not contain control characters".into(),
            c if c.is_whitespace() => "must not contain whitespace".into(),
            c => format!("may contain only ASCII letters, digits, '.', '_' and '-' (found {c:?})"),
        });
    }
    if name == "." || name.contains("..") {
        return Some("must not be '.' or contain '..'".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start with a letter or a digit".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    None
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn flag_errors(flags: &SupervisorFlags) -> impl Iterator<Item = SpecError> {
    let reset = flags.backoff.reset_after;
    let reset_error = reset.is_zero().then(|| {
        SpecError::new(
            "backoff.reset_after",
            fmt_duration(reset),
            "must be > 0 (how long a child runs before its back-off starts over)",
        )
    });
    flags.validate().into_iter().chain(reset_error)
}

fn path_errors<'a>(
    errors: &mut Vec<SpecError>,
    field: String,
    paths: impl IntoIterator<Item = &'a Path>,
) {
    for (i, path) in paths.into_iter().enumerate() {
        let shown = quote(&path.display().to_string());
        let at = format!("{field}[{i}]");
        if path.as_os_str().is_empty() {
            errors.push(SpecError::new(at, shown, "must not be empty"));
        } else if path.as_os_str().as_encoded_bytes().contains(&0) {
            errors.push(SpecError::new(at, shown, "must not contain NUL bytes"));
        }
    }
}

fn one_path_errors(errors: &mut Vec<SpecError>, field: String, path: Option<&Path>) {
    let mut found = Vec::new();
    path_errors(&mut found, field.clone(), path);
    errors.extend(found.into_iter().map(|mut e| {
        e.field.clone_from(&field);
        e
    }));
}

fn service_errors(d: &Deployment, name: &str, s: &ServiceSpec, errors: &mut Vec<SpecError>) {
    let at = key_path("services", name);
    if let Some(problem) = name_problem(name) {
        errors.push(SpecError::new(&at, quote(name), problem));
    }
    if let Some(net) = &s.network {
        net.validate(&format!("{at}.network"), errors);
    }
    if s.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        errors.push(SpecError::new(
            format!("{at}.image"),
            "\"\"",
            "must not be empty (leave it out to run the command on the host)",
        ));
    }
    // argv (or the image), env and the container options. An empty image
    // was reported just above.
    let mut found = Vec::new();
    for (field, d) in [
        ("stop_timeout", s.stop_timeout),
        ("restart_window", s.restart_window),
        ("backoff.initial", s.backoff.initial),
        ("backoff.max", s.backoff.max),
        ("backoff.reset_after", s.backoff.reset_after),
        ("start_timeout", s.start_timeout),
    ] {
        crate::spec::check::duration(&mut found, field, d);
    }
    if let Some(w) = s.watchdog {
        if !s.notify {
            found.push(SpecError::new(
                "watchdog",
                crate::spec::fmt_duration(w),
                "needs notify: true (WATCHDOG=1 comes over the notify socket)",
            ));
        }
        if w < std::time::Duration::from_millis(1) {
            found.push(SpecError::new(
                "watchdog",
                crate::spec::fmt_duration(w),
                "must be at least 1ms",
            ));
        }
        crate::spec::check::duration(&mut found, "watchdog", w);
    }
    crate::spec::check::argv(&mut found, "on_failure", &s.on_failure);
    if let Some(p) = &s.placement {
        found.extend(p.validate(s.replicas));
    }
    if s.logs.max_size.as_u64() < 4096 {
        found.push(SpecError::new(
            "logs.max_size",
            s.logs.max_size,
            "must be at least 4KiB",
        ));
    }
    if !(1..=1000).contains(&s.logs.max_files) {
        found.push(SpecError::new(
            "logs.max_files",
            s.logs.max_files,
            "must be 1 to 1000",
        ));
    }
    for (field, kind, probe) in [
        ("liveness", ProbeKind::Liveness, &s.liveness),
        ("readiness", ProbeKind::Readiness, &s.readiness),
        ("startup", ProbeKind::Startup, &s.startup),
    ] {
        if let Some(probe) = probe {
            found.extend(probe.validate(kind).into_iter().map(|e| e.within(field)));
        }
    }
    crate::spec::container::Fields {
        image: s.image.as_deref().filter(|i| !i.trim().is_empty()),
        command: &s.command,
        env: &s.env,
        resources: &s.resources,
        user: s.user.as_deref(),
        hostname: s.hostname.as_deref(),
        mounts: &s.mounts,
    }
    .check(&mut found);
    errors.extend(found.into_iter().map(|e| e.within(&at)));
    path_errors(
        errors,
        format!("{at}.env_file"),
        s.env_file.iter().map(|p| p.as_path()),
    );
    one_path_errors(errors, format!("{at}.cwd"), s.cwd.as_deref());
    if s.replicas == 0 {
        errors.push(SpecError::new(
            format!("{at}.replicas"),
            0,
            "must be >= 1 (remove the service to run none)",
        ));
    } else if s.replicas > MAX_REPLICAS {
        errors.push(SpecError::new(
            format!("{at}.replicas"),
            s.replicas,
            format!("must be <= {MAX_REPLICAS}"),
        ));
    }
    errors.extend(flag_errors(&s.flags()).map(|e| e.within(&at)));
    // A map cannot name a code twice, so the rules' own check has nothing to find.
    for code in s.exit_codes.keys() {
        if !(0..=MAX_EXIT_CODE).contains(code) {
            errors.push(SpecError::new(
                format!("{at}.exit_codes.{code}"),
                code,
                format!("exit codes are 0 to {MAX_EXIT_CODE}"),
            ));
        }
    }
    for (i, dep) in s.depends_on.iter().enumerate() {
        let field = format!("{at}.depends_on[{i}]");
        let problem = if dep == name {
            Some("a service cannot depend on itself".to_owned())
        } else if let Some(first) = s.depends_on[..i].iter().position(|d| d == dep) {
            Some(format!("listed twice (also depends_on[{first}])"))
        } else if d.services.get(dep).is_some_and(|x| x.is_cluster_placed()) {
            Some(format!(
                "{dep:?} is placed by the cluster (it may run on another node): a service cannot depend on it"
            ))
        } else if d.services.contains_key(dep) {
            None
        } else if d.jobs.contains_key(dep) {
            Some(format!(
                "unknown service {dep:?}: it is a job, and depends_on names services"
            ))
        } else {
            Some(format!("unknown service {dep:?}"))
        };
        if let Some(problem) = problem {
            errors.push(SpecError::new(field, quote(dep), problem));
        }
    }
}

/// Every dependency cycle, named at the `depends_on` entry that closes it.
fn cycle_errors(d: &Deployment, errors: &mut Vec<SpecError>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for root in d.services.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        // Depth-first without recursion: (service, next depends_on index).
        marks.insert(root, Mark::Active);
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some(&(node, idx)) = stack.last() {
            let deps = d.services.get(node).map_or(&[][..], |s| &s.depends_on[..]);
            let Some(dep) = deps.get(idx) else {
                marks.insert(node, Mark::Done);
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let dep = dep.as_str();
            if dep == node || !d.services.contains_key(dep) || deps[..idx].iter().any(|x| x == dep)
            {
                continue;
            }
            match marks.get(dep) {
                None => {
                    marks.insert(dep, Mark::Active);
                    stack.push((dep, 0));
                }
                Some(Mark::Active) => {
                    let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let cycle: Vec<&str> =
                        stack[from..].iter().map(|(n, _)| *n).chain([dep]).collect();
                    errors.push(SpecError::new(
                        format!("{}.depends_on[{idx}]", key_path("services", node)),
                        quote(dep),
                        format!("dependency cycle {}", cycle.join(" -> ")),
                    ));
                }
                Some(Mark::Done) => {}
            }
        }
    }
}

fn job_errors(d: &Deployment, name: &str, job: &JobSpec, errors: &mut Vec<SpecError>) {
    let at = key_path("jobs", name);
    if let Some(problem) = name_problem(name) {
        errors.push(SpecError::new(&at, quote(name), problem));
    } else if d.services.contains_key(name) {
        errors.push(SpecError::new(
            &at,
            quote(name),
            format!("name already used by services.{name} (services and jobs share one namespace)"),
        ));
    }
    if job.name != name {
        errors.push(SpecError::new(
            format!("{at}.name"),
            quote(&job.name),
            format!("must equal the job's key {name:?}"),
        ));
    }
    if let Err(found) = job.validate() {
        errors.extend(
            found
                .0
                .into_iter()
                .filter(|e| e.field != "name")
                .map(|e| e.within(&at)),
        );
    }
    path_errors(
        errors,
        format!("{at}.env_file"),
        job.env_file.iter().map(|p| p.as_path()),
    );
    one_path_errors(errors, format!("{at}.cwd"), job.cwd.as_deref());
    one_path_errors(
        errors,
        format!("{at}.notify.file"),
        job.notify.file.as_deref(),
    );
    if let Some(image) = job.image.as_deref().filter(|i| i.trim().is_empty()) {
        errors.push(SpecError::new(
            format!("{at}.image"),
            quote(image),
            "must not be empty (leave it out to run the command on the host)",
        ));
    }
    if let Some(expr) = &job.schedule {
        if let Err(e) = CronSchedule::parse(expr, None) {
            errors.push(SpecError::new(
                format!("{at}.schedule"),
                quote(expr),
                e.to_string(),
            ));
        }
        if let Some(zone) = &job.time_zone
            && let Err(CronError::TimeZone { reason, .. }) =
                CronSchedule::parse("@daily", Some(zone))
        {
            errors.push(SpecError::new(
                format!("{at}.time_zone"),
                quote(zone),
                format!("invalid time zone: {reason}"),
            ));
        }
    }
    let limited = [
        ("starting_deadline", job.starting_deadline),
        ("jitter", job.jitter),
    ];
    for (field, value) in limited {
        let Some(value) = value else { continue };
        if field == "starting_deadline" && value.is_zero() {
            errors.push(SpecError::new(
                format!("{at}.{field}"),
                fmt_duration(value),
                "must be > 0 (leave it out to start missed runs however late)",
            ));
        } else if value > MAX_DURATION {
            errors.push(SpecError::new(
                format!("{at}.{field}"),
                fmt_duration(value),
                format!("must be at most {}", fmt_duration(MAX_DURATION)),
            ));
        }
    }
}
