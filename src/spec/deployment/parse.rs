//! Reading a deployment from YAML: the parser's errors turned into
//! [`SpecError`]s that name the field path, the value as written and where
//! it is, and the `jobs` map whose keys are the jobs' names.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserializer, Serialize, Serializer,
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    ser::SerializeMap,
};
use serde_saphyr::{
    DefaultMessageFormatter, Error as YamlError, Location, MessageFormatter, budget::BudgetBreach,
};

use crate::spec::{JobSpec, SpecError};

/// The longest value quoted in an error.
const MAX_QUOTED: usize = 80;

/// Parses `text` as one YAML document into `T`. `source` names the file in
/// locations (`node.yaml:5:15`); without it they read `line 5, column 15`.
pub(super) fn from_yaml<T: de::DeserializeOwned>(
    text: &str,
    source: Option<&str>,
) -> Result<T, SpecError> {
    let mut path = None;
    // Duplicate keys are errors (the default); snippets are not wanted: the
    // error names the field and the line itself. The default budget bounds
    // nesting, aliases and size.
    let options = serde_saphyr::options! { with_snippet: false };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| translate(&e, path.as_deref(), text, source))
}

/// A name written as a string. YAML reads a plain `42` or `true` as a
/// number or a boolean, and serde-saphyr would turn it into the string
/// `"42"` silently; a name that is not text is more likely a slip (a
/// value where a name was meant), so it is refused and the error says how
/// to write it: `name: "42"`.
pub(super) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(TextName { optional: false })?
        .ok_or_else(|| de::Error::invalid_type(de::Unexpected::Unit, &TextName { optional: false }))
}

/// [`name`] for an optional field: `null` is none.
pub(super) fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(TextName { optional: true })
}

struct TextName {
    optional: bool,
}

impl Visitor<'_> for TextName {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string (quote a name that looks like a number or a boolean: \"42\")")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.optional {
            Ok(None)
        } else {
            Err(E::invalid_type(de::Unexpected::Unit, &self))
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
}

/// One parser error as a [`SpecError`]: the field is the path the
/// deserializer had reached, the value the text at the error's location.
fn translate(err: &YamlError, path: Option<&str>, text: &str, source: Option<&str>) -> SpecError {
    let mut inner = err.without_snippet();
    // An error inside an alias's expansion: report the original error.
    while let YamlError::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let location = inner.location();
    let written = location.and_then(|l| token_at(text, l));
    // `?` stands for a key the deserializer had not reached.
    let mut field = path.unwrap_or_default().trim_end_matches('?');
    field = field.trim_end_matches('.');
    let mut field = field.to_owned();
    let (value, message) = match inner {
        YamlError::InvalidScalar { ty, .. } => (
            written,
            format!("invalid value: expected {}", describe_scalar(ty)),
        ),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (
            Some(unexpected_value(unexpected)),
            format!("invalid type: expected {expected}"),
        ),
        YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => (
            Some(unexpected_value(unexpected)),
            format!("invalid value: expected {}", describe_expected(expected)),
        ),
        YamlError::SerdeUnknownField {
            field: name,
            expected,
            ..
        } => {
            // A job's name is its key: do not offer `name`.
            let in_job = field.starts_with("jobs.");
            let expected: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|f| !(in_job && *f == "name"))
                .collect();
            (
                Some(quote(name)),
                format!("unknown field, expected one of: {}", expected.join(", ")),
            )
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            Some(quote(variant)),
            format!("unknown value, expected one of: {}", expected.join(", ")),
        ),
        YamlError::SerdeMissingField { field: name, .. } => {
            (Some("nothing".into()), format!("missing field `{name}`"))
        }
        YamlError::NullIntoString { .. } => (
            Some(written.unwrap_or_else(|| "nothing".into())),
            "invalid type: expected a string, found nothing (null); quote it (\"\") for an \
             empty string"
                .into(),
        ),
        YamlError::DuplicateMappingKey { key, .. } => (
            key.as_deref().map(quote).or(written),
            "duplicate key: each name may appear once".into(),
        ),
        YamlError::Budget { breach, .. } => {
            (Some("the whole file".into()), describe_breach(breach))
        }
        YamlError::MultipleDocuments { .. } => (
            Some("---".into()),
            "a deployment is one YAML document; found a second one".into(),
        ),
        other => {
            let message = sanitize(&DefaultMessageFormatter.format_message(other));
            let message = match message.as_str() {
                "expected mapping start" => {
                    "invalid type: expected a mapping (`key: value` lines or `{...}`)".to_owned()
                }
                "expected sequence start" => {
                    "invalid type: expected a list (`[a, b]` or `- a` lines)".to_owned()
                }
                "expected string scalar" => "invalid type: expected a string".to_owned(),
                _ => message,
            };
            if field.starts_with("jobs.") && message.contains("duplicate field `name`") {
                field.push_str(".name");
                (
                    Some("name".into()),
                    "not allowed: a job is named by its key under `jobs`".into(),
                )
            } else {
                let line = location.and_then(|l| line_at(text, l));
                // YAML reads a key of more than 1024 characters as no key
                // at all: say so rather than only "expected a mapping".
                let long_key = location
                    .and_then(|l| usize::try_from(l.line()).ok()?.checked_sub(1))
                    .and_then(|i| text.lines().nth(i))
                    .and_then(|l| l.split_once(':'))
                    .is_some_and(|(k, _)| k.trim().chars().count() > 1024);
                let message = if long_key {
                    format!(
                        "{message}: a key longer than 1024 characters is not a key in YAML (names are at most {} characters)",
                        crate::spec::MAX_NAME_LEN
                    )
                } else {
                    message
                };
                (written.or(line), message)
            }
        }
    };
    if field.is_empty() {
        field = "spec".into();
    }
    let message = match location.filter(|l| l.line() > 0) {
        Some(l) => match source {
            Some(file) => format!("{message}, at {file}:{}:{}", l.line(), l.column()),
            None => format!("{message}, at line {}, column {}", l.line(), l.column()),
        },
        None => message,
    };
    SpecError::new(field, value.unwrap_or_else(|| "nothing".into()), message)
}

