//! Snapshots of `arbor --help` and of every subcommand's `--help`, so that
//! the documentation of the command line cannot drift unnoticed.
//!
//! The expected texts are `tests/cli_help/<command>.txt` (`arbor.txt`,
//! `arbor-run.txt`, `arbor-jobs-trigger.txt`, ...). After changing the
//! command line, regenerate them and review the difference:
//!
//! ```sh
//! SNAPSHOTS=overwrite cargo test --test cli_help
//! git diff tests/cli_help
//! ```
//!
//! A new subcommand without a snapshot fails
//! `every_subcommand_has_a_snapshot`: add it to [`COMMANDS`].

mod cli_support;

use std::path::PathBuf;

use cli_support::arbor_out;

/// Every command line whose help is kept.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["agent"],
    &["validate"],
    &["run"],
    &["status"],
    &["logs"],
    &["kill"],
    &["cancel"],
    &["list"],
    &["tree"],
    &["cluster"],
    &["cluster", "forget"],
    &["services"],
    &["jobs"],
    &["jobs", "trigger"],
    &["events"],
    &["supervise"],
    &["chaos"],
    &["image"],
    &["image", "import"],
    &["image", "ls"],
    &["image", "rm"],
    &["notify"],
    &["deploy"],
    &["services", "stop"],
    &["services", "start"],
    &["services", "restart"],
    &["services", "scale"],
    &["ui"],
];

fn snapshot_path(words: &[&str]) -> PathBuf {
    let mut name = String::from("arbor");
    for w in words {
        name.push('-');
        name.push_str(w);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli_help")
        .join(format!("{name}.txt"))
}

fn help(words: &[&str]) -> String {
    let mut args: Vec<&str> = words.to_vec();
    args.push("--help");
    let out = arbor_out(&args).expect(0);
    assert_eq!(out.stderr, "", "{args:?}");
    out.stdout
}

#[test]
fn help_texts_match_their_snapshots() {
    let overwrite = std::env::var("SNAPSHOTS").is_ok_and(|v| v == "overwrite");
    let mut drifted = Vec::new();
    for words in COMMANDS {
        let actual = help(words);
        let path = snapshot_path(words);
        if overwrite {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            let line = actual
                .lines()
                .zip(expected.lines().chain(std::iter::repeat("<missing>")))
                .position(|(a, e)| a != e)
                .map_or_else(
                    || "the line count".to_owned(),
                    |i| {
                        format!(
                            "line {}:\n  expected: {:?}\n  actual:   {:?}",
                            i + 1,
                            expected.lines().nth(i).unwrap_or("<missing>"),
                            actual.lines().nth(i).unwrap_or("<missing>")
                        )
                    },
                );
            drifted.push(format!(
                "arbor {} --help differs from {} at {line}",
                words.join(" "),
                path.display()
            ));
        }
    }
    assert!(
        drifted.is_empty(),
        "{}\n\nIf the change is intended: SNAPSHOTS=overwrite cargo test --test cli_help",
        drifted.join("\n")
    );
}

/// The names under `Commands:` in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_has_a_snapshot() {
    let mut missing = Vec::new();
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(words) = queue.pop() {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        if !COMMANDS.contains(&refs.as_slice()) {
            missing.push(words.join(" "));
        }
        for sub in subcommands(&help(&refs)) {
            let mut next = words.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(
        missing.is_empty(),
        "no help snapshot for: {missing:?} (add them to COMMANDS)"
    );
}
