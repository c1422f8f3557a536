//! Bad deployment specs: each gets an error naming the field path and the
//! value (and, for syntax and type errors, the line), validation reports
//! every error at once, and no input makes anything panic.

use arbor::{Deployment, SpecError};

/// The one error reading `yaml` gives.
#[track_caller]
fn read_error(yaml: &str) -> SpecError {
    match Deployment::from_yaml(yaml) {
        Ok(d) => panic!("read without error: {d:#?}"),
        Err(e) => {
            assert_eq!(e.0.len(), 1, "{e}");
            e.0[0].clone()
        }
    }
}

/// Every error validating `yaml` gives (it must read).
#[track_caller]
fn invalid(yaml: &str) -> Vec<SpecError> {
    let d = Deployment::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    match d.validate() {
        Ok(()) => panic!("valid: {d:#?}"),
        Err(e) => e.0,
    }
}

/// Checks that `e` names `field`, holds `value` and says `message`.
#[track_caller]
fn check(e: &SpecError, field: &str, value: &str, message: &str) {
    assert_eq!(e.field, field, "{e}");
    assert!(e.value.contains(value), "value {value:?} in {e}");
    assert!(e.message.contains(message), "message {message:?} in {e}");
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{field}: ")), "{shown}");
}

/// The error about `field` among `errors`.
#[track_caller]
fn error_for<'a>(errors: &'a [SpecError], field: &str) -> &'a SpecError {
    errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error for {field}: {errors:#?}"))
}

