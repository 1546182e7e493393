//! JSON from outside (webhook payloads, spec files) as the same term tree
//! that term files give, read with serde_json.
//!
//! Strings become binaries, `true`/`false`/`null` become atoms, objects
//! become maps with binary keys: no atom is ever made from the input's
//! text. serde_json refuses nesting deeper than 128, so a hostile document
//! cannot exhaust the stack.

use crate::term::{Spanned, Term};
use num_bigint::BigInt;
use serde_json::Value;
use thiserror::Error;

/// JSON values carry no position: line 0 means "unknown".
const NO_LINE: u32 = 0;

/// Why a document is not JSON, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: {message}")]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses one JSON document (UTF-8; trailing whitespace only).
pub fn decode(bytes: &[u8]) -> Result<Spanned, JsonError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| JsonError {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Ok(to_term(&value))
}

/// The term for a parsed JSON value.
pub(crate) fn to_term(value: &Value) -> Spanned {
    let term = match value {
        Value::Null => Term::Atom("null".to_string()),
        Value::Bool(b) => Term::Atom(b.to_string()),
        Value::Number(n) => number(n),
        Value::String(s) => Term::Binary(s.as_bytes().to_vec()),
        Value::Array(items) => Term::list(items.iter().map(to_term).collect()),
        Value::Object(map) => Term::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Spanned::new(NO_LINE, Term::Binary(k.as_bytes().to_vec())),
                        to_term(v),
                    )
                })
                .collect(),
        ),
    };
    Spanned::new(NO_LINE, term)
}

fn number(n: &serde_json::Number) -> Term {
    if let Some(i) = n.as_i64() {
        Term::Int(i)
    } else if let Some(u) = n.as_u64() {
        Term::int(BigInt::from(u))
    } else {
        // serde_json only yields finite floats.
        Term::Float(n.as_f64().unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(s: &str) -> Spanned {
        Spanned::new(0, Term::Binary(s.as_bytes().to_vec()))
    }

    #[test]
    fn objects_strings_and_literals() {
        let t =
            decode(br#"{"ref": "refs/heads/main", "n": [1, -2, 1.5, true, null]}"#).map(|s| s.term);
        let want = Term::Map(vec![
            (
                bin("n"),
                Spanned::new(
                    0,
                    Term::list(vec![
                        Spanned::new(0, Term::Int(1)),
                        Spanned::new(0, Term::Int(-2)),
                        Spanned::new(0, Term::Float(1.5)),
                        Spanned::new(0, Term::Atom("true".into())),
                        Spanned::new(0, Term::Atom("null".into())),
                    ]),
                ),
            ),
            (bin("ref"), bin("refs/heads/main")),
        ]);
        assert_eq!(t, Ok(want));
    }

    #[test]
    fn errors_say_where() {
        let e = decode(b"{\n  \"ref\": }").err();
        assert!(
            matches!(
                e,
                Some(JsonError {
                    line: 2,
                    column: 10,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(decode(b"").is_err());
        assert!(decode(b"{} trailing").is_err());
        assert!(decode(b"\"\xff\"").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn big_integers_stay_exact() {
        let t = decode(b"18446744073709551615").map(|s| s.term);
        assert_eq!(t, Ok(Term::int(BigInt::from(u64::MAX))));
    }
}
