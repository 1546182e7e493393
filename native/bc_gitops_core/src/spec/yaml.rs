//! YAML specs (`app.yaml`, `app.yml`): read event by event with
//! saphyr-parser into the term tree of [`super::tree`], each node with the
//! line it starts on, so that the validator that serves term files and JSON
//! serves YAML too, with lines in its errors.
//!
//! Scalars follow the YAML 1.2 core schema, as JSON values map: `null`, `~`
//! and an empty value are the atom `null`; `true` and `false` (also
//! capitalised or upper case) are atoms; integers (decimal, `0o` octal,
//! `0x` hex) and floats are numbers; everything else, every quoted or block
//! scalar and every mapping key, is a binary. YAML 1.1's `yes`, `no`, `on`
//! and `off` are plain strings.
//!
//! Refused, each with its line, so that hostile input costs nothing:
//! - aliases (`*name`), never expanded: a few lines of aliases can stand for
//!   billions of nodes. Anchors alone are harmless and ignored.
//! - nesting deeper than [`MAX_DEPTH`] levels, the term reader's limit;
//! - tags other than the core schema's `!!str`, `!!int`, `!!float`,
//!   `!!bool`, `!!null`, `!!map` and `!!seq` (which are honoured);
//! - `.inf` and `.nan`, which Erlang floats cannot hold, floats out of
//!   range, and integers of more than [`MAX_INT_DIGITS`] digits (as in term
//!   files);
//! - a second document: a spec file holds exactly one.
//!
//! A key given twice keeps its later value, as in term files and JSON.
//!
//! [`MAX_INT_DIGITS`]: crate::term_parse::MAX_INT_DIGITS

use super::model::ErrorKind;
use super::tree::{self, ReadError};
use crate::term::{Spanned, Term};
use crate::term_parse::{bounded_int, MAX_DEPTH};
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

/// Parses `src`, which must hold exactly one YAML document.
pub fn parse_yaml(src: &str) -> Result<Spanned, ReadError> {
    let mut parser = Parser::new_from_str(src);
    let mut open: Vec<Collection> = Vec::new();
    let mut root: Option<Spanned> = None;
    let mut documents = 0usize;
    // At the end of the input the scanner counts one line more than the
    // file has (an implicit empty value, an unclosed bracket): such a node
    // or error is on the last line.
    let last_line = tree::line(line_count(src));
    let on_a_line = |n: usize| tree::line(n).min(last_line);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| scan_error(e, on_a_line))?;
        let line = on_a_line(span.start.line());
        let at = |message: String| ReadError::syntax(Some(line), message);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(ReadError {
                        kind: ErrorKind::NotAMap,
                        line: Some(line),
                        message:
                            "a spec file holds exactly one YAML document; a second starts here"
                                .to_string(),
                    });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(at(
                    "YAML aliases (*name) are not accepted: write the value out in full"
                        .to_string(),
                ))
            }
            Event::Scalar(value, style, _anchor, tag) => {
                // A key is text unless a tag says otherwise, as in JSON.
                let is_key = matches!(open.last(), Some(Collection::Map { key: None, .. }));
                let plain = style == ScalarStyle::Plain && !is_key;
                Spanned::new(line, scalar(&value, plain, tag.as_deref()).map_err(at)?)
            }
            Event::SequenceStart(_anchor, tag) => {
                open_collection(&mut open, false, tag.as_deref(), line)?;
                continue;
            }
            Event::MappingStart(_anchor, tag) => {
                open_collection(&mut open, true, tag.as_deref(), line)?;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(collection) => collection.finish(),
                // The parser balances its events; should it not, say so.
                None => return Err(at("unbalanced YAML collection".to_string())),
            },
        };
        match open.last_mut() {
            Some(collection) => collection.add(node),
            None => root = Some(node),
        }
    }
    root.ok_or_else(|| ReadError {
        kind: ErrorKind::NotAMap,
        line: None,
        message: "the file holds no YAML document".to_string(),
    })
}

/// The lines of `src` as YAML counts them, at least one: `\n`, `\r\n` and
/// a lone `\r` end a line.
fn line_count(src: &str) -> usize {
    let bytes = src.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    let unterminated = !src.ends_with(['\n', '\r']);
    (breaks + usize::from(unterminated)).max(1)
}

fn scan_error(e: saphyr_parser::ScanError, on_a_line: impl Fn(usize) -> u32) -> ReadError {
    let line = Some(on_a_line(e.marker().line()));
    // The scanner reads ahead on a line of flow brackets and stops at 255
    // levels itself, before the events reach MAX_DEPTH: say it as we do.
    if e.info() == "recursion limit exceeded" {
        ReadError::too_deep(line)
    } else {
        ReadError::syntax(line, e.info())
    }
}

