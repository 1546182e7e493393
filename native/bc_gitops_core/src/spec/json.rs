//! JSON specs: read with serde_json and turned into the same term tree that
//! term files give, so that one validator serves both formats.
//!
//! Strings become binaries, `true`/`false`/`null` become atoms, objects
//! become maps with binary keys. Names and enum values are recognised from
//! text by the validator; env keys become atoms only once validated.

use crate::term::{Spanned, Term};
use num_bigint::BigInt;
use serde_json::Value;

/// JSON values carry no position: line 0 means "unknown".
const NO_LINE: u32 = 0;

/// Parses `src`. On a syntax error: the line and serde_json's message.
pub(super) fn parse_json(src: &str) -> Result<Spanned, (u32, String)> {
    let value: Value = serde_json::from_str(src).map_err(|e| {
        let line = u32::try_from(e.line()).unwrap_or(u32::MAX);
        (line, e.to_string())
    })?;
    Ok(to_term(&value))
}

fn to_term(value: &Value) -> Spanned {
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
