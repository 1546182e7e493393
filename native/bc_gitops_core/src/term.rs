//! The Erlang term model that spec files are parsed into.
//!
//! A [`Term`] is exactly what `file:consult/1` would give for the same source
//! text: strings are lists of code points, `<<"...">>` are binaries, integers
//! are arbitrary precision. Every node keeps the line it started on so that
//! validation errors can point at it.

use num_bigint::BigInt;

/// A term together with the 1-based line of the source it started on.
///
/// Equality ignores the line: two spanned terms are equal when their values
/// are, which is what round-trip tests and comparisons need.
#[derive(Debug, Clone)]
pub struct Spanned {
    pub line: u32,
    pub term: Term,
}

impl PartialEq for Spanned {
    fn eq(&self, other: &Self) -> bool {
        self.term == other.term
    }
}

impl Spanned {
    pub fn new(line: u32, term: Term) -> Self {
        Spanned { line, term }
    }
}

/// An Erlang term as `erl_parse:parse_term/1` would build it.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// An atom, by its text (already unquoted and unescaped).
    Atom(String),
    /// An integer that fits in an i64.
    Int(i64),
    /// An integer outside the i64 range. Never holds a value that fits in
    /// i64, so that derived equality is value equality.
    BigInt(BigInt),
    Float(f64),
    /// A byte-aligned binary.
    Binary(Vec<u8>),
    /// A list; `tail` is `Some` only for an improper list `[H | T]` whose
    /// tail is not itself a list.
    List {
        items: Vec<Spanned>,
        tail: Option<Box<Spanned>>,
    },
    Tuple(Vec<Spanned>),
    /// A map literal in source order; a later duplicate key wins, as in
    /// Erlang.
    Map(Vec<(Spanned, Spanned)>),
}

impl Term {
    /// Builds an integer term, normalising to `Int` when it fits.
    pub fn int(value: BigInt) -> Term {
        match i64::try_from(&value) {
            Ok(small) => Term::Int(small),
            Err(_) => Term::BigInt(value),
        }
    }

    /// A proper list of `items`.
    pub fn list(items: Vec<Spanned>) -> Term {
        Term::List { items, tail: None }
    }

    /// The text of a binary, or of a proper list of Unicode code points
    /// (an Erlang string), when it is one.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Term::Binary(bytes) => String::from_utf8(bytes.clone()).ok(),
            Term::List { items, tail: None } => items
                .iter()
                .map(|item| match item.term {
                    Term::Int(cp) => u32::try_from(cp).ok().and_then(char::from_u32),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// The atom's text, when this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(name) => Some(name),
            _ => None,
        }
    }

    /// For a map: the value of the last entry whose key is the atom `key`.
    pub fn map_get(&self, key: &str) -> Option<&Spanned> {
        match self {
            Term::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.term.as_atom() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the term's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Term::Atom(_) => "an atom",
            Term::Int(_) | Term::BigInt(_) => "an integer",
            Term::Float(_) => "a float",
            Term::Binary(_) => "a binary",
            Term::List { .. } => "a list",
            Term::Tuple(_) => "a tuple",
            Term::Map(_) => "a map",
        }
    }
}
