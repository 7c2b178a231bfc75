//! Why a body was refused: each violation names where (a JSON pointer, or an XML element path
//! and line) and what is wrong.

use std::fmt;

/// The form a body was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// JSON: locations are JSON pointers (`/persone/0/persona/codice_fiscale`).
    Json,
    /// XML: locations are element paths (`/dichiarazione/persone[1]/persona/codice_fiscale`),
    /// with the line.
    Xml,
}

/// One thing wrong with a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where: a JSON pointer for JSON (empty for the whole document), an element path for XML
    /// (positions from 1 for repeated elements).
    pub at: String,
    /// The line in an XML body, when known.
    pub line: Option<u32>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.at.is_empty() { "/" } else { &self.at };
        write!(f, "{at}")?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// The most violations one refusal lists.
pub(crate) const MAX_VIOLATIONS: usize = 10;

/// Why the catalog refused a body or a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The catalog has no message for this service and action.
    #[error("the catalog has no schema for `{service}` / `{action}`")]
    UnknownMessage {
        /// The service asked for.
        service: String,
        /// The action asked for.
        action: String,
    },
    /// The body breaks its schema or a rule of its types.
    #[error("the {} body of `{service}` / `{action}` is invalid: {}", match form { Form::Json => "JSON", Form::Xml => "XML" }, ViolationList(violations))]
    Invalid {
        /// The service.
        service: &'static str,
        /// The action.
        action: &'static str,
        /// JSON or XML.
        form: Form,
        /// What is wrong, the first first; never empty, at most ten.
        violations: Vec<Violation>,
    },
    /// A value cannot be written in the other form (a character XML 1.0 cannot hold).
    #[error("`{service}` / `{action}` cannot be written as {}: {}", match form { Form::Json => "JSON", Form::Xml => "XML" }, ViolationList(std::slice::from_ref(violation)))]
    Unrepresentable {
        /// The service.
        service: &'static str,
        /// The action.
        action: &'static str,
        /// The form it could not be written in.
        form: Form,
        /// Where and why.
        violation: Violation,
    },
    /// A schema of the catalog could not be compiled: a defect of this crate, not of the body.
    #[error("the schema of `{service}` could not be compiled: {reason}")]
    Schema {
        /// The service.
        service: String,
        /// What the compiler said.
        reason: String,
    },
}

impl Error {
    /// True when the body (or the value) is at fault, and sending it again cannot succeed.
    #[must_use]
    pub fn is_invalid_body(&self) -> bool {
        matches!(self, Error::Invalid { .. } | Error::Unrepresentable { .. })
    }

    /// The violations, first first; empty for errors that are not about a body.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        match self {
            Error::Invalid { violations, .. } => violations,
            Error::Unrepresentable { violation, .. } => std::slice::from_ref(violation),
            _ => &[],
        }
    }
}

/// Formats violations: one inline, several separated by `; `.
struct ViolationList<'a>(&'a [Violation]);

impl fmt::Display for ViolationList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}