/// `services: web: command: [serve]` plus `extra` lines of the service.
fn web_with(extra: &str) -> String {
    let mut yaml = String::from("services:\n  web:\n    command: [serve]\n");
    for line in extra.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// `jobs: backup: command: [backup]` plus `extra` lines of the job.
fn backup_with(extra: &str) -> String {
    let mut yaml = String::from("jobs:\n  backup:\n    command: [backup]\n");
    for line in extra.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

// ---------------------------------------------------------------------------
// Syntax

#[test]
fn an_unclosed_bracket_names_the_field_and_its_line() {
    let e = read_error("services:\n  web:\n    command: [serve, --port\n");
    check(
        &e,
        "services.web.command",
        "command: [serve",
        "unclosed bracket",
    );
    assert!(e.message.contains("line 3"), "{e}");
}

#[test]
fn a_key_indented_wrongly_names_the_section_and_the_line() {
    let e = read_error("services:\n  web:\n    command: [serve]\n   replicas: 2\n");
    check(&e, "services", "replicas: 2", "line 4");
}

#[test]
fn a_tab_in_the_indentation_is_refused_at_its_line() {
    let e = read_error("services:\n\tweb:\n    command: [serve]\n");
    check(&e, "spec", "web:", "tabs");
    assert!(e.message.contains("line 2"), "{e}");
}

#[test]
fn a_second_yaml_document_is_refused() {
    let e = read_error("name: a\n---\nname: b\n");
    check(&e, "spec", "---", "one YAML document");
}

#[test]
fn a_spec_that_is_not_a_mapping_is_refused() {
    let e = read_error("- web\n- db\n");
    check(&e, "spec", "- web", "expected a mapping");
}

#[test]
fn a_nul_character_in_the_file_is_refused() {
    let e = read_error("name: demo\u{0}\n");
    assert!(e.message.contains("line 1"), "{e}");
}

#[test]
fn an_alias_to_an_unknown_anchor_is_refused() {
    let e = read_error("services:\n  web:\n    command: *argv\n");
    check(&e, "services.web", "*argv", "unknown anchor");
}

#[test]
fn a_bad_value_reached_through_an_alias_names_the_field_that_uses_it() {
    let e = read_error("services:\n  web: {command: [a], labels: {size: &n two}, replicas: *n}\n");
    check(&e, "services.web.replicas", "two", "whole number");
}

#[test]
fn thousands_of_uses_of_one_anchor_are_refused_in_words() {
    let uses = vec!["*n"; 5000].join(", ");
    let e = read_error(&format!(
        "name: &n web\nservices:\n  web:\n    command: [{uses}]\n"
    ));
    check(&e, "spec", "the whole file", "too many aliases: 5000 uses");
    assert!(!e.message.contains("AliasAnchorRatio"), "{e}");
}

#[test]
fn a_name_written_as_a_number_is_refused_and_says_to_quote_it() {
    let e = read_error("name: 42\nservices:\n  web: {command: [serve]}\n");
    check(&e, "name", "42", "quote a name");
    let e = read_error("zone: true\nservices:\n  web: {command: [serve]}\n");
    check(&e, "zone", "true", "quote a name");
    let d = Deployment::from_yaml("name: \"42\"\nzone: ~\nservices: {}\n").unwrap();
    assert_eq!(d.name, "42");
    assert_eq!(d.zone, None);
}

// ---------------------------------------------------------------------------
// Unknown fields

#[test]
fn an_unknown_top_level_field_is_refused() {
    let e = read_error("name: demo\nservces:\n  web: {command: [serve]}\n");
    check(&e, "servces", "\"servces\"", "unknown field");
    assert!(e.message.contains("services"), "lists the fields: {e}");
    assert!(e.message.contains("line 2, column 1"), "{e}");
}

#[test]
fn an_unknown_field_in_a_service_is_refused() {
    let e = read_error(&web_with("replica: 2"));
    check(&e, "services.web.replica", "\"replica\"", "unknown field");
    assert!(e.message.contains("replicas"), "suggests the fields: {e}");
}

#[test]
fn an_unknown_field_in_a_job_is_refused_and_name_is_not_offered() {
    let e = read_error(&backup_with("scheduel: \"@daily\""));
    check(&e, "jobs.backup.scheduel", "\"scheduel\"", "unknown field");
    assert!(e.message.contains("schedule"), "{e}");
    assert!(!e.message.contains(" name,"), "the key is the name: {e}");
}

#[test]
fn an_unknown_field_in_backoff_is_refused() {
    let e = read_error(&web_with("backoff: {initial: 1s, maximum: 30s}"));
    check(
        &e,
        "services.web.backoff.maximum",
        "\"maximum\"",
        "unknown field",
    );
}

#[test]
fn an_unknown_field_in_history_is_refused() {
    let e = read_error(&backup_with("history: {successful: 3, kept: 1}"));
    check(&e, "jobs.backup.history.kept", "\"kept\"", "unknown field");
}

#[test]
fn an_unknown_field_in_notify_init_or_supervisor_is_refused() {
    let e = read_error(&backup_with("notify: {url: \"http://x\"}"));
    check(&e, "jobs.backup.notify.url", "\"url\"", "unknown field");
    let e = read_error(&backup_with("init: [{command: [a], retries: 2}]"));
    check(
        &e,
        "jobs.backup.init[0].retries",
        "\"retries\"",
        "unknown field",
    );
    let e = read_error("supervisor: {intensity: 3}\n");
    check(&e, "supervisor.intensity", "\"intensity\"", "unknown field");
}

#[test]
fn a_name_inside_a_job_is_refused_because_the_key_is_the_name() {
    let e = read_error("jobs:\n  backup:\n    name: backup\n    command: [backup]\n");
    check(&e, "jobs.backup.name", "name", "named by its key");
}

// ---------------------------------------------------------------------------
// Wrong types and values

#[test]
fn replicas_written_as_a_word_names_field_value_and_position() {
    let e = read_error("name: demo\nservices:\n  web:\n    command: [serve]\n    replicas: two\n");
    check(
        &e,
        "services.web.replicas",
        "\"two\"",
        "expected a whole number",
    );
    assert!(e.message.contains("line 5, column 15"), "{e}");
}

#[test]
fn negative_replicas_are_refused_by_type() {
    let e = read_error(&web_with("replicas: -1"));
    check(&e, "services.web.replicas", "\"-1\"", "whole number");
}

#[test]
fn a_command_given_as_a_string_asks_for_a_list() {
    let e = read_error("services:\n  web:\n    command: \"serve --port 80\"\n");
    check(
        &e,
        "services.web.command",
        "serve --port 80",
        "expected a list",
    );
}

#[test]
fn an_env_value_that_is_a_list_or_null_is_refused() {
    let e = read_error(&web_with("env: {PORTS: [80, 443]}"));
    check(&e, "services.web.env.PORTS", "[", "expected a string");
    let e = read_error(&web_with("env: {EMPTY: ~}"));
    check(&e, "services.web.env.EMPTY", "~", "quote it");
}

#[test]
fn a_negative_duration_is_refused() {
    let e = read_error(&web_with("stop_timeout: -5s"));
    check(
        &e,
        "services.web.stop_timeout",
        "\"-5s\"",
        "expected a duration",
    );
}

#[test]
fn a_duration_without_a_unit_is_refused() {
    let e = read_error(&web_with("restart_window: 300"));
    check(&e, "services.web.restart_window", "300", "needs a unit");
}

#[test]
fn a_duration_in_unknown_units_is_refused() {
    let e = read_error(&backup_with("deadline: 5 fortnights"));
    check(&e, "jobs.backup.deadline", "5 fortnights", "duration");
}

#[test]
fn a_bad_restart_value_lists_the_good_ones() {
    let e = read_error(&web_with("restart: always"));
    check(
        &e,
        "services.web.restart",
        "\"always\"",
        "permanent, transient, temporary",
    );
}

#[test]
fn a_bad_on_panic_value_lists_the_good_ones() {
    let e = read_error(&web_with("on_panic: explode"));
    check(
        &e,
        "services.web.on_panic",
        "\"explode\"",
        "restart, isolate, shutdown",
    );
}

#[test]
fn a_bad_concurrency_value_lists_the_good_ones() {
    let e = read_error(&backup_with("concurrency: sometimes"));
    check(
        &e,
        "jobs.backup.concurrency",
        "\"sometimes\"",
        "allow, forbid, replace",
    );
}

#[test]
fn bad_strategy_and_on_limit_values_list_the_good_ones() {
    let e = read_error(&web_with("strategy: all_for_one"));
    check(
        &e,
        "services.web.strategy",
        "\"all_for_one\"",
        "one_for_all",
    );
    let e = read_error(&web_with("on_limit: retry"));
    check(
        &e,
        "services.web.on_limit",
        "\"retry\"",
        "escalate, backoff",
    );
}

#[test]
fn a_bad_exit_code_action_or_code_is_refused() {
    let e = read_error(&web_with("exit_codes: {75: again}"));
    check(&e, "services.web.exit_codes.75", "\"again\"", "retry, done");
    let e = read_error(&web_with("exit_codes: {ok: done}"));
    check(&e, "services.web.exit_codes", "ok", "integer");
}

#[test]
fn a_max_log_size_that_is_not_a_size_is_refused() {
    let e = read_error(&backup_with("max_log_size: lots"));
    check(&e, "jobs.backup.max_log_size", "\"lots\"", "a size such as");
}

#[test]
fn a_job_that_is_not_a_mapping_is_refused() {
    let e = read_error("jobs:\n  backup: echo hi\n");
    check(&e, "jobs.backup", "echo hi", "expected a mapping");
}

#[test]
fn a_service_with_no_body_is_refused() {
    let e = read_error("services:\n  web:\n");
    check(&e, "services.web", "", "expected a mapping");
}

// ---------------------------------------------------------------------------
// Duplicate names

#[test]
fn a_service_named_twice_in_the_file_is_refused() {
    let e = read_error("services:\n  web: {command: [a]}\n  web: {command: [b]}\n");
    check(&e, "services", "\"web\"", "duplicate key");
    assert!(e.message.contains("line 3"), "{e}");
}

#[test]
fn a_job_named_twice_in_the_file_is_refused() {
    let e = read_error("jobs:\n  backup: {command: [a]}\n  backup: {command: [b]}\n");
    check(&e, "jobs", "\"backup\"", "duplicate key");
}

#[test]
fn a_field_given_twice_is_refused() {
    let e = read_error("services:\n  web:\n    command: [a]\n    replicas: 1\n    replicas: 2\n");
    check(&e, "services.web", "\"replicas\"", "duplicate key");
    assert!(e.message.contains("line 5"), "{e}");
}

#[test]
fn a_service_and_a_job_may_not_share_a_name() {
    let errors = invalid("services:\n  web: {command: [a]}\njobs:\n  web: {command: [b]}\n");
    check(
        error_for(&errors, "jobs.web"),
        "jobs.web",
        "\"web\"",
        "already used by services.web",
    );
}

// ---------------------------------------------------------------------------
// Names

#[test]
fn a_name_with_a_slash_is_refused() {
    let errors = invalid("services:\n  a/b: {command: [a]}\n");
    check(
        error_for(&errors, "services[\"a/b\"]"),
        "services[\"a/b\"]",
        "\"a/b\"",
        "'/'",
    );
}

#[test]
fn a_name_with_dot_dot_is_refused() {
    let errors = invalid("jobs:\n  ..: {command: [a]}\n  x..y: {command: [b]}\n");
    let dots = "jobs[\"..\"]";
    check(error_for(&errors, dots), dots, "\"..\"", "'..'");
    let inside = "jobs[\"x..y\"]";
    check(error_for(&errors, inside), inside, "\"x..y\"", "'..'");
}

#[test]
fn names_with_whitespace_or_control_characters_are_refused() {
    let errors = invalid(
        "services:\n  \"my web\": {command: [a]}\n  \"w\\teb\": {command: [a]}\n  \"db\\u0007\": {command: [a]}\n",
    );
    check(
        error_for(&errors, "services[\"my web\"]"),
        "services[\"my web\"]",
        "\"my web\"",
        "whitespace",
    );
    check(
        error_for(&errors, "services[\"w\\teb\"]"),
        "services[\"w\\teb\"]",
        "\"w\\teb\"",
        "control",
    );
    check(
        error_for(&errors, "services[\"db\\u{7}\"]"),
        "services[\"db\\u{7}\"]",
        "\"db\\u{7}\"",
        "control",
    );
}

#[test]
fn an_empty_name_is_refused() {
    let errors = invalid("services:\n  \"\": {command: [a]}\n");
    check(
        error_for(&errors, "services[\"\"]"),
        "services[\"\"]",
        "\"\"",
        "must not be empty",
    );
}

#[test]
fn a_bad_deployment_name_is_refused() {
    let errors = invalid("name: \"../etc\"\n");
    check(error_for(&errors, "name"), "name", "\"../etc\"", "'/'");
    let errors = invalid("name: -rf\n");
    check(
        error_for(&errors, "name"),
        "name",
        "\"-rf\"",
        "start with a letter",
    );
    let long = "x".repeat(65);
    let errors = invalid(&format!("name: {long}\n"));
    check(error_for(&errors, "name"), "name", &long, "at most 64");
}

// ---------------------------------------------------------------------------
// Services

#[test]
fn zero_replicas_are_refused() {
    let errors = invalid(&web_with("replicas: 0"));
    check(&errors[0], "services.web.replicas", "0", "must be >= 1");
}

#[test]
fn more_replicas_than_the_limit_are_refused() {
    let errors = invalid(&web_with("replicas: 1000000"));
    check(&errors[0], "services.web.replicas", "1000000", "<= 10000");
}

#[test]
fn an_empty_command_is_refused() {
    let errors = invalid("services:\n  web: {command: []}\n");
    check(
        &errors[0],
        "services.web.command",
        "[]",
        "must not be empty",
    );
    let errors = invalid("services:\n  web: {env: {A: b}}\n");
    check(
        &errors[0],
        "services.web.command",
        "[]",
        "must not be empty",
    );
}

#[test]
fn an_empty_program_is_refused() {
    let errors = invalid("services:\n  web: {command: [\"\", x]}\n");
    check(
        &errors[0],
        "services.web.command[0]",
        "\"\"",
        "program must not be empty",
    );
}

#[test]
fn a_nul_byte_in_an_argument_is_refused() {
    let errors = invalid("services:\n  web: {command: [serve, \"a\\0b\"]}\n");
    check(&errors[0], "services.web.command[1]", "\"a\\0b\"", "NUL");
    let errors = invalid("jobs:\n  backup: {command: [tar, \"\\0\"]}\n");
    check(&errors[0], "jobs.backup.command[1]", "\\0", "NUL");
}

#[test]
fn an_env_key_with_an_equals_sign_is_refused() {
    let errors = invalid(&web_with("env: {\"A=B\": x}"));
    check(&errors[0], "services.web.env.A=B", "\"A=B\"", "without '='");
    let errors = invalid(&backup_with("env: {\"\": x}"));
    check(&errors[0], "jobs.backup.env.", "\"\"", "non-empty");
}

#[test]
fn an_empty_image_is_refused_but_an_image_is_not() {
    let errors = invalid("services:\n  db: {image: \"\"}\n");
    check(
        error_for(&errors, "services.db.image"),
        "services.db.image",
        "\"\"",
        "must not be empty",
    );
    let ok = Deployment::from_yaml("services:\n  db: {image: \"postgres:16\"}\n").unwrap();
    ok.validate()
        .expect("the runtime decides whether it runs images");
}

#[test]
fn empty_env_file_and_cwd_paths_are_refused() {
    let errors = invalid(&web_with("env_file: [\"\"]\ncwd: \"\""));
    check(
        error_for(&errors, "services.web.env_file[0]"),
        "services.web.env_file[0]",
        "\"\"",
        "empty",
    );
    check(
        error_for(&errors, "services.web.cwd"),
        "services.web.cwd",
        "\"\"",
        "empty",
    );
}

#[test]
fn backoff_max_below_initial_is_refused() {
    let errors = invalid(&web_with("backoff: {initial: 10s, max: 5s}"));
    let e = &errors[0];
    check(
        e,
        "services.web.backoff.max",
        "5s",
        "must be >= initial (10s)",
    );
    assert_eq!(
        e.to_string(),
        "services.web.backoff.max: must be >= initial (10s) (got 5s)"
    );
}

#[test]
fn zero_and_out_of_range_backoff_fields_are_refused_together() {
    let errors = invalid(&web_with(
        "backoff: {initial: 0s, max: 1s, multiplier: 0.5, jitter: 2, reset_after: 0s}",
    ));
    check(
        error_for(&errors, "services.web.backoff.initial"),
        "services.web.backoff.initial",
        "0s",
        "> 0",
    );
    check(
        error_for(&errors, "services.web.backoff.multiplier"),
        "services.web.backoff.multiplier",
        "0.5",
        ">= 1",
    );
    check(
        error_for(&errors, "services.web.backoff.jitter"),
        "services.web.backoff.jitter",
        "2",
        "between 0 and 1",
    );
    check(
        error_for(&errors, "services.web.backoff.reset_after"),
        "services.web.backoff.reset_after",
        "0s",
        "> 0",
    );
}

#[test]
fn a_zero_restart_window_is_refused_in_a_service_and_at_the_root() {
    let errors = invalid(&web_with("restart_window: 0s"));
    check(
        &errors[0],
        "services.web.restart_window",
        "0s",
        "must be > 0",
    );
    let errors = invalid("supervisor: {restart_window: 0s}\n");
    check(&errors[0], "supervisor.restart_window", "0s", "must be > 0");
}

#[test]
fn exit_codes_outside_0_to_255_are_refused() {
    let errors = invalid(&web_with("exit_codes: {256: done, -1: retry}"));
    check(
        error_for(&errors, "services.web.exit_codes.256"),
        "services.web.exit_codes.256",
        "256",
        "0 to 255",
    );
    check(
        error_for(&errors, "services.web.exit_codes.-1"),
        "services.web.exit_codes.-1",
        "-1",
        "0 to 255",
    );
}

// ---------------------------------------------------------------------------
// Dependencies

#[test]
fn an_unknown_dependency_is_refused() {
    let errors =
        invalid("services:\n  web: {command: [w], depends_on: [dbb]}\n  db: {command: [d]}\n");
    let e = &errors[0];
    check(
        e,
        "services.web.depends_on[0]",
        "\"dbb\"",
        "unknown service \"dbb\"",
    );
}

#[test]
fn a_dependency_on_a_job_is_refused() {
    let errors = invalid(
        "services:\n  web: {command: [w], depends_on: [backup]}\njobs:\n  backup: {command: [b]}\n",
    );
    check(
        &errors[0],
        "services.web.depends_on[0]",
        "\"backup\"",
        "it is a job",
    );
}

#[test]
fn a_service_depending_on_itself_or_twice_on_one_is_refused() {
    let errors = invalid(
        "services:\n  web: {command: [w], depends_on: [db, web, db]}\n  db: {command: [d]}\n",
    );
    check(
        error_for(&errors, "services.web.depends_on[1]"),
        "services.web.depends_on[1]",
        "\"web\"",
        "itself",
    );
    check(
        error_for(&errors, "services.web.depends_on[2]"),
        "services.web.depends_on[2]",
        "\"db\"",
        "listed twice",
    );
}

#[test]
fn a_dependency_cycle_is_refused_with_its_path() {
    let errors = invalid(
        "services:\n  web: {command: [w], depends_on: [db]}\n  db: {command: [d], depends_on: [web]}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    check(
        &errors[0],
        "services.web.depends_on[0]",
        "\"db\"",
        "dependency cycle db -> web -> db",
    );
}

#[test]
fn every_dependency_cycle_is_reported() {
    let errors = invalid(
        r#"
services:
  a: {command: [a], depends_on: [b]}
  b: {command: [b], depends_on: [c]}
  c: {command: [c], depends_on: [a]}
  x: {command: [x], depends_on: [y]}
  y: {command: [y], depends_on: [x]}
  z: {command: [z], depends_on: [a]}
"#,
    );
    let cycles: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        cycles,
        [
            "dependency cycle a -> b -> c -> a",
            "dependency cycle x -> y -> x"
        ]
    );
}

// ---------------------------------------------------------------------------
// Jobs

#[test]
fn an_invalid_cron_expression_is_refused_with_the_reason() {
    let errors = invalid(&backup_with("schedule: \"61 * * * *\""));
    let e = &errors[0];
    check(
        e,
        "jobs.backup.schedule",
        "\"61 * * * *\"",
        "invalid cron expression \"61 * * * *\"",
    );
    assert!(e.message.contains("61"), "{e}");
}

#[test]
fn garbage_instead_of_a_cron_expression_is_refused() {
    let errors = invalid(&backup_with("schedule: \"every tuesday\""));
    check(
        &errors[0],
        "jobs.backup.schedule",
        "\"every tuesday\"",
        "invalid cron expression",
    );
}

#[test]
fn an_invalid_time_zone_is_refused() {
    let errors = invalid(&backup_with(
        "schedule: \"@daily\"\ntime_zone: Mars/Olympus",
    ));
    check(
        &errors[0],
        "jobs.backup.time_zone",
        "\"Mars/Olympus\"",
        "IANA",
    );
}

#[test]
fn a_bad_schedule_and_a_bad_time_zone_are_both_reported() {
    let errors = invalid(&backup_with("schedule: \"99 * * * *\"\ntime_zone: Nowhere"));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    error_for(&errors, "jobs.backup.schedule");
    error_for(&errors, "jobs.backup.time_zone");
}

#[test]
fn schedule_fields_without_a_schedule_are_refused() {
    let errors = invalid(&backup_with("time_zone: UTC\nstarting_deadline: 1m"));
    check(
        error_for(&errors, "jobs.backup.time_zone"),
        "jobs.backup.time_zone",
        "(set)",
        "schedule",
    );
    check(
        error_for(&errors, "jobs.backup.starting_deadline"),
        "jobs.backup.starting_deadline",
        "(set)",
        "schedule",
    );
}

#[test]
fn zero_durations_of_a_job_are_refused() {
    let errors = invalid(&backup_with(
        "schedule: \"@hourly\"\ndeadline: 0s\nretention: 0s\nstarting_deadline: 0s\njitter: 0s",
    ));
    for field in ["deadline", "retention", "starting_deadline", "jitter"] {
        let field = format!("jobs.backup.{field}");
        check(error_for(&errors, &field), &field, "0s", "> 0");
    }
}

#[test]
fn a_starting_deadline_longer_than_a_year_is_refused() {
    let errors = invalid(&backup_with(
        "schedule: \"@hourly\"\nstarting_deadline: 400days",
    ));
    check(
        &errors[0],
        "jobs.backup.starting_deadline",
        "1year",
        "at most 1year",
    );
}

#[test]
fn an_empty_job_command_init_step_or_notify_command_is_refused() {
    let errors =
        invalid("jobs:\n  backup: {command: [], init: [{command: []}], notify: {command: []}}\n");
    check(
        error_for(&errors, "jobs.backup.command"),
        "jobs.backup.command",
        "[]",
        "must not be empty",
    );
    check(
        error_for(&errors, "jobs.backup.init[0].command"),
        "jobs.backup.init[0].command",
        "[]",
        "must not be empty",
    );
    check(
        error_for(&errors, "jobs.backup.notify.command"),
        "jobs.backup.notify.command",
        "[]",
        "must not be empty",
    );
}

#[test]
fn a_max_log_size_too_small_or_too_large_is_refused() {
    let errors = invalid(&backup_with("max_log_size: 10B"));
    check(&errors[0], "jobs.backup.max_log_size", "10", ">= 1 KiB");
    let errors = invalid(&backup_with("max_log_size: 2GiB"));
    check(&errors[0], "jobs.backup.max_log_size", "2", "<= 1 GiB");
}

#[test]
fn bad_max_concurrent_values_are_refused() {
    let errors = invalid(&backup_with("max_concurrent: 0"));
    check(&errors[0], "jobs.backup.max_concurrent", "0", ">= 1");
    let errors = invalid(&backup_with("concurrency: forbid\nmax_concurrent: 3"));
    check(&errors[0], "jobs.backup.max_concurrent", "3", "must be 1");
}

#[test]
fn a_bad_retry_backoff_is_refused_when_the_job_retries() {
    let errors = invalid(&backup_with(
        "backoff_limit: 3\nretry_backoff: {initial: 1m, max: 10s}",
    ));
    check(
        &errors[0],
        "jobs.backup.retry_backoff.max",
        "10s",
        "must be >= initial (1m)",
    );
}

// ---------------------------------------------------------------------------
// Everything at once, and no panics

#[test]
fn validation_reports_every_error_at_once() {
    let errors = invalid(
        r#"
name: "bad name"
supervisor: {restart_window: 0s}
services:
  web:
    command: []
    replicas: 0
    backoff: {initial: 10s, max: 1s}
    depends_on: [dbb]
  a/b: {command: [x]}
jobs:
  web: {command: [x]}
  backup: {command: [x], schedule: "61 * * * *", retention: 0s}
"#,
    );
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "supervisor.restart_window",
            "services[\"a/b\"]",
            "services.web.command",
            "services.web.replicas",
            "services.web.backoff.max",
            "services.web.depends_on[0]",
            "jobs.backup.retention",
            "jobs.backup.schedule",
            "jobs.web",
        ],
        "{errors:#?}"
    );
    let shown = Deployment::from_yaml("services:\n  web: {command: [], replicas: 0}\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with("invalid spec (2 errors)\n  services.web.command: "),
        "{shown}"
    );
}