/// Opens a mapping (`map`) or a sequence, unless its tag or its depth is
/// refused.
fn open_collection(
    open: &mut Vec<Collection>,
    map: bool,
    tag: Option<&Tag>,
    line: u32,
) -> Result<(), ReadError> {
    let wanted = if map { "map" } else { "seq" };
    if let Some(tag) = tag.filter(|t| !is_core(t, wanted)) {
        return Err(ReadError::syntax(Some(line), unsupported(tag)));
    }
    if open.len() >= MAX_DEPTH {
        return Err(ReadError::too_deep(Some(line)));
    }
    open.push(Collection::new(map, line));
    Ok(())
}

/// A sequence or mapping whose end has not been read yet.
enum Collection {
    Seq {
        line: u32,
        items: Vec<Spanned>,
    },
    Map {
        line: u32,
        entries: Vec<(Spanned, Spanned)>,
        /// A key read, waiting for its value.
        key: Option<Spanned>,
    },
}

impl Collection {
    fn new(map: bool, line: u32) -> Self {
        if map {
            Collection::Map {
                line,
                entries: Vec::new(),
                key: None,
            }
        } else {
            Collection::Seq {
                line,
                items: Vec::new(),
            }
        }
    }

    fn add(&mut self, node: Spanned) {
        match self {
            Collection::Seq { items, .. } => items.push(node),
            Collection::Map { entries, key, .. } => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
        }
    }

    fn finish(self) -> Spanned {
        match self {
            Collection::Seq { line, items } => Spanned::new(line, Term::list(items)),
            Collection::Map { line, entries, .. } => Spanned::new(line, Term::Map(entries)),
        }
    }
}

/// One scalar's term. `plain`: an unquoted value, typed by the core
/// schema; otherwise text, unless `tag` says otherwise.
fn scalar(value: &str, plain: bool, tag: Option<&Tag>) -> Result<Term, String> {
    let Some(tag) = tag else {
        return Ok(if plain {
            untagged(value)?
        } else {
            tree::text(value)
        });
    };
    let mismatch = || format!("{value:?} is not a valid {}", shown(tag));
    match core_name(tag).unwrap_or_default() {
        "str" => Ok(tree::text(value)),
        "null" => is_null(value).then(tree::null).ok_or_else(mismatch),
        "bool" => bool_value(value).map(tree::boolean).ok_or_else(mismatch),
        "int" => int(value)?.ok_or_else(mismatch),
        "float" if is_float(value) => float(value),
        "float" if is_special_float(value) => Err(special_float(value)),
        "float" => Err(mismatch()),
        _ => Err(unsupported(tag)),
    }
}

/// A plain scalar by the core schema's rules.
fn untagged(value: &str) -> Result<Term, String> {
    if is_null(value) {
        Ok(tree::null())
    } else if let Some(b) = bool_value(value) {
        Ok(tree::boolean(b))
    } else if let Some(n) = int(value)? {
        Ok(n)
    } else if is_float(value) {
        float(value)
    } else if is_special_float(value) {
        Err(special_float(value))
    } else {
        Ok(tree::text(value))
    }
}

fn is_null(value: &str) -> bool {
    matches!(value, "" | "~" | "null" | "Null" | "NULL")
}

