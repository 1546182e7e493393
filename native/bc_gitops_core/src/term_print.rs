//! Writing terms back as Erlang source text.
//!
//! `Display` for [`Term`] prints valid Erlang syntax that
//! [`parse_terms`](crate::term_parse::parse_terms) and `file:consult/1` read
//! back as an equal term (add the closing `.` yourself). The output is pure
//! ASCII: Erlang reads a file as Latin-1 when a `coding:` comment says so
//! (and printed atoms may hold such text), so anything else could change
//! meaning. Strings have no type of their own in the model, so they print
//! as lists of integers.
//!
//! Floats that are not finite have no Erlang syntax: infinities print as
//! `1.0e999` and NaN as `0.0/0.0`, both refused when read back, rather than
//! as some other term.

use crate::term::{Spanned, Term};
use crate::term_parse::is_reserved_word;
use std::fmt::{self, Display, Formatter, Write};

impl Display for Term {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Term::Atom(name) => write_atom(f, name),
            Term::Int(value) => write!(f, "{value}"),
            Term::BigInt(value) => write!(f, "{value}"),
            Term::Float(value) => write_float(f, *value),
            Term::Binary(bytes) => write_binary(f, bytes),
            Term::List { items, tail } => write_list(f, items, tail.as_deref()),
            Term::Tuple(items) => {
                f.write_char('{')?;
                write_joined(f, items)?;
                f.write_char('}')
            }
            Term::Map(entries) => write_map(f, entries),
        }
    }
}

impl Display for Spanned {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.term.fmt(f)
    }
}

fn write_joined(f: &mut Formatter<'_>, items: &[Spanned]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_char(',')?;
        }
        item.fmt(f)?;
    }
    Ok(())
}

fn write_list(f: &mut Formatter<'_>, items: &[Spanned], tail: Option<&Spanned>) -> fmt::Result {
    match tail {
        // `[ | T]` is no syntax; a list with no items before its tail is
        // just the tail.
        Some(tail) if items.is_empty() => tail.fmt(f),
        Some(tail) => {
            f.write_char('[')?;
            write_joined(f, items)?;
            f.write_char('|')?;
            tail.fmt(f)?;
            f.write_char(']')
        }
        None => {
            f.write_char('[')?;
            write_joined(f, items)?;
            f.write_char(']')
        }
    }
}

fn write_map(f: &mut Formatter<'_>, entries: &[(Spanned, Spanned)]) -> fmt::Result {
    f.write_str("#{")?;
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            f.write_char(',')?;
        }
        write!(f, "{key} => {value}")?;
    }
    f.write_char('}')
}

/// Printable ASCII binaries as `<<"text">>`, others as bytes.
fn write_binary(f: &mut Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    if bytes.is_empty() {
        return f.write_str("<<>>");
    }
    f.write_str("<<")?;
    if bytes.iter().all(|b| (0x20..=0x7E).contains(b)) {
        f.write_char('"')?;
        for &byte in bytes {
            if byte == b'"' || byte == b'\\' {
                f.write_char('\\')?;
            }
            f.write_char(char::from(byte))?;
        }
        f.write_char('"')?;
    } else {
        for (i, byte) in bytes.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{byte}")?;
        }
    }
    f.write_str(">>")
}

/// The shortest text that reads back as the same float. Rust's `{:?}`
/// gives that, but Erlang wants a `.` in the mantissa: `1e20` must be
/// `1.0e20`.
fn write_float(f: &mut Formatter<'_>, value: f64) -> fmt::Result {
    if value.is_nan() {
        return f.write_str("0.0/0.0");
    }
    if value.is_infinite() {
        let sign = if value < 0.0 { "-" } else { "" };
        return write!(f, "{sign}1.0e999");
    }
    let text = format!("{value:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !mantissa.contains('.') => {
            write!(f, "{mantissa}.0e{exponent}")
        }
        _ => f.write_str(&text),
    }
}

/// An atom, quoted when Erlang needs it, in the style of `io_lib:write_atom`
/// but ASCII only (so `'\351'` where Erlang writes `é`). `maybe` and `else`
/// are quoted too: they are atoms on OTP 25 but keywords on later releases.
fn write_atom(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    if !atom_needs_quotes(name) {
        return f.write_str(name);
    }
    f.write_char('\'')?;
    for c in name.chars() {
        write_quoted_char(f, c)?;
    }
    f.write_char('\'')
}

fn atom_needs_quotes(name: &str) -> bool {
    let mut chars = name.chars();
    let plain_start = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let plain_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    !plain_start || !plain_rest || is_reserved_word(name) || name == "maybe" || name == "else"
}

/// One character inside quotes, escaped as `io_lib` does it, but ASCII
/// only: printable ASCII as is, known controls by name, anything else up
/// to U+00FF in octal, and above that as `\x{...}`.
fn write_quoted_char(f: &mut Formatter<'_>, c: char) -> fmt::Result {
    let code = u32::from(c);
    match c {
        '\'' | '\\' => write!(f, "\\{c}"),
        ' '..='~' => f.write_char(c),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\u{0B}' => f.write_str("\\v"),
        '\u{08}' => f.write_str("\\b"),
        '\u{0C}' => f.write_str("\\f"),
        '\u{1B}' => f.write_str("\\e"),
        '\u{7F}' => f.write_str("\\d"),
        _ if code > 0xFF => write!(f, "\\x{{{code:X}}}"),
        _ => write!(f, "\\{code:03o}"),
    }
}