/// Runs everything a caller may run on whatever `text` reads as.
fn exercise(text: &str) {
    if let Ok(d) = Deployment::from_yaml(text) {
        let _ = d.validate();
        let _ = d.start_order();
        let _ = d.summary();
        let _ = d.diff(&Deployment::default());
        let _ = d.to_yaml();
        for (name, s) in &d.services {
            let _ = s.container_spec(name);
        }
    }
}

#[test]
fn no_prefix_of_the_example_file_panics() {
    let example = include_str!("../examples/node.yaml");
    for (end, _) in example.char_indices().chain([(example.len(), ' ')]) {
        exercise(&example[..end]);
    }
}

#[test]
fn no_single_character_edit_of_the_example_file_panics() {
    let example = include_str!("../examples/node.yaml");
    let bounds: Vec<usize> = example.char_indices().map(|(i, _)| i).collect();
    for (n, &at) in bounds.iter().enumerate() {
        // Every position gets one of the YAML indicators inserted, in turn;
        // every third loses its character.
        let insert = [
            ":", "[", "{", "&a", "*a", "\"", "\t", "- ", "!", "#", "\n  ", "'", "%", "|",
        ][n % 14];
        let mut edited = example.to_owned();
        edited.insert_str(at, insert);
        let _ = Deployment::from_yaml(&edited).map(|d| d.validate());
        if n % 3 == 0 {
            let mut removed = example.to_owned();
            removed.remove(at);
            let _ = Deployment::from_yaml(&removed).map(|d| d.validate());
        }
    }
}