fn bool_value(value: &str) -> Option<bool> {
    match value {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+`; an error when it has
/// more digits than the term reader takes.
fn int(value: &str) -> Result<Option<Term>, String> {
    let (digits, radix, negative) = if let Some(hex) = value.strip_prefix("0x") {
        (hex, 16, false)
    } else if let Some(octal) = value.strip_prefix("0o") {
        (octal, 8, false)
    } else if let Some(rest) = value.strip_prefix('-') {
        (rest, 10, true)
    } else {
        (value.strip_prefix('+').unwrap_or(value), 10, false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Ok(None);
    }
    let magnitude = bounded_int(digits, radix)?;
    Ok(magnitude.map(|m| Term::int(if negative { -m } else { m })))
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(value: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(digits)
}

fn float(value: &str) -> Result<Term, String> {
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Term::Float(f)),
        _ => Err(format!("{value} is out of range for a float")),
    }
}

/// `.inf`, `-.inf`, `.nan` and their capitalised forms.
fn is_special_float(value: &str) -> bool {
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(value, ".nan" | ".NaN" | ".NAN")
}

fn special_float(value: &str) -> String {
    format!("{value} has no Erlang float: quote it for text")
}

/// Whether `tag` is the core schema's `!!wanted`.
fn is_core(tag: &Tag, wanted: &str) -> bool {
    core_name(tag) == Some(wanted)
}

/// `int` for `!!int` or its verbatim form `!<tag:yaml.org,2002:int>`.
fn core_name(tag: &Tag) -> Option<&str> {
    const CORE: &str = "tag:yaml.org,2002:";
    if tag.is_yaml_core_schema() {
        Some(&tag.suffix)
    } else if tag.handle.is_empty() {
        tag.suffix.strip_prefix(CORE)
    } else {
        None
    }
}

fn unsupported(tag: &Tag) -> String {
    format!(
        "the tag {} is not accepted: only !!str, !!int, !!float, !!bool, !!null, !!map and !!seq",
        shown(tag)
    )
}

/// A tag as it is usually written: `!!int`, `!local`.
fn shown(tag: &Tag) -> String {
    if let Some(name) = core_name(tag) {
        format!("!!{name}")
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::term_parse::MAX_INT_DIGITS;
    use num_bigint::BigInt;

    /// The value of `v` in the one-entry mapping `src`.
    fn value(src: &str) -> Result<Term, ReadError> {
        let root = parse_yaml(src)?;
        let Term::Map(mut entries) = root.term else {
            panic!("{src}: not a map: {root:?}");
        };
        Ok(entries.pop().unwrap().1.term)
    }

    fn bin(text: &str) -> Term {
        tree::text(text)
    }

    fn atom(name: &str) -> Term {
        Term::Atom(name.to_string())
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let big: BigInt = "123456789012345678901234567890".parse().unwrap();
        let cases = [
            ("v:", atom("null")),
            ("v: ~", atom("null")),
            ("v: Null", atom("null")),
            ("v: NULL", atom("null")),
            ("v: true", atom("true")),
            ("v: True", atom("true")),
            ("v: FALSE", atom("false")),
            ("v: yes", bin("yes")),
            ("v: off", bin("off")),
            ("v: tRUE", bin("tRUE")),
            ("v: 8080", Term::Int(8080)),
            ("v: -12", Term::Int(-12)),
            ("v: +12", Term::Int(12)),
            ("v: 012", Term::Int(12)),
            ("v: 0x1F", Term::Int(31)),
            ("v: 0o17", Term::Int(15)),
            ("v: -9223372036854775808", Term::Int(i64::MIN)),
            (
                "v: 123456789012345678901234567890",
                Term::BigInt(big.clone()),
            ),
            ("v: -123456789012345678901234567890", Term::BigInt(-big)),
            ("v: 0b101", bin("0b101")),
            ("v: 1_000", bin("1_000")),
            ("v: -0x1F", bin("-0x1F")),
            ("v: 0x", bin("0x")),
            ("v: 0.5", Term::Float(0.5)),
            ("v: -.5", Term::Float(-0.5)),
            ("v: 1.", Term::Float(1.0)),
            ("v: 1e3", Term::Float(1000.0)),
            ("v: 2.5E-3", Term::Float(0.0025)),
            ("v: 1.2.3", bin("1.2.3")),
            ("v: 1e", bin("1e")),
            ("v: .", bin(".")),
            ("v: inf", bin("inf")),
            ("v: 1.0.0", bin("1.0.0")),
            ("v: caf\u{e9} au lait", bin("caf\u{e9} au lait")),
            ("v: '12'", bin("12")),
            ("v: \"true\"", bin("true")),
            ("v: \"tab\\there \\u00e9\"", bin("tab\there \u{e9}")),
            ("v: |\n  line 1\n  line 2\n", bin("line 1\nline 2\n")),
            ("v: >-\n  folded\n  text\n", bin("folded text")),
        ];
        for (src, want) in cases {
            assert_eq!(value(src), Ok(want), "{src}");
        }
    }

    #[test]
    fn core_tags_are_honoured() {
        let cases = [
            ("v: !!str 12", bin("12")),
            ("v: !!str", bin("")),
            ("v: !!int '12'", Term::Int(12)),
            ("v: !!float 1", Term::Float(1.0)),
            ("v: !!bool \"false\"", atom("false")),
            ("v: !!null ''", atom("null")),
            (
                "v: !!seq [1]",
                Term::list(vec![Spanned::new(1, Term::Int(1))]),
            ),
            ("v: !!map {}", Term::Map(vec![])),
            ("%TAG !! tag:yaml.org,2002:\n---\nv: !!int 7", Term::Int(7)),
            ("v: !<tag:yaml.org,2002:str> 7", bin("7")),
        ];
        for (src, want) in cases {
            assert_eq!(value(src), Ok(want), "{src}");
        }
    }

    #[test]
    fn keys_are_text_unless_tagged() {
        let root = parse_yaml("1: a\ntrue: b\n~: c\n!!int 2: d\n'q': e\n").unwrap();
        let Term::Map(entries) = root.term else {
            panic!()
        };
        let keys: Vec<Term> = entries.into_iter().map(|(k, _)| k.term).collect();
        assert_eq!(
            keys,
            [bin("1"), bin("true"), bin("~"), Term::Int(2), bin("q")]
        );
    }

    #[test]
    fn refusals_name_their_line() {
        let cases: &[(&str, u32, &str)] = &[
            ("a: &x 1\nb: *x\n", 2, "aliases"),
            ("a: 1\nb: !!binary aGk=\n", 2, "!!binary"),
            ("a: 1\nb: !local x\n", 2, "!local"),
            ("a:\n  - 1\n  - !!set {}\n", 3, "!!set"),
            ("a: !!map [1]\n", 1, "!!map"),
            ("a: !!int x\n", 1, "not a valid !!int"),
            ("a: !!bool yes\n", 1, "not a valid !!bool"),
            ("a:\n  b: .inf\n", 2, "no Erlang float"),
            ("a: -.Inf\n", 1, "no Erlang float"),
            ("a: .NaN\n", 1, "no Erlang float"),
            ("a: !!float .nan\n", 1, "no Erlang float"),
            ("a: 1e400\n", 1, "out of range"),
            ("a: 1\n---\nb: 2\n", 2, "exactly one YAML document"),
            ("a: [1, 2\nb: 3\n", 2, ""),
            ("a: 1\n b: 2\n", 2, ""),
        ];
        for (src, line, needle) in cases {
            let e = parse_yaml(src).unwrap_err();
            assert_eq!(e.line, Some(*line), "{src:?}: {e:?}");
            assert!(e.message.contains(needle), "{src:?}: {e:?}");
        }
        let two = parse_yaml("--- 1\n--- 2\n").unwrap_err();
        assert_eq!(two.kind, ErrorKind::NotAMap);
        for empty in ["", "# only a comment\n", "\n\n"] {
            let e = parse_yaml(empty).unwrap_err();
            assert_eq!((e.kind, e.line), (ErrorKind::NotAMap, None), "{empty:?}");
        }
    }

    #[test]
    fn integers_have_the_term_readers_digit_limit() {
        let most = "9".repeat(MAX_INT_DIGITS);
        assert!(matches!(value(&format!("v: {most}")), Ok(Term::BigInt(_))));
        assert!(matches!(
            value(&format!("v: !!int {most}")),
            Ok(Term::BigInt(_))
        ));
        for src in [
            format!("a: 1\nv: {most}9"),
            format!("a: 1\nv: -{}", "1".repeat(1_000_000)),
            format!("a: 1\nv: !!int 0x{most}f"),
        ] {
            let e = parse_yaml(&src).unwrap_err();
            assert_eq!(e.line, Some(2));
            assert!(e.message.contains("more than 4300 digits"), "{e:?}");
        }
        // Past the limit as text, it stays text.
        assert_eq!(
            value(&format!("v: '{most}9'")),
            Ok(bin(&format!("{most}9")))
        );
    }

    #[test]
    fn nesting_stops_at_the_term_readers_limit() {
        let flow = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_yaml(&flow(MAX_DEPTH)).is_ok());
        let e = parse_yaml(&flow(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e:?}");
        // Block mappings, one level a line: refused at the first line too deep.
        let block: String = (0..MAX_DEPTH + 5)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let e = parse_yaml(&block).unwrap_err();
        assert_eq!(e.line, Some(tree::line(MAX_DEPTH + 1)), "{e:?}");
    }

    #[test]
    fn lines_stay_within_the_file() {
        // The implicit empty value of `? b`, an unclosed bracket: both at
        // the end of the input, on the file's last line.
        let root = parse_yaml("a: 1\n? b").unwrap();
        let Term::Map(entries) = &root.term else {
            panic!()
        };
        assert_eq!(entries[1].1.line, 2);
        for src in ["a: 1\nb: [c", "a: 1\nb: [c\n", "a: 1\rb: [c\r\n"] {
            assert_eq!(parse_yaml(src).unwrap_err().line, Some(2), "{src:?}");
        }
    }

    #[test]
    fn nodes_carry_their_line() {
        let root = parse_yaml("# head\nname: web\nenv:\n  port: 1\n  list:\n    - a\n").unwrap();
        assert_eq!(root.line, 2);
        let env = root.term.map_get("env");
        assert!(env.is_none(), "keys are binaries, not atoms");
        let Term::Map(entries) = &root.term else {
            panic!()
        };
        let lines: Vec<(u32, u32)> = entries.iter().map(|(k, v)| (k.line, v.line)).collect();
        assert_eq!(lines, [(2, 2), (3, 4)]);
    }
}
