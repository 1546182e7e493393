//! Encrypted env values in specs. The value of an env key may be an armored
//! age file:
//!
//! - in term specs, `{age, <<"-----BEGIN AGE ENCRYPTED FILE-----...">>}` (a
//!   tuple `{age, Binary}` whose binary does not hold an age armor line is
//!   a plain value, as it always was);
//! - in JSON (and any format read into maps with binary keys), an object
//!   with the one key `"$age"` and the armored text as its string.
//!
//! Either becomes the term `{age, Armored}` in `#app_spec{}.env`, checked to
//! be well-formed ([`crate::secret::check_armored`]) but not decrypted.
//! Only the value of an env key may be encrypted: one deeper inside a value
//! is an error, rather than handed to the app as ciphertext.

use super::validate::Format;
use crate::secret;
use crate::term::{Spanned, Term};

/// The JSON key that marks an encrypted value.
const JSON_KEY: &[u8] = b"$age";
/// What marks a binary as meant to be an armored age file.
const ARMOR_MARK: &[u8] = b"BEGIN AGE ENCRYPTED FILE";

/// The armored text of `value` if it is an encrypted value (by its form),
/// with the node to report a problem at.
fn armored_of(value: &Spanned, format: Format) -> Option<Result<&[u8], (&Spanned, String)>> {
    match (&value.term, format) {
        (Term::Tuple(items), Format::Terms) => match items.as_slice() {
            [tag, inner] if matches!(&tag.term, Term::Atom(a) if a == "age") => match &inner.term {
                Term::Binary(bytes) if contains(bytes, ARMOR_MARK) => Some(Ok(bytes)),
                _ => None,
            },
            _ => None,
        },
        (Term::Map(entries), f) if f != Format::Terms => match entries.as_slice() {
            [(key, inner)] if matches!(&key.term, Term::Binary(k) if k == JSON_KEY) => {
                match &inner.term {
                    Term::Binary(bytes) => Some(Ok(bytes)),
                    _ => Some(Err((inner, "\"$age\" must be a string".to_string()))),
                }
            }
            _ => None,
        },
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An env key's value as the spec keeps it: `Ok(None)` for a plain value,
/// `Ok(Some({age, Armored}))` for a well-formed encrypted one, else the
/// node and the message of the error.
pub(super) fn env_value(
    value: &Spanned,
    format: Format,
) -> Result<Option<Spanned>, (&Spanned, String)> {
    match armored_of(value, format) {
        None => match nested(value, format) {
            Some(inner) => Err((
                inner,
                "an encrypted value may only be the whole value of an env key".to_string(),
            )),
            None => Ok(None),
        },
        Some(Err(bad)) => Err(bad),
        Some(Ok(armored)) => match secret::check_armored(armored) {
            Ok(()) => Ok(Some(Spanned::new(
                value.line,
                Term::Tuple(vec![
                    Spanned::new(value.line, Term::Atom("age".to_string())),
                    Spanned::new(value.line, Term::Binary(armored.to_vec())),
                ]),
            ))),
            Err(e) => Err((value, e.to_string())),
        },
    }
}

/// An encrypted value below the top of `value`, if any.
fn nested(value: &Spanned, format: Format) -> Option<&Spanned> {
    let mut stack: Vec<&Spanned> = children(value);
    while let Some(node) = stack.pop() {
        if armored_of(node, format).is_some() {
            return Some(node);
        }
        stack.extend(children(node));
    }
    None
}

fn children(value: &Spanned) -> Vec<&Spanned> {
    match &value.term {
        Term::List { items, tail } => items
            .iter()
            .chain(tail.iter().map(|t| t.as_ref()))
            .collect(),
        Term::Tuple(items) => items.iter().collect(),
        Term::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}