#[test]
fn huge_numbers_and_long_values_do_not_panic() {
    for yaml in [
        "services:\n  web: {command: [a], replicas: 18446744073709551615}\n",
        "services:\n  web: {command: [a], max_restarts: 4294967296}\n",
        "services:\n  web: {command: [a], stop_timeout: 99999999999999999999999s}\n",
        "services:\n  web: {command: [a], backoff: {multiplier: .inf, jitter: .nan}}\n",
        "services:\n  web: {command: [a], exit_codes: {2147483648: done}}\n",
        "jobs:\n  j: {command: [a], max_log_size: 99999999999999999999EiB}\n",
        "jobs:\n  j: {command: [a], history: {successful: -1}}\n",
        "jobs:\n  j: {command: [a], schedule: \"* * * * * * * * *\"}\n",
    ] {
        exercise(yaml);
    }
    // YAML allows implicit keys up to 1024 characters; the error quotes a
    // cut value.
    let long = format!("services:\n  {}: {{command: [a]}}\n", "w".repeat(100_000));
    let e = read_error(&long);
    assert!(e.value.len() < 200, "{e}");
    let long = format!(
        "services:\n  web: {{command: [\"{}\"]}}\n",
        "a".repeat(1_000_000)
    );
    exercise(&long);
    let deep = format!("name: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    exercise(&deep);
}

// ---------------------------------------------------------------------------
// Networking

#[test]
fn an_unknown_field_in_a_job_network_is_refused() {
    let e = read_error(&backup_with("network: {segmnt: store}"));
    check(
        &e,
        "jobs.backup.network.segmnt",
        "\"segmnt\"",
        "unknown field",
    );
    assert!(e.message.contains("segment"), "suggests the fields: {e}");
}

#[test]
fn a_network_required_flag_that_is_not_a_boolean_is_refused() {
    let e = read_error(&backup_with("network: {required: maybe}"));
    assert_eq!(e.field, "jobs.backup.network.required", "{e}");
    assert!(e.to_string().contains("maybe"), "{e}");
}

#[test]
fn bad_segment_isolation_and_dns_names_are_refused_all_at_once() {
    let errors = invalid(&backup_with(
        "network: {segment: \"a b\", isolation: \"\", dns_search: [\"ok.example\", \"bad..example\"]}",
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    check(
        error_for(&errors, "jobs.backup.network.segment"),
        "jobs.backup.network.segment",
        "\"a b\"",
        "1-64 characters",
    );
    check(
        error_for(&errors, "jobs.backup.network.isolation"),
        "jobs.backup.network.isolation",
        "\"\"",
        "1-64 characters",
    );
    check(
        error_for(&errors, "jobs.backup.network.dns_search[1]"),
        "jobs.backup.network.dns_search[1]",
        "\"bad..example\"",
        "domain name",
    );
}

#[test]
fn a_zone_that_is_not_a_domain_name_is_refused() {
    let errors = invalid("zone: \"corp example\"\njobs:\n  backup:\n    command: [backup]\n");
    check(&errors[0], "zone", "\"corp example\"", "domain name");
}

// ---------------------------------------------------------------------------
// Container fields (OCI runtime): runtime, pull_policy, resources, user,
// hostname, mounts, image names

#[test]
fn an_unknown_runtime_or_pull_policy_is_refused_with_the_choices() {
    let e = read_error(&web_with("runtime: docker"));
    check(&e, "services.web.runtime", "docker", "oci");
    let e = read_error(&backup_with("pull_policy: always"));
    check(&e, "jobs.backup.pull_policy", "always", "if_not_present");
}

#[test]
fn resources_that_cannot_be_read_or_make_no_sense_name_their_field() {
    let e = read_error(&web_with("resources: {memory: lots}"));
    assert_eq!(e.field, "services.web.resources.memory", "{e}");
    let e = read_error(&web_with("resources: {memroy: 32Mi}"));
    check(
        &e,
        "services.web.resources.memroy",
        "\"memroy\"",
        "unknown field",
    );
    let errors = invalid(&web_with("resources: {memory: 1Ki, cpus: 0, pids: 0}"));
    check(
        error_for(&errors, "services.web.resources.memory"),
        "services.web.resources.memory",
        "KiB",
        "at least 1MiB",
    );
    check(
        error_for(&errors, "services.web.resources.cpus"),
        "services.web.resources.cpus",
        "0",
        "above 0",
    );
    check(
        error_for(&errors, "services.web.resources.pids"),
        "services.web.resources.pids",
        "0",
        "at least 1",
    );
    let errors = invalid(&backup_with("resources: {cpus: -1}"));
    error_for(&errors, "jobs.backup.resources.cpus");
}

#[test]
fn bad_user_hostname_mounts_and_image_names_name_their_field_and_value() {
    let errors = invalid(&web_with(
        "user: \"a:b:c\"\nhostname: \"-bad host\"\nmounts: [{source: data, target: /data}, {source: /x, target: /../etc}]\nimage: \"busybox@sha256:00\"",
    ));
    check(
        error_for(&errors, "services.web.user"),
        "services.web.user",
        "a:b:c",
        "user[:group]",
    );
    check(
        error_for(&errors, "services.web.hostname"),
        "services.web.hostname",
        "-bad host",
        "letters",
    );
    check(
        error_for(&errors, "services.web.mounts[0].source"),
        "services.web.mounts[0].source",
        "data",
        "absolute",
    );
    error_for(&errors, "services.web.mounts[1].target");
    check(
        error_for(&errors, "services.web.image"),
        "services.web.image",
        "busybox@sha256:00",
        "digest references",
    );
    let errors = invalid(&backup_with("user: \"\"\nimage: \"a b\""));
    error_for(&errors, "jobs.backup.user");
    error_for(&errors, "jobs.backup.image");
    let e = read_error(&web_with(
        "mounts: [{source: /a, target: /b, readonly: true}]",
    ));
    check(
        &e,
        "services.web.mounts[0].readonly",
        "\"readonly\"",
        "unknown field",
    );
}

#[test]
fn a_container_service_and_job_with_every_new_field_is_valid() {
    let yaml = "services:\n  web:\n    image: busybox:test\n    command: [sh, -c, 'sleep 1']\n    runtime: oci\n    pull_policy: never\n    resources: {memory: 32Mi, cpus: 0.5, pids: 64}\n    user: \"1000:1000\"\n    hostname: web\n    mounts: [{source: /srv, target: /srv, read_only: true}]\njobs:\n  report:\n    image: busybox:test\n    runtime: process\n    resources: {memory: 1GiB}\n";
    let d = Deployment::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    d.validate().unwrap_or_else(|e| panic!("{e}"));
    let web = &d.services["web"];
    assert_eq!(web.resources.memory.unwrap().as_u64(), 32 * 1024 * 1024);
    assert_eq!(web.runtime, Some(arbor::runtime::RuntimeKind::Oci));
    assert!(web.mounts[0].read_only);
}

#[test]
fn a_name_too_long_for_a_yaml_key_is_explained_not_only_called_a_missing_mapping() {
    let text = format!(
        "services:\n  {}:\n    command: [sleep, \"1\"]\n",
        "a".repeat(5000)
    );
    let errors = arbor::Deployment::from_yaml(&text).unwrap_err();
    let shown = errors.to_string();
    assert!(
        shown.contains("a key longer than 1024 characters is not a key in YAML"),
        "{shown}"
    );
    assert!(shown.len() < 1000, "the value is cut: {}", shown.len());
}