/// A parser limit (serde-saphyr's default budget, which bounds what a
/// hostile file can cost) in words, with the limit.
fn describe_breach(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "too many aliases: {aliases} uses (`*name`) of {anchors} anchor(s) (`&name`); \
             each anchor may be used at most 10 times once a file has 100 aliases"
        ),
        BudgetBreach::Aliases { aliases } => {
            format!("too many aliases (`*name`): more than {aliases}, the limit is 50000")
        }
        BudgetBreach::Anchors { anchors } => {
            format!("too many anchors (`&name`): more than {anchors}, the limit is 50000")
        }
        BudgetBreach::Depth { depth } => {
            format!("nested too deeply: {depth} levels of lists and mappings, the limit is 64")
        }
        BudgetBreach::Nodes { nodes } => {
            format!("too many values: more than {nodes}, the limit is 250000")
        }
        BudgetBreach::Events { events } => {
            format!("too large: more than {events} YAML events, the limit is 1000000")
        }
        BudgetBreach::MergeKeys { merge_keys } => {
            format!("too many merge keys (`<<`): {merge_keys}, the limit is 10000")
        }
        BudgetBreach::Documents { documents } => {
            format!("too many YAML documents: {documents}; a deployment is one document")
        }
        other => format!("the file exceeds a YAML parser limit ({other:?})"),
    }
}

/// The text the error's span covers, quoted.
fn token_at(text: &str, l: Location) -> Option<String> {
    let span = l.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let token = text.get(start..start.checked_add(len)?)?.trim();
    (!token.is_empty()).then(|| quote(token))
}

/// The line the error is on, quoted (for syntax errors, whose span is empty).
fn line_at(text: &str, l: Location) -> Option<String> {
    let index = usize::try_from(l.line()).ok()?.checked_sub(1)?;
    let line = text.lines().nth(index)?.trim();
    (!line.is_empty()).then(|| quote(line))
}

/// serde's description of a value (`string "10"`, `integer `3``) as a value.
fn unexpected_value(unexpected: &str) -> String {
    if unexpected == "unit value" {
        return "nothing (null)".into();
    }
    match unexpected.strip_prefix("string ") {
        Some(s) if s.starts_with('"') => s.to_owned(),
        _ => unexpected.to_owned(),
    }
}

