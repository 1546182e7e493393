//! JSON specs: read with serde_json and turned into the term tree of
//! [`super::tree`], so that one validator serves every format.

use super::tree::{self, ReadError};
use crate::term::{Spanned, Term};
use crate::term_parse::MAX_DEPTH;
use num_bigint::BigInt;
use serde_json::Value;

/// JSON values carry no position: line 0 means "unknown".
const NO_LINE: u32 = 0;

/// Parses `src`. A syntax error carries serde_json's line and message.
pub fn parse_json(src: &str) -> Result<Spanned, ReadError> {
    // serde_json itself stops at 128 levels; the tree stops at MAX_DEPTH.
    let value: Value = serde_json::from_str(src)
        .map_err(|e| ReadError::syntax(Some(tree::line(e.line())), e.to_string()))?;
    to_term(&value, 0).ok_or_else(|| ReadError::too_deep(None))
}

/// `None` when `value` nests deeper than [`MAX_DEPTH`].
fn to_term(value: &Value, depth: usize) -> Option<Spanned> {
    let nested = |v: &Value| to_term(v, depth + 1);
    let term = match value {
        Value::Null => tree::null(),
        Value::Bool(b) => tree::boolean(*b),
        Value::Number(n) => number(n),
        Value::String(s) => tree::text(s),
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => return None,
        Value::Array(items) => Term::list(items.iter().map(nested).collect::<Option<_>>()?),
        Value::Object(map) => Term::Map(
            map.iter()
                .map(|(k, v)| Some((Spanned::new(NO_LINE, tree::text(k)), nested(v)?)))
                .collect::<Option<_>>()?,
        ),
    };
    Some(Spanned::new(NO_LINE, term))
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn nesting_stops_at_the_term_readers_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_json(&nested(MAX_DEPTH)).is_ok());
        let e = parse_json(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e:?}");
        // serde_json's own limit, further down, is a syntax error with a line.
        let e = parse_json(&format!("\n{}", nested(1000))).unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
