//! Env files and masked values.

use std::{collections::BTreeMap, fs, path::PathBuf};

use arbor::store::{MASK, StoreError, mask_env, read_env_files};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn env_files_are_read_with_comments_export_and_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "app.env",
        r#"
# a comment
   # an indented comment

PLAIN=value
export EXPORTED=yes
SPACED = around the equals sign  
EMPTY=
INLINE=before # a comment
HASH=a#b
SINGLE='$NOT expanded \n # kept'  # a comment
DOUBLE="tab\there \"quoted\" \\ \$HOME # kept"   # a comment
EQUALS=a=b=c
export_NAME=not an export
dotted.key=1
"#,
    );
    let env = read_env_files(&[path]).unwrap();
    assert_eq!(
        env,
        map(&[
            ("PLAIN", "value"),
            ("EXPORTED", "yes"),
            ("SPACED", "around the equals sign"),
            ("EMPTY", ""),
            ("INLINE", "before"),
            ("HASH", "a#b"),
            ("SINGLE", r"$NOT expanded \n # kept"),
            ("DOUBLE", "tab\there \"quoted\" \\ $HOME # kept"),
            ("EQUALS", "a=b=c"),
            ("export_NAME", "not an export"),
            ("dotted.key", "1"),
        ])
    );
}

#[test]
fn later_env_files_win_over_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.env", "A=1\nB=1\n");
    let b = write(&dir, "b.env", "B=2\nC=2\n");
    assert_eq!(
        read_env_files(&[a, b]).unwrap(),
        map(&[("A", "1"), ("B", "2"), ("C", "2")])
    );
    assert!(read_env_files(&[]).unwrap().is_empty());
}

#[test]
fn env_file_errors_name_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("OK=1\n\n# c\nno equals sign\n", 4, "expected KEY=VALUE"),
        ("OK=1\n1BAD=x\n", 2, "invalid variable name of 4 characters"),
        ("A B=x\n", 1, "invalid variable name of 3 characters"),
        ("=x\n", 1, "invalid variable name of 0 characters"),
        ("A=1\nQ=\"open\n", 2, "unterminated double quote"),
        ("Q='open\n", 1, "unterminated single quote"),
        ("Q='a' b\n", 1, "unexpected text after the quoted value"),
    ];
    for (i, (text, line, message)) in cases.into_iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.env"), text);
        let err = read_env_files(std::slice::from_ref(&path)).unwrap_err();
        assert!(
            matches!(&err, StoreError::EnvFile { path: p, line: l, .. } if *p == path && *l == line),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "failed to parse env file {}: line {line}: {message}",
                path.display()
            )),
            "{shown}"
        );
        // The file's content is never quoted back (it may be a secret).
        for word in ["equals", "1BAD", "A B", "open", "'a' b"] {
            assert!(!shown.contains(word), "{shown}");
        }
    }
    let bytes = dir.path().join("latin1.env");
    fs::write(&bytes, b"A=1\nB=caf\xe9\n").unwrap();
    let err = read_env_files(std::slice::from_ref(&bytes)).unwrap_err();
    assert!(
        matches!(err, StoreError::EnvFile { line: 2, .. }),
        "{err:?}"
    );

    let missing = dir.path().join("missing.env");
    let err = read_env_files(std::slice::from_ref(&missing)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("failed to read {}", missing.display()))
    );
}

#[test]
fn masked_keys_show_stars_and_the_rest_is_unchanged() {
    let env = map(&[("TOKEN", "s3cret"), ("USER", "me"), ("PASSWORD", "hunter2")]);
    let masked = mask_env(
        &env,
        &[
            "TOKEN".to_owned(),
            "PASSWORD".to_owned(),
            "ABSENT".to_owned(),
        ],
    );
    assert_eq!(
        masked,
        map(&[("TOKEN", MASK), ("USER", "me"), ("PASSWORD", "***")])
    );
    assert_eq!(mask_env(&env, &[]), env);
}