/// Control characters escaped, everything else as is.
fn sanitize(message: &str) -> String {
    message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// A value as written, quoted unless it already is, and cut when long.
fn quote(token: &str) -> String {
    let token: String = if token.chars().count() > MAX_QUOTED {
        token
            .chars()
            .take(MAX_QUOTED)
            .chain("...".chars())
            .collect()
    } else {
        token.to_owned()
    };
    if token.starts_with(['"', '\'']) && !token.contains(char::is_control) {
        token
    } else {
        format!("{token:?}")
    }
}

/// serde's `expected` of the value types the spec uses, with an example.
fn describe_expected(expected: &str) -> &str {
    match expected {
        "a duration" => "a duration such as 30s, 5m or 1h 30m (a number needs a unit)",
        "parsable string" => "a size such as 512KiB or 1MiB",
        other => other,
    }
}

fn describe_scalar(ty: &str) -> String {
    match ty {
        "u8" => format!("a whole number from 0 to {}", u8::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" | "u128" | "usize" => "a whole number >= 0".into(),
        "i32" => format!("an integer from {} to {}", i32::MIN, i32::MAX),
        "i8" | "i16" | "i64" | "i128" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "bool" => "true or false".into(),
        other => format!("a {other}"),
    }
}

// ---------------------------------------------------------------------------
// The `jobs` map: the key is the job's name.
//
// Each value is read as a `JobSpec` (its own serde, unknown fields refused)
// with a `name` entry slipped in front of the user's fields, so a `name`
// written inside a job is a duplicate field and refused.

/// Deserializes `jobs:`: a map of name to job body.
pub(super) fn deserialize_jobs<'de, D>(de: D) -> Result<BTreeMap<String, JobSpec>, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_map(JobsVisitor)
}

struct JobsVisitor;

impl<'de> Visitor<'de> for JobsVisitor {
    type Value = BTreeMap<String, JobSpec>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of job names to jobs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut jobs = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let job = map.next_value_seed(NamedJob(name.clone()))?;
            if jobs.insert(name.clone(), job).is_some() {
                return Err(de::Error::custom(format!("duplicate job {name:?}")));
            }
        }
        Ok(jobs)
    }
}

/// Reads one job body and names it.
struct NamedJob(String);

impl<'de> DeserializeSeed<'de> for NamedJob {
    type Value = JobSpec;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<JobSpec, D::Error> {
        serde::Deserialize::deserialize(WithName {
            inner: de,
            name: self.0,
        })
    }
}

/// A deserializer that adds `name: <name>` to the mapping it reads.
struct WithName<D> {
    inner: D,
    name: String,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for WithName<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(NameVisitor {
            visitor,
            name: self.name,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        struct_name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(
            struct_name,
            fields,
            NameVisitor {
                visitor,
                name: self.name,
            },
        )
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct NameVisitor<V> {
    visitor: V,
    name: String,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for NameVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a job (a mapping of its fields)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(NameFirst {
            inner: map,
            name: Some(self.name),
            naming: false,
        })
    }
}

/// The user's mapping with `name` in front.
struct NameFirst<A> {
    inner: A,
    name: Option<String>,
    /// True between the `name` key and its value.
    naming: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for NameFirst<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if self.name.is_some() && !self.naming {
            self.naming = true;
            let key: de::value::StrDeserializer<'_, A::Error> = "name".into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if self.naming
            && let Some(name) = self.name.take()
        {
            self.naming = false;
            let value: de::value::StringDeserializer<A::Error> = name.into_deserializer();
            return seed.deserialize(value);
        }
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner
            .size_hint()
            .map(|n| n + usize::from(self.name.is_some()))
    }
}

/// Serializes `jobs:` as a map of name to job body, without the `name`
/// field (the key is the name). Fields come out in alphabetical order.
pub(super) fn serialize_jobs<S: Serializer>(
    jobs: &BTreeMap<String, JobSpec>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    let mut map = ser.serialize_map(Some(jobs.len()))?;
    for (name, job) in jobs {
        let mut body = serde_json::to_value(job).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = body.as_object_mut() {
            fields.remove("name");
        }
        map.serialize_entry(name, &body)?;
    }
    map.end()
}

/// A value that serializes as YAML.
pub(super) fn to_yaml<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}
