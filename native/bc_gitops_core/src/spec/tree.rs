//! What the JSON and YAML readers share: the term tree they build (the one
//! term files give, so that one validator serves every format) and how they
//! report a file they cannot read.
//!
//! Text formats have no atoms: strings become binaries, `null`, `true` and
//! `false` become those atoms, objects and mappings become maps with binary
//! keys. Names and enum values are recognised from text by the validator;
//! env keys become atoms only once validated.

use super::model::ErrorKind;
use crate::term::Term;
use crate::term_parse::MAX_DEPTH;

/// Why a spec file's text gives no term tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    /// [`ErrorKind::Syntax`], or [`ErrorKind::NotAMap`] when the file holds
    /// no document or more than one.
    pub kind: ErrorKind,
    /// 1-based, when known.
    pub line: Option<u32>,
    pub message: String,
}

impl ReadError {
    pub(super) fn syntax(line: Option<u32>, message: impl Into<String>) -> Self {
        ReadError {
            kind: ErrorKind::Syntax,
            line,
            message: message.into(),
        }
    }

    /// Nesting deeper than [`MAX_DEPTH`], the term reader's limit: the NIF
    /// encodes a tree recursively, on a dirty scheduler's small stack.
    pub(super) fn too_deep(line: Option<u32>) -> Self {
        let message = format!("values are nested too deeply (more than {MAX_DEPTH} levels)");
        ReadError::syntax(line, message)
    }
}

/// JSON `null`, YAML `null` and `~`.
pub(super) fn null() -> Term {
    Term::Atom("null".to_string())
}

pub(super) fn boolean(value: bool) -> Term {
    Term::Atom(value.to_string())
}

/// A string (or a map key) as a binary.
pub(super) fn text(value: &str) -> Term {
    Term::Binary(value.as_bytes().to_vec())
}

/// A 1-based line from a reader's count.
pub(super) fn line(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
