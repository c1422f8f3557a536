//! Validation errors for specs: every error names the field and the value.

use std::fmt;

/// One invalid field: where it is, what it holds, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} (got {value})")]
pub struct SpecError {
    /// Path of the field, e.g. `children[2].id` or `backoff.max`.
    pub field: String,
    /// The offending value as the user wrote it.
    pub value: String,
    /// What the value must satisfy.
    pub message: String,
}

impl SpecError {
    /// An error for `field` holding `value`.
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            message: message.into(),
        }
    }

    /// The same error under a parent path (`backoff.max` -> `flags.backoff.max`).
    pub fn within(mut self, parent: &str) -> Self {
        if self.field.is_empty() {
            parent.clone_into(&mut self.field);
        } else if !parent.is_empty() {
            let sep = if self.field.starts_with('[') { "" } else { "." };
            self.field = format!("{parent}{sep}{}", self.field);
        }
        self
    }
}

/// Every error found in one spec, in the order the fields appear.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// `Ok(())` when nothing was found.
    pub fn into_result(self) -> Result<(), SpecErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Adds the errors of a nested part under `parent`.
    pub fn extend_within(&mut self, parent: &str, errors: impl IntoIterator<Item = SpecError>) {
        self.0.extend(errors.into_iter().map(|e| e.within(parent)));
    }

    /// Adds one error.
    pub fn push(&mut self, error: SpecError) {
        self.0.push(error);
    }

    /// The errors, in order.
    pub fn iter(&self) -> impl Iterator<Item = &SpecError> {
        self.0.iter()
    }

    /// True when no error was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid spec ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        Self(vec![e])
    }
}
