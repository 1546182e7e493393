//! JSON specs: read with serde_json and turned into the same term tree that
//! term files give, so that one validator serves both formats.
//!
//! Strings become binaries, `true`/`false`/`null` become atoms, objects
//! become maps with binary keys. Names and enum values are recognised from
//! text by the validator; env keys become atoms only once validated.

use crate::term::Spanned;
use serde_json::Value;

/// Parses `src`. On a syntax error: the line and serde_json's message.
pub(super) fn parse_json(src: &str) -> Result<Spanned, (u32, String)> {
    let value: Value = serde_json::from_str(src).map_err(|e| {
        let line = u32::try_from(e.line()).unwrap_or(u32::MAX);
        (line, e.to_string())
    })?;
    Ok(crate::json::to_term(&value))
}
