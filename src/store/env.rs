//! Env files (`KEY=VALUE` lines) and the masking of secret values in
//! records.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use super::StoreError;

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Reads env files in order (a later file wins over an earlier one).
///
/// Each line is blank, a `#` comment, or `[export ]KEY=VALUE`. A value is
/// taken as is (trimmed, a ` #` comment after it dropped), or quoted:
/// `'...'` literally, `"..."` with the escapes `\n`, `\r`, `\t`, `\"`, `\\`
/// and `\$`. No `${VAR}` expansion, no values spanning lines. An error names
/// the file and the line.
pub fn read_env_files(paths: &[PathBuf]) -> Result<BTreeMap<String, String>, StoreError> {
    let mut env = BTreeMap::new();
    for path in paths {
        let text = fs::read(path).map_err(|e| StoreError::read(path, e))?;
        let text = String::from_utf8(text).map_err(|e| StoreError::EnvFile {
            path: path.clone(),
            line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            message: "not valid UTF-8".into(),
        })?;
        env.extend(parse_env(&text, path)?);
    }
    Ok(env)
}

/// Parses the text of an env file (see [`read_env_files`]); `path` is only
/// named in errors.
pub fn parse_env(text: &str, path: &Path) -> Result<BTreeMap<String, String>, StoreError> {
    let mut env = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let error = |message: String| StoreError::EnvFile {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((key, value)) = line.split_once('=') else {
            // Never quoted: the file may hold secrets (or not be an env
            // file at all).
            return Err(error(
                "expected KEY=VALUE: the line has no '=' (its content is not shown)".into(),
            ));
        };
        let key = key.trim_end();
        if !valid_key(key) {
            return Err(error(format!(
                "invalid variable name of {} characters (letters, digits, '_' and '.', not starting with a digit; its content is not shown)",
                key.chars().count()
            )));
        }
        let value = parse_value(value.trim_start()).map_err(error)?;
        env.insert(key.to_owned(), value);
    }
    Ok(env)
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn parse_value(v: &str) -> Result<String, String> {
    let (value, rest) = if let Some(body) = v.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or_else(|| "unterminated single quote".to_owned())?;
        (body[..end].to_owned(), &body[end + 1..])
    } else if let Some(body) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e @ ('"' | '\\' | '$' | '\''))) => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        let end = end.ok_or_else(|| "unterminated double quote".to_owned())?;
        (out, &body[end + 1..])
    } else {
        // Unquoted: up to a comment (a '#' after whitespace).
        let cut = v
            .char_indices()
            .find(|&(i, c)| c == '#' && i > 0 && v[..i].ends_with([' ', '\t']))
            .map_or(v.len(), |(i, _)| i);
        return Ok(v[..cut].trim_end().to_owned());
    };
    let rest = rest.trim_start();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err("unexpected text after the quoted value (its content is not shown)".into());
    }
    Ok(value)
}

/// `env` with the values of `mask` keys replaced by [`MASK`] (for records
/// and API output; the process gets the real values).
pub fn mask_env(env: &BTreeMap<String, String>, mask: &[String]) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| {
            let shown = if mask.iter().any(|m| m == k) {
                MASK.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}
