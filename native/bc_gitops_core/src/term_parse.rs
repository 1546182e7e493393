//! A parser for the Erlang term syntax of config files.
//!
//! [`parse_terms`] accepts what `file:consult/1` on OTP 25 accepts and builds
//! the same terms. It follows `erl_scan` for tokens and
//! `erl_parse:parse_term/1` (an expression parse, then `normalise/1`) for
//! terms, odd corners included: `-(1)` is `-1`, `(a)` is `a`, `$\^x` is a
//! control character, `<<...>>` evaluates the bit syntax, and a
//! `%% coding: latin-1` comment in the first two lines makes the text be read
//! as Latin-1, as Erlang does.
//!
//! Deliberate limits, so that hostile input cannot hurt the caller: nesting
//! deeper than [`MAX_DEPTH`], binaries over [`MAX_BINARY_BYTES`] in all and
//! integers of more than [`MAX_INT_DIGITS`] digits are errors, where Erlang
//! would go on. Bitstrings that are not a whole number
//! of bytes are errors too, because [`Term`] cannot hold them.

use crate::term::{Spanned, Term};
use num_bigint::{BigInt, Sign};

/// The deepest nesting of brackets, parentheses and signs accepted: enough
/// for any real config. The parser itself does not recurse, but cloning,
/// dropping and encoding a term do, about 0.5 KiB of stack a level; a NIF
/// runs on a dirty scheduler whose stack may be as small as 128 KiB
/// (`+sssdio`), so 100 levels keeps well clear of it.
pub const MAX_DEPTH: usize = 100;

/// The total size of all binaries built while parsing one input. A tiny
/// segment such as `<<0:4294967295/unit:256>>` asks for gigabytes.
pub const MAX_BINARY_BYTES: u64 = 16 * 1024 * 1024;

/// The most digits an integer may have. Reading a number in a base that is
/// not a power of two takes time quadratic in its digits: a megabyte of
/// them takes seconds. Python limits its `int()` to the same 4300 digits
/// for the same reason.
pub const MAX_INT_DIGITS: usize = 4300;

/// `digits` in `radix` as an integer, unless there are more than
/// [`MAX_INT_DIGITS`] of them (`Err` with the message) or they are not
/// digits (`Ok(None)`).
pub fn bounded_int(digits: &str, radix: u32) -> std::result::Result<Option<BigInt>, String> {
    if digits.len() > MAX_INT_DIGITS {
        return Err(format!("an integer has more than {MAX_INT_DIGITS} digits"));
    }
    Ok(BigInt::parse_bytes(digits.as_bytes(), radix))
}

/// The longest atom Erlang can make.
const MAX_ATOM_CHARS: usize = 255;

/// Why a text is not a sequence of terms, and the 1-based line where that
/// was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: u32,
    pub message: String,
}

impl ParseError {
    fn new(line: u32, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ParseError>;

/// Parses all terms of a file, each closed by a `.` that is followed by
/// whitespace, a `%` comment or the end of the input.
///
/// The result is what `file:consult/1` would return for the same bytes,
/// each term with the line it starts on.
pub fn parse_terms(src: &str) -> Result<Vec<Spanned>> {
    parse_chars(decode(src))
}

/// [`parse_terms`] from a file's bytes, as `file:consult/1` reads them:
/// Latin-1 when a `coding:` comment in the first two lines says so (any
/// byte is then a character), else UTF-8, where invalid UTF-8 is an error
/// on the line it is found.
pub fn parse_terms_bytes(bytes: &[u8]) -> Result<Vec<Spanned>> {
    if declares_latin1(bytes) {
        return parse_chars(bytes.iter().map(|&b| char::from(b)).collect());
    }
    match std::str::from_utf8(bytes) {
        Ok(src) => parse_chars(src.chars().collect()),
        Err(e) => Err(ParseError::new(
            utf8_error_line(bytes, &e),
            "the file is not valid UTF-8 (a `%% coding: latin-1` comment in its first two lines would make it Latin-1)",
        )),
    }
}

/// The 1-based line of `bytes` on which its invalid UTF-8 starts.
pub(crate) fn utf8_error_line(bytes: &[u8], e: &std::str::Utf8Error) -> u32 {
    let valid = &bytes[..e.valid_up_to()];
    let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
    u32::try_from(line).unwrap_or(u32::MAX)
}

fn parse_chars(chars: Vec<char>) -> Result<Vec<Spanned>> {
    let mut parser = Parser::new(chars);
    let mut terms = Vec::new();
    while let Some(term) = parser.top_term()? {
        terms.push(term);
    }
    Ok(terms)
}

/// Whether `word` is reserved in Erlang, so cannot be a bare atom. `maybe`
/// and `else` are not: OTP 25 reads them as atoms.
pub(crate) fn is_reserved_word(word: &str) -> bool {
    reserved_word(word).is_some()
}

fn reserved_word(word: &str) -> Option<&'static str> {
    const WORDS: [&str; 27] = [
        "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
        "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
        "rem", "try", "when", "xor",
    ];
    WORDS.iter().find(|w| **w == word).copied()
}

// ---------------------------------------------------------------------------
// Source decoding
// ---------------------------------------------------------------------------

/// The characters Erlang reads from the file: UTF-8 unless a `coding:`
/// comment in the first two lines says Latin-1, in which case each byte is
/// one character (so the UTF-8 of `é` reads as two characters).
fn decode(src: &str) -> Vec<char> {
    if declares_latin1(src.as_bytes()) {
        src.bytes().map(char::from).collect()
    } else {
        src.chars().collect()
    }
}

/// Mirrors `epp:read_encoding_from_file/2`: within the first 512 bytes and
/// two lines, a `%` comment holding `coding` `:` or `=` and then a name.
fn declares_latin1(bytes: &[u8]) -> bool {
    const WINDOW: usize = 512;
    // epp reads 32-byte chunks and gives up when it wants a 17th, so a name
    // that runs to the end of what it read counts only in files of at
    // most 15 chunks.
    let truncated = bytes.len() > WINDOW - 32;
    let data = &bytes[..bytes.len().min(WINDOW)];
    let mut newlines = 0;
    let mut in_comment = false;
    let mut i = 0;
    while i < data.len() {
        let byte = data[i];
        i += 1;
        if byte == b'\n' {
            newlines += 1;
            if newlines == 2 {
                return false;
            }
            in_comment = false;
        } else if byte == b'%' {
            in_comment = true;
        } else if in_comment && byte == b'c' {
            let rest = &data[i..];
            if rest.len() < 5 {
                return false;
            }
            if rest.starts_with(b"oding") {
                if let Some(name_at) = coding_name_start(data, i + 5) {
                    return coding_is_latin1(&data[name_at..], truncated);
                }
            }
        }
    }
    false
}

/// After `coding`: spaces, `:` or `=`, spaces; the index of the name.
fn coding_name_start(data: &[u8], mut i: usize) -> Option<usize> {
    while data.get(i) == Some(&b' ') {
        i += 1;
    }
    match data.get(i) {
        Some(b':') | Some(b'=') => i += 1,
        _ => return None,
    }
    while data.get(i) == Some(&b' ') {
        i += 1;
    }
    Some(i)
}

/// Reads the encoding name as `-`-separated alphanumeric parts, as epp does.
fn coding_is_latin1(name: &[u8], truncated: bool) -> bool {
    let end = name
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
        .unwrap_or(name.len());
    if end == name.len() && truncated {
        // epp would need bytes past its 512-byte window, and gives up.
        return false;
    }
    let lower = String::from_utf8_lossy(&name[..end]).to_ascii_lowercase();
    let mut parts = lower.split('-');
    parts.next() == Some("latin") && parts.next() == Some("1")
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

/// A token, as `erl_scan` would make it.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Atom(String),
    Var(String),
    Reserved(&'static str),
    Int(BigInt),
    /// A `$x` literal: an integer, but not where the grammar wants an
    /// integer token (`unit:$a` is a syntax error).
    Char(char),
    Float(f64),
    Str(String),
    Punct(&'static str),
    /// Any other Latin-1 punctuation character, never valid in a term.
    Symbol(char),
    /// The `.` that ends a term.
    Dot,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: u32,
}

/// Whitespace for `erl_scan`: all control characters, space, and the
/// Latin-1 range 128..=160 (which includes NBSP).
fn is_blank(c: char) -> bool {
    let c = u32::from(c);
    c <= 32 || (128..=160).contains(&c)
}

/// Characters allowed in strings, quoted atoms and comments: all of
/// Unicode but the non-characters U+FFFE and U+FFFF.
fn is_text_char(c: char) -> bool {
    c != '\u{FFFE}' && c != '\u{FFFF}'
}

fn is_atom_start(c: char) -> bool {
    c.is_ascii_lowercase() || (('ß'..='ÿ').contains(&c) && c != '÷')
}

fn is_var_start(c: char) -> bool {
    c.is_ascii_uppercase() || c == '_' || (('À'..='Þ').contains(&c) && c != '×')
}

fn is_name_char(c: char) -> bool {
    is_atom_start(c) || is_var_start(c) || c.is_ascii_digit() || c == '@'
}

/// Operators of two or three characters, longest first, as `erl_scan`
/// recognises them.
const MULTI_PUNCT: [&str; 18] = [
    "=:=", "=/=", "?=", "<<", "<-", "<=", ">>", ">=", "->", "--", "++", "=<", "=>", "==", "/=",
    "||", ":=", "::",
];

/// Single-character punctuation tokens, so that each can be a `&'static
/// str`.
const SINGLE_PUNCT: &str = "()[]{},;|#/:?-+*<>!@\\^`~&=";

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: u32,
}

impl Lexer {
    fn new(chars: Vec<char>) -> Self {
        Lexer {
            chars,
            pos: 0,
            line: 1,
        }
    }

    fn peek(&self) -> Option<char> {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    /// Takes one character, counting lines wherever a newline is.
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line = self.line.saturating_add(1);
        }
        Some(c)
    }

    fn next_token(&mut self) -> Result<Token> {
        self.skip_blanks()?;
        let line = self.line;
        let Some(c) = self.bump() else {
            return Ok(Token {
                tok: Tok::Eof,
                line,
            });
        };
        let tok = match c {
            c if is_atom_start(c) => self.atom(c, line)?,
            c if is_var_start(c) => Tok::Var(self.name(c)),
            '0'..='9' => self.number(c, line)?,
            '"' => Tok::Str(self.quoted('"', line)?),
            '\'' => self.quoted_atom(line)?,
            '$' => Tok::Char(self.char_literal(line)?),
            '.' => self.dot(),
            c if u32::from(c) <= 0xFF => self.punct(c),
            c => return Err(ParseError::new(line, unexpected_char(c))),
        };
        Ok(Token { tok, line })
    }

    fn skip_blanks(&mut self) -> Result<()> {
        while let Some(c) = self.peek() {
            if is_blank(c) {
                self.bump();
            } else if c == '%' {
                self.skip_comment()?;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn skip_comment(&mut self) -> Result<()> {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            if !is_text_char(c) {
                return Err(ParseError::new(self.line, unexpected_char(c)));
            }
            self.bump();
        }
        Ok(())
    }

    fn name(&mut self, first: char) -> String {
        let mut name = String::from(first);
        while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
            name.push(c);
            self.bump();
        }
        name
    }

    fn atom(&mut self, first: char, line: u32) -> Result<Tok> {
        let name = self.name(first);
        if let Some(word) = reserved_word(&name) {
            return Ok(Tok::Reserved(word));
        }
        check_atom_length(&name, line)?;
        Ok(Tok::Atom(name))
    }

    fn quoted_atom(&mut self, line: u32) -> Result<Tok> {
        let name = self.quoted('\'', line)?;
        check_atom_length(&name, line)?;
        Ok(Tok::Atom(name))
    }

    /// The body of a string or quoted atom, after its opening quote.
    fn quoted(&mut self, quote: char, line: u32) -> Result<String> {
        let unterminated = || {
            let what = if quote == '"' {
                "string"
            } else {
                "quoted atom"
            };
            ParseError::new(line, format!("unterminated {what} starting on line {line}"))
        };
        let mut text = String::new();
        loop {
            let at = self.line;
            match self.bump() {
                None => return Err(unterminated()),
                Some(c) if c == quote => return Ok(text),
                Some('\\') => text.push(self.escape()?.ok_or_else(unterminated)?),
                Some(c) if is_text_char(c) => text.push(c),
                Some(c) => return Err(ParseError::new(at, unexpected_char(c))),
            }
        }
    }

    /// An escape sequence after `\`; `None` when the input ends inside it.
    fn escape(&mut self) -> Result<Option<char>> {
        let line = self.line;
        let Some(c) = self.bump() else {
            return Ok(None);
        };
        let code = match c {
            '0'..='7' => self.octal_escape(c),
            'x' => return self.hex_escape(line),
            '^' => match self.bump() {
                Some(c) => u32::from(c) & 31,
                None => return Ok(None),
            },
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            'b' => 8,
            'f' => 12,
            'e' => 27,
            's' => 32,
            'd' => 127,
            c if is_text_char(c) => u32::from(c),
            c => return Err(ParseError::new(line, unexpected_char(c))),
        };
        char::from_u32(code)
            .map(Some)
            .ok_or_else(|| ParseError::new(line, "bad escape sequence"))
    }

    /// One to three octal digits, the first already taken.
    fn octal_escape(&mut self, first: char) -> u32 {
        let mut code = first.to_digit(8).unwrap_or(0);
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(d) => {
                    code = code * 8 + d;
                    self.bump();
                }
                None => break,
            }
        }
        code
    }

    /// `\xHH` (exactly two hex digits) or `\x{H...}`.
    fn hex_escape(&mut self, line: u32) -> Result<Option<char>> {
        let bad = |what: &str| ParseError::new(line, format!("bad \\x escape: {what}"));
        if self.peek() == Some('{') {
            self.bump();
            let mut code: u32 = 0;
            let mut digits = 0;
            loop {
                match self.bump() {
                    None => return Ok(None),
                    Some('}') => break,
                    Some(c) => {
                        let d = c
                            .to_digit(16)
                            .ok_or_else(|| bad("expected hex digits and '}'"))?;
                        code = code.saturating_mul(16).saturating_add(d).min(0x11_0000);
                        digits += 1;
                    }
                }
            }
            if digits == 0 {
                return Err(bad("no digits in \\x{}"));
            }
            return code_point(code)
                .map(Some)
                .ok_or_else(|| bad("not a valid Unicode code point"));
        }
        let high = self.peek().and_then(|c| c.to_digit(16));
        let low = self.peek_at(1).and_then(|c| c.to_digit(16));
        match (high, low) {
            (Some(h), Some(l)) => {
                self.pos += 2;
                Ok(char::from_u32(h * 16 + l))
            }
            _ if self.peek().is_none() => Ok(None),
            _ => Err(bad("expected two hex digits or {...}")),
        }
    }

    fn char_literal(&mut self, line: u32) -> Result<char> {
        let unterminated = || ParseError::new(line, "unterminated character literal ($)");
        match self.bump() {
            None => Err(unterminated()),
            Some('\\') => self.escape()?.ok_or_else(unterminated),
            Some(c) if is_text_char(c) => Ok(c),
            Some(c) => Err(ParseError::new(line, unexpected_char(c))),
        }
    }

    /// A `.` ends a term only before whitespace, a comment or the end.
    fn dot(&mut self) -> Tok {
        match self.peek() {
            None | Some('%') => Tok::Dot,
            Some(c) if is_blank(c) => {
                self.bump();
                Tok::Dot
            }
            Some('.') if self.peek_at(1) == Some('.') => {
                self.pos += 2;
                Tok::Punct("...")
            }
            Some('.') => {
                self.pos += 1;
                Tok::Punct("..")
            }
            Some(_) => Tok::Punct("."),
        }
    }

    fn punct(&mut self, first: char) -> Tok {
        for op in MULTI_PUNCT {
            let mut rest = op.chars();
            if rest.next() == Some(first)
                && rest.enumerate().all(|(i, c)| self.peek_at(i) == Some(c))
            {
                self.pos += op.chars().count() - 1;
                return Tok::Punct(op);
            }
        }
        match SINGLE_PUNCT.find(first) {
            Some(i) => Tok::Punct(&SINGLE_PUNCT[i..i + first.len_utf8()]),
            None => Tok::Symbol(first),
        }
    }

    fn number(&mut self, first: char, line: u32) -> Result<Tok> {
        let mut digits = String::from(first);
        self.digit_run(&mut digits, 10, true);
        match (self.peek(), self.peek_at(1)) {
            (Some('#'), _) => {
                self.bump();
                self.based_integer(&digits, line)
            }
            (Some('.'), Some(d)) if d.is_ascii_digit() => {
                self.bump();
                self.float(digits, line)
            }
            _ => bounded_int(&digits, 10)
                .map_err(|message| ParseError::new(line, message))?
                .map(Tok::Int)
                .ok_or_else(|| ParseError::new(line, format!("bad integer {digits}"))),
        }
    }

    /// Digits of `radix`, with single `_` separators between two digits
    /// (`1_000`); returns whether it took any digit. `out` gets the digits
    /// without the separators; `after_digit` says whether a digit of the
    /// same run came just before.
    fn digit_run(&mut self, out: &mut String, radix: u32, mut after_digit: bool) -> bool {
        let start = out.len();
        loop {
            match self.peek() {
                Some(c) if c.is_digit(radix) => {
                    out.push(c);
                    self.bump();
                    after_digit = true;
                }
                Some('_') if after_digit && self.peek_at(1).is_some_and(|c| c.is_digit(radix)) => {
                    self.bump();
                }
                _ => return out.len() > start,
            }
        }
    }

    fn based_integer(&mut self, base_digits: &str, line: u32) -> Result<Tok> {
        let base = base_digits.parse::<u32>().unwrap_or(u32::MAX);
        if !(2..=36).contains(&base) {
            let message = format!("integer base {base_digits} is out of range (2..36)");
            return Err(ParseError::new(line, message));
        }
        let mut digits = String::new();
        if !self.digit_run(&mut digits, base, false) {
            let message = format!("missing digits after '{base}#'");
            return Err(ParseError::new(line, message));
        }
        bounded_int(&digits, base)
            .map_err(|message| ParseError::new(line, message))?
            .map(Tok::Int)
            .ok_or_else(|| ParseError::new(line, format!("bad integer {base}#{digits}")))
    }

    /// The fraction and exponent of a float, after `Int.`.
    fn float(&mut self, mut text: String, line: u32) -> Result<Tok> {
        text.push('.');
        self.digit_run(&mut text, 10, false);
        if let Some(e @ ('e' | 'E')) = self.peek() {
            self.bump();
            text.push(e);
            if let Some(sign @ ('+' | '-')) = self.peek() {
                self.bump();
                text.push(sign);
            }
            if !self.digit_run(&mut text, 10, false) {
                let message = format!("bad float {text}: missing exponent digits");
                return Err(ParseError::new(line, message));
            }
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Tok::Float(value)),
            _ => Err(ParseError::new(
                line,
                format!("float {text} is out of range"),
            )),
        }
    }
}

fn check_atom_length(name: &str, line: u32) -> Result<()> {
    if name.chars().count() > MAX_ATOM_CHARS {
        let message = format!("atom is too long (more than {MAX_ATOM_CHARS} characters)");
        return Err(ParseError::new(line, message));
    }
    Ok(())
}

/// A code point Erlang accepts in text: not a surrogate, not U+FFFE or
/// U+FFFF, at most U+10FFFF.
fn code_point(code: u32) -> Option<char> {
    char::from_u32(code).filter(|c| is_text_char(*c))
}

fn unexpected_char(c: char) -> String {
    let code = u32::from(c);
    if c.is_control() || is_blank(c) || !is_text_char(c) || c == '\u{FEFF}' {
        format!("unexpected character U+{code:04X}")
    } else {
        format!("unexpected character '{c}' (U+{code:04X})")
    }
}

/// A token as an error message names it.
fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Atom(name) => format!("atom {}", Term::Atom(name.clone())),
        Tok::Var(name) => format!("variable {name}"),
        Tok::Reserved(word) => format!("reserved word {word}"),
        Tok::Int(value) => format!("integer {value}"),
        Tok::Char(c) => format!("character literal ${}", c.escape_debug()),
        Tok::Float(value) => format!("float {}", Term::Float(*value)),
        Tok::Str(text) => {
            let short: String = text.chars().take(20).collect();
            let dots = if short.len() < text.len() { "..." } else { "" };
            format!("string {:?}", format!("{short}{dots}"))
        }
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Symbol(c) => format!("'{c}'"),
        Tok::Dot => "'.' (end of term)".to_string(),
        Tok::Eof => "end of input".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// A parsed expression before it becomes a term. Erlang keeps these kinds
/// apart: a sign may only precede a number literal, a string in a binary is
/// expanded character by character, and a binary may be a bitstring while
/// it is inside another binary.
#[derive(Debug)]
struct Node {
    line: u32,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// An integer, character or float literal, without a sign.
    Number(Term),
    /// A number literal with a sign applied.
    Signed(Term),
    /// A string literal, adjacent literals joined.
    Str(String),
    Bits(Bits),
    /// Atoms, lists, tuples and maps.
    Value(Term),
}

/// A construct that is open while the parser reads what goes inside it.
/// The parser keeps these on a heap stack instead of recursing, so that
/// deep input cannot overflow the thread's stack, however small it is.
enum Open {
    /// After `(`.
    Paren,
    /// After a `-` or `+`, waiting for the number.
    Sign(&'static str),
    /// Waiting for an element, after `[` or `,`.
    List(Vec<Spanned>),
    /// Waiting for the tail, after `|`.
    ListTail(Vec<Spanned>),
    Tuple(Vec<Spanned>),
    /// Waiting for a key, after `#{` or `,`.
    MapKey(Vec<(Spanned, Spanned)>),
    /// Waiting for the value of `key`, after `=>`.
    MapValue(Vec<(Spanned, Spanned)>, Spanned),
    /// Waiting for a segment's value, after `<<` or `,`.
    SegmentValue(Bits),
    /// Waiting for the size of a segment whose value is read, after `:`.
    SegmentSize(Bits, Node),
}

struct Frame {
    /// The line of the token that opened it.
    line: u32,
    open: Open,
}

/// What giving a finished expression to an open construct leads to.
enum Step {
    /// It wants another expression.
    More(Open),
    /// It is complete.
    Done(Kind),
}

/// What may start an expression here. Erlang's grammar allows one sign
/// before a number, and in binary segments only an `expr_max` (no map, and
/// no sign before a size).
#[derive(Clone, Copy)]
struct Allowed {
    sign: bool,
    map: bool,
}

fn allowed_in(open: Option<&Frame>) -> Allowed {
    match open.map(|frame| &frame.open) {
        Some(Open::Sign(_)) => Allowed {
            sign: false,
            map: true,
        },
        Some(Open::SegmentValue(_)) => Allowed {
            sign: true,
            map: false,
        },
        Some(Open::SegmentSize(..)) => Allowed {
            sign: false,
            map: false,
        },
        _ => Allowed {
            sign: true,
            map: true,
        },
    }
}

struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
    /// Bits that binaries may still use, out of [`MAX_BINARY_BYTES`].
    budget_bits: u64,
}

impl Parser {
    fn new(chars: Vec<char>) -> Self {
        Parser {
            lexer: Lexer::new(chars),
            peeked: None,
            budget_bits: MAX_BINARY_BYTES * 8,
        }
    }

    fn peek(&mut self) -> Result<&Token> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn next(&mut self) -> Result<Token> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    /// Takes the next token if it is the punctuation `p`.
    fn eat(&mut self, p: &str) -> Result<bool> {
        let found = matches!(&self.peek()?.tok, Tok::Punct(q) if *q == p);
        if found {
            self.peeked = None;
        }
        Ok(found)
    }

    /// Takes the closing `p`, or fails naming what was found instead.
    fn close(&mut self, p: &'static str, context: &str) -> Result<()> {
        let token = self.next()?;
        match token.tok {
            Tok::Punct(q) if q == p => Ok(()),
            other => Err(unexpected(token.line, &other, &format!("'{p}' {context}"))),
        }
    }

    /// The next term of the file and its closing `.`, or `None` at the end.
    fn top_term(&mut self) -> Result<Option<Spanned>> {
        if self.peek()?.tok == Tok::Eof {
            return Ok(None);
        }
        let node = self.expr()?;
        let line = node.line;
        let term = into_term(node)?;
        let token = self.next()?;
        match token.tok {
            Tok::Dot => Ok(Some(Spanned::new(line, term))),
            Tok::Eof => {
                let message = format!("missing '.' at the end of the term starting on line {line}");
                Err(ParseError::new(token.line, message))
            }
            other => Err(unexpected(token.line, &other, "'.' after the term")),
        }
    }

    /// One whole expression: opens constructs until a complete one is
    /// read, then closes as many as that completes, and so on.
    fn expr(&mut self) -> Result<Node> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            if let Some(node) = self.start(&mut stack)? {
                if let Some(done) = self.finish(&mut stack, node)? {
                    return Ok(done);
                }
            }
        }
    }

    /// Reads the start of an expression: a literal or an empty container
    /// (returned), or an opening token (pushed onto `stack`).
    fn start(&mut self, stack: &mut Vec<Frame>) -> Result<Option<Node>> {
        let allowed = allowed_in(stack.last());
        let token = self.next()?;
        let line = token.line;
        let done = |kind| Ok(Some(Node { line, kind }));
        let open = match token.tok {
            Tok::Punct(sign @ ("-" | "+")) if allowed.sign => Open::Sign(sign),
            Tok::Punct("(") => Open::Paren,
            Tok::Punct("[") if self.eat("]")? => return done(Kind::Value(Term::list(Vec::new()))),
            Tok::Punct("[") => Open::List(Vec::new()),
            Tok::Punct("{") if self.eat("}")? => return done(Kind::Value(Term::Tuple(Vec::new()))),
            Tok::Punct("{") => Open::Tuple(Vec::new()),
            Tok::Punct("#") if allowed.map => {
                self.close("{", "after '#' (records are not terms)")?;
                if self.eat("}")? {
                    return done(Kind::Value(Term::Map(Vec::new())));
                }
                Open::MapKey(Vec::new())
            }
            Tok::Punct("<<") if self.eat(">>")? => return done(Kind::Bits(Bits::default())),
            Tok::Punct("<<") => Open::SegmentValue(Bits::default()),
            other => return self.literal(line, other).map(Some),
        };
        if stack.len() >= MAX_DEPTH {
            let message = format!("terms are nested too deeply (more than {MAX_DEPTH} levels)");
            return Err(ParseError::new(line, message));
        }
        stack.push(Frame { line, open });
        Ok(None)
    }

    /// A single-token term (strings may be several adjacent tokens).
    fn literal(&mut self, line: u32, tok: Tok) -> Result<Node> {
        let kind = match tok {
            Tok::Int(value) => Kind::Number(Term::int(value)),
            Tok::Char(c) => Kind::Number(Term::Int(i64::from(u32::from(c)))),
            Tok::Float(value) => Kind::Number(Term::Float(value)),
            Tok::Atom(name) => Kind::Value(Term::Atom(name)),
            Tok::Str(text) => Kind::Str(self.adjacent_strings(text)?),
            Tok::Var(name) => {
                let message = format!("variables are not allowed in terms: {name}");
                return Err(ParseError::new(line, message));
            }
            Tok::Reserved(word) => {
                let message =
                    format!("reserved word {word} is not an atom; write '{word}' to use it as one");
                return Err(ParseError::new(line, message));
            }
            Tok::Punct(sign @ ("-" | "+")) => {
                let message =
                    format!("unexpected '{sign}': a term may have one sign, right before a number");
                return Err(ParseError::new(line, message));
            }
            other => return Err(unexpected(line, &other, "a term")),
        };
        Ok(Node { line, kind })
    }

    fn adjacent_strings(&mut self, mut text: String) -> Result<String> {
        while let Tok::Str(_) = self.peek()?.tok {
            if let Tok::Str(more) = self.next()?.tok {
                text.push_str(&more);
            }
        }
        Ok(text)
    }

    /// Gives `node` to the innermost open construct, and each construct
    /// that completes to the one around it. Returns the whole expression
    /// once nothing is open, or `None` when a construct wants more.
    fn finish(&mut self, stack: &mut Vec<Frame>, mut node: Node) -> Result<Option<Node>> {
        while let Some(Frame { line, open }) = stack.pop() {
            match self.feed(open, node)? {
                Step::More(open) => {
                    stack.push(Frame { line, open });
                    return Ok(None);
                }
                Step::Done(kind) => node = Node { line, kind },
            }
        }
        Ok(Some(node))
    }

    fn feed(&mut self, open: Open, node: Node) -> Result<Step> {
        match open {
            Open::Paren => {
                // The parentheses leave no trace, as in Erlang.
                self.close(")", "after a parenthesized term")?;
                Ok(Step::Done(node.kind))
            }
            Open::Sign(sign) => apply_sign(sign, node).map(Step::Done),
            Open::List(items) => self.list_item(items, node),
            Open::ListTail(items) => {
                self.close("]", "after the tail of a list")?;
                Ok(Step::Done(Kind::Value(with_tail(items, spanned(node)?))))
            }
            Open::Tuple(mut items) => {
                items.push(spanned(node)?);
                let token = self.next()?;
                match token.tok {
                    Tok::Punct(",") => Ok(Step::More(Open::Tuple(items))),
                    Tok::Punct("}") => Ok(Step::Done(Kind::Value(Term::Tuple(items)))),
                    other => Err(unexpected(token.line, &other, "',' or '}' in tuple")),
                }
            }
            Open::MapKey(entries) => {
                let key = spanned(node)?;
                self.map_arrow()?;
                Ok(Step::More(Open::MapValue(entries, key)))
            }
            Open::MapValue(mut entries, key) => {
                entries.push((key, spanned(node)?));
                let token = self.next()?;
                match token.tok {
                    Tok::Punct(",") => Ok(Step::More(Open::MapKey(entries))),
                    Tok::Punct("}") => Ok(Step::Done(Kind::Value(Term::Map(entries)))),
                    other => Err(unexpected(token.line, &other, "',' or '}' in map")),
                }
            }
            Open::SegmentValue(bits) if self.eat(":")? => {
                Ok(Step::More(Open::SegmentSize(bits, node)))
            }
            Open::SegmentValue(bits) => self.segment_end(bits, node, None),
            Open::SegmentSize(bits, value) => self.segment_end(bits, value, Some(node)),
        }
    }

    fn list_item(&mut self, mut items: Vec<Spanned>, node: Node) -> Result<Step> {
        items.push(spanned(node)?);
        let token = self.next()?;
        match token.tok {
            Tok::Punct(",") => Ok(Step::More(Open::List(items))),
            Tok::Punct("|") => Ok(Step::More(Open::ListTail(items))),
            Tok::Punct("]") => Ok(Step::Done(Kind::Value(Term::list(items)))),
            other => Err(unexpected(token.line, &other, "',', '|' or ']' in list")),
        }
    }

    fn map_arrow(&mut self) -> Result<()> {
        let token = self.next()?;
        match token.tok {
            Tok::Punct("=>") => Ok(()),
            Tok::Punct(":=") => {
                let message = "':=' is not allowed in a map term; use '=>'";
                Err(ParseError::new(token.line, message))
            }
            other => Err(unexpected(token.line, &other, "'=>' after a map key")),
        }
    }

    /// Reads a segment's types, appends the segment to `bits`, and goes on
    /// to the next segment or ends the binary.
    fn segment_end(&mut self, mut bits: Bits, value: Node, size: Option<Node>) -> Result<Step> {
        let types = if self.eat("/")? {
            Some(self.type_list()?)
        } else {
            None
        };
        let line = value.line;
        let segment = SegmentSource { value, size, types };
        build_segment(segment, &mut bits, &mut self.budget_bits)
            .map_err(|message| ParseError::new(line, format!("bad binary segment: {message}")))?;
        let token = self.next()?;
        match token.tok {
            Tok::Punct(",") => Ok(Step::More(Open::SegmentValue(bits))),
            Tok::Punct(">>") => Ok(Step::Done(Kind::Bits(bits))),
            other => Err(unexpected(token.line, &other, "',' or '>>' in binary")),
        }
    }

    /// `Type[-Type...]` where each is `name` or `name:Integer`.
    fn type_list(&mut self) -> Result<Vec<TypeName>> {
        let mut types = Vec::new();
        loop {
            let token = self.next()?;
            let name = match token.tok {
                Tok::Atom(name) => name,
                other => {
                    let what = "a type (such as integer, binary or utf8) in binary segment";
                    return Err(unexpected(token.line, &other, what));
                }
            };
            let arg = if self.eat(":")? {
                let token = self.next()?;
                match token.tok {
                    Tok::Int(value) => Some(value),
                    other => {
                        let what = format!("an integer after '{name}:' in binary segment");
                        return Err(unexpected(token.line, &other, &what));
                    }
                }
            } else {
                None
            };
            types.push(TypeName { name, arg });
            if !self.eat("-")? {
                return Ok(types);
            }
        }
    }
}

fn unexpected(line: u32, found: &Tok, expected: &str) -> ParseError {
    ParseError::new(
        line,
        format!("expected {expected}, found {}", describe(found)),
    )
}

/// `-` or `+` before a number literal; Erlang's `normalise/1` accepts
/// nothing else (not `- -1`, not `-"a"`).
fn apply_sign(sign: &str, operand: Node) -> Result<Kind> {
    match operand.kind {
        Kind::Number(term) if sign == "-" => Ok(Kind::Signed(negate(term))),
        Kind::Number(term) => Ok(Kind::Signed(term)),
        _ => {
            let message = format!("'{sign}' can only be applied to a number literal in a term");
            Err(ParseError::new(operand.line, message))
        }
    }
}

fn negate(term: Term) -> Term {
    match term {
        Term::Int(value) => match value.checked_neg() {
            Some(negated) => Term::Int(negated),
            None => Term::int(-BigInt::from(value)),
        },
        Term::BigInt(value) => Term::int(-value),
        Term::Float(value) => Term::Float(-value),
        other => other,
    }
}

/// An element of a list, tuple or map: the term and the line it starts on.
fn spanned(node: Node) -> Result<Spanned> {
    let line = node.line;
    Ok(Spanned::new(line, into_term(node)?))
}

fn into_term(node: Node) -> Result<Term> {
    match node.kind {
        Kind::Number(term) | Kind::Signed(term) | Kind::Value(term) => Ok(term),
        Kind::Str(text) => Ok(string_term(&text, node.line)),
        Kind::Bits(bits) => bits.into_binary().map(Term::Binary).map_err(|len| {
            let message = format!(
                "bitstrings are not supported: this binary is {len} bits, not a whole number of bytes"
            );
            ParseError::new(node.line, message)
        }),
    }
}

/// An Erlang string: a proper list of code points.
fn string_term(text: &str, line: u32) -> Term {
    let items = text
        .chars()
        .map(|c| Spanned::new(line, Term::Int(i64::from(u32::from(c)))))
        .collect();
    Term::list(items)
}

/// `[items | tail]`: a tail that is a list is joined on, as in Erlang.
fn with_tail(mut items: Vec<Spanned>, tail: Spanned) -> Term {
    match tail.term {
        Term::List {
            items: more,
            tail: rest,
        } => {
            items.extend(more);
            Term::List { items, tail: rest }
        }
        term => Term::List {
            items,
            tail: Some(Box::new(Spanned::new(tail.line, term))),
        },
    }
}

// ---------------------------------------------------------------------------
// Binaries: the bit syntax, as eval_bits and erl_bits evaluate it
// ---------------------------------------------------------------------------

/// A sequence of bits, most significant first in each byte; the unused low
/// bits of the last byte are zero.
#[derive(Debug, Clone, Default, PartialEq)]
struct Bits {
    bytes: Vec<u8>,
    len: u64,
}

impl Bits {
    /// Appends the low `n` bits (0..=8) of `value`.
    fn push_low_bits(&mut self, value: u8, n: u32) {
        if n == 0 {
            return;
        }
        let value = u16::from(value) & ((1u16 << n) - 1);
        let used = (self.len % 8) as u32;
        match self.bytes.last_mut() {
            Some(last) if used != 0 => {
                let free = 8 - used;
                if n <= free {
                    *last |= (value << (free - n)) as u8;
                } else {
                    *last |= (value >> (n - free)) as u8;
                    self.bytes.push((value << (8 - (n - free))) as u8);
                }
            }
            _ => self.bytes.push((value << (8 - n)) as u8),
        }
        self.len += u64::from(n);
    }

    fn push_bytes(&mut self, data: &[u8]) {
        if self.len.is_multiple_of(8) {
            self.bytes.extend_from_slice(data);
            self.len += 8 * data.len() as u64;
        } else {
            for byte in data {
                self.push_low_bits(*byte, 8);
            }
        }
    }

    /// Appends the first `n` bits of `other` (which must have that many).
    fn push_prefix(&mut self, other: &Bits, n: u64) {
        let whole = (n / 8) as usize;
        self.push_bytes(other.bytes.get(..whole).unwrap_or_default());
        let rest = (n % 8) as u32;
        if let Some(byte) = other.bytes.get(whole).filter(|_| rest > 0) {
            self.push_low_bits(byte >> (8 - rest), rest);
        }
    }

    /// The bytes, or the bit length when it is not whole bytes.
    fn into_binary(self) -> std::result::Result<Vec<u8>, u64> {
        if self.len.is_multiple_of(8) {
            Ok(self.bytes)
        } else {
            Err(self.len)
        }
    }
}

/// A segment as written: its value, optional size and optional types.
struct SegmentSource {
    value: Node,
    size: Option<Node>,
    types: Option<Vec<TypeName>>,
}

/// One `name` or `name:N` of a segment's type list.
struct TypeName {
    name: String,
    arg: Option<BigInt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegType {
    Integer,
    Float,
    Binary,
    Utf8,
    Utf16,
    Utf32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Big,
    Little,
    Native,
}

/// A type list merged as `erl_bits:set_bit_type/2` does: each field may be
/// given more than once, but only with the same value.
#[derive(Debug, Default, Clone, Copy)]
struct TypeSpec {
    ty: Option<SegType>,
    unit: Option<u32>,
    signed: Option<bool>,
    endian: Option<Endian>,
}

/// What a segment writes: its type, its size in bits and byte order.
#[derive(Debug, Clone, Copy)]
struct Layout {
    ty: SegType,
    size: SegSize,
    little: bool,
}

#[derive(Debug, Clone, Copy)]
enum SegSize {
    /// A whole binary value, whose length must be a multiple of the unit.
    All {
        unit: u64,
    },
    Bits(u64),
    /// utf8/16/32: as many bits as the code point needs.
    Natural,
}

type SegResult<T> = std::result::Result<T, String>;

fn build_segment(source: SegmentSource, bits: &mut Bits, budget: &mut u64) -> SegResult<()> {
    let SegmentSource { value, size, types } = source;
    if let Kind::Str(text) = &value.kind {
        if size.is_none() && types.is_none() {
            // Erlang's fast path: each character truncated to a byte.
            let bytes: Vec<u8> = text.chars().map(|c| u32::from(c) as u8).collect();
            spend(budget, 8 * bytes.len() as u64)?;
            bits.push_bytes(&bytes);
            return Ok(());
        }
    }
    let spec = merge_types(types.as_deref().unwrap_or_default())?;
    let layout = layout(spec, size.as_ref())?;
    match &value.kind {
        Kind::Str(text) if text.is_empty() => {
            // Erlang checks the type even with no characters to write.
            put_value(
                &mut Bits::default(),
                layout,
                &SegValue::Int(BigInt::from(0)),
                budget,
            )
        }
        Kind::Str(text) => text.chars().try_for_each(|c| {
            let value = SegValue::Int(BigInt::from(u32::from(c)));
            put_value(bits, layout, &value, budget)
        }),
        _ => put_value(bits, layout, &seg_value(&value.kind), budget),
    }
}

fn merge_types(types: &[TypeName]) -> SegResult<TypeSpec> {
    let mut spec = TypeSpec::default();
    for type_name in types {
        let one = single_type(type_name)?;
        spec.ty = merge_field(spec.ty, one.ty, "types")?;
        spec.unit = merge_field(spec.unit, one.unit, "units")?;
        spec.signed = merge_field(spec.signed, one.signed, "signedness")?;
        spec.endian = merge_field(spec.endian, one.endian, "byte orders")?;
    }
    Ok(spec)
}

fn merge_field<T: PartialEq + std::fmt::Debug>(
    old: Option<T>,
    new: Option<T>,
    what: &str,
) -> SegResult<Option<T>> {
    match (old, new) {
        (Some(a), Some(b)) if a != b => Err(format!("conflicting {what}: {a:?} and {b:?}")),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

fn single_type(type_name: &TypeName) -> SegResult<TypeSpec> {
    let mut spec = TypeSpec::default();
    match (type_name.name.as_str(), &type_name.arg) {
        ("integer", None) => spec.ty = Some(SegType::Integer),
        ("float", None) => spec.ty = Some(SegType::Float),
        ("binary", None) => spec.ty = Some(SegType::Binary),
        ("bytes", None) => (spec.ty, spec.unit) = (Some(SegType::Binary), Some(8)),
        ("bitstring" | "bits", None) => (spec.ty, spec.unit) = (Some(SegType::Binary), Some(1)),
        ("utf8", None) => spec.ty = Some(SegType::Utf8),
        ("utf16", None) => spec.ty = Some(SegType::Utf16),
        ("utf32", None) => spec.ty = Some(SegType::Utf32),
        ("signed", None) => spec.signed = Some(true),
        ("unsigned", None) => spec.signed = Some(false),
        ("big", None) => spec.endian = Some(Endian::Big),
        ("little", None) => spec.endian = Some(Endian::Little),
        ("native", None) => spec.endian = Some(Endian::Native),
        ("unit", Some(n)) => match u32::try_from(n) {
            Ok(n @ 1..=256) => spec.unit = Some(n),
            _ => return Err(format!("unit must be 1..256, not {n}")),
        },
        (name, None) => return Err(format!("unknown type {}", Term::Atom(name.to_string()))),
        (name, Some(n)) => {
            let name = Term::Atom(name.to_string());
            return Err(format!("unknown type {name}:{n}"));
        }
    }
    Ok(spec)
}

/// Applies the defaults of `erl_bits`: integer, 8 bits, unit 1, big;
/// floats 64 bits; binaries all of the value, unit 8.
fn layout(spec: TypeSpec, size: Option<&Node>) -> SegResult<Layout> {
    let ty = spec.ty.unwrap_or(SegType::Integer);
    let little = match spec.endian {
        Some(Endian::Little) => true,
        Some(Endian::Native) => cfg!(target_endian = "little"),
        Some(Endian::Big) | None => false,
    };
    let default_unit = if ty == SegType::Binary { 8 } else { 1 };
    let unit = u64::from(spec.unit.unwrap_or(default_unit));
    let size = match (ty, size) {
        (SegType::Utf8 | SegType::Utf16 | SegType::Utf32, size) => {
            let undefined = size.is_none_or(|node| is_atom(node, "undefined"));
            if !undefined || spec.unit.is_some() {
                return Err("utf8, utf16 and utf32 segments take no size or unit".to_string());
            }
            SegSize::Natural
        }
        (SegType::Integer | SegType::Float, None) if spec.unit.is_some() => {
            return Err("a unit needs an explicit size".to_string());
        }
        (SegType::Integer, None) => SegSize::Bits(8),
        (SegType::Float, None) => SegSize::Bits(64),
        (SegType::Binary, None) => SegSize::All { unit },
        (SegType::Binary, Some(node)) if is_atom(node, "all") => SegSize::All { unit },
        (_, Some(node)) => SegSize::Bits(size_bits(node, unit)?),
    };
    Ok(Layout { ty, size, little })
}

fn is_atom(node: &Node, name: &str) -> bool {
    matches!(&node.kind, Kind::Value(Term::Atom(a)) if a == name)
}

/// Size times unit, in bits: the size must be a non-negative integer.
fn size_bits(node: &Node, unit: u64) -> SegResult<u64> {
    let size = match &node.kind {
        Kind::Number(Term::Int(n)) | Kind::Signed(Term::Int(n)) => *n,
        Kind::Number(Term::BigInt(_)) | Kind::Signed(Term::BigInt(_)) => i64::MAX,
        _ => return Err("the size must be a non-negative integer".to_string()),
    };
    let size = u64::try_from(size).map_err(|_| format!("negative size {size}"))?;
    size.checked_mul(unit)
        .ok_or_else(|| "the segment is too large".to_string())
}

/// A segment's value after Erlang's `normalise/1`.
enum SegValue<'a> {
    Int(BigInt),
    Float(f64),
    Bits(&'a Bits),
    Other(&'static str),
}

fn seg_value(kind: &Kind) -> SegValue<'_> {
    match kind {
        Kind::Number(term) | Kind::Signed(term) => match term {
            Term::Int(n) => SegValue::Int(BigInt::from(*n)),
            Term::BigInt(n) => SegValue::Int(n.clone()),
            Term::Float(x) => SegValue::Float(*x),
            other => SegValue::Other(other.kind_name()),
        },
        Kind::Bits(bits) => SegValue::Bits(bits),
        Kind::Str(_) => SegValue::Other("a string"),
        Kind::Value(term) => SegValue::Other(term.kind_name()),
    }
}

/// Takes `n` bits from the budget, or fails when it would run out.
fn spend(budget: &mut u64, n: u64) -> SegResult<()> {
    match budget.checked_sub(n) {
        Some(left) => {
            *budget = left;
            Ok(())
        }
        None => Err(format!(
            "binaries larger than {MAX_BINARY_BYTES} bytes in all are not supported"
        )),
    }
}

fn put_value(bits: &mut Bits, layout: Layout, value: &SegValue, budget: &mut u64) -> SegResult<()> {
    match (layout.ty, value) {
        (_, SegValue::Other(kind)) => Err(format!("{kind} cannot be a binary segment value")),
        (SegType::Integer, SegValue::Int(n)) => {
            let size = fixed_size(layout)?;
            spend(budget, size)?;
            put_integer(bits, n, size, layout.little);
            Ok(())
        }
        (SegType::Float, SegValue::Int(n)) => {
            let x = int_to_float(n).ok_or("the integer is too large for a float")?;
            put_float(bits, x, layout, budget)
        }
        (SegType::Float, SegValue::Float(x)) => put_float(bits, *x, layout, budget),
        (SegType::Binary, SegValue::Bits(value)) => put_binary(bits, value, layout, budget),
        (SegType::Utf8 | SegType::Utf16 | SegType::Utf32, SegValue::Int(n)) => {
            put_utf(bits, n, layout, budget)
        }
        (SegType::Integer, _) => Err("an integer segment needs an integer value".to_string()),
        (SegType::Float, _) => Err("a float segment needs a number".to_string()),
        (SegType::Binary, _) => Err("a binary segment needs a binary value".to_string()),
        (_, _) => Err("a utf segment needs an integer code point".to_string()),
    }
}

fn fixed_size(layout: Layout) -> SegResult<u64> {
    match layout.size {
        SegSize::Bits(n) => Ok(n),
        _ => Err("this segment needs an integer size".to_string()),
    }
}

/// The low `size` bits of `n` in two's complement. For little-endian the
/// whole bytes come low first and the leftover high bits last, as Erlang
/// writes `<<16#ABC:12/little>>`.
fn put_integer(bits: &mut Bits, n: &BigInt, size: u64, little: bool) {
    if size == 0 {
        return;
    }
    let buf = twos_complement(n, size.div_ceil(8) as usize);
    let partial = (size % 8) as u32;
    let (head, body) = match buf.split_first() {
        Some((first, rest)) if partial != 0 => (Some(*first), rest),
        _ => (None, &buf[..]),
    };
    if little {
        let reversed: Vec<u8> = body.iter().rev().copied().collect();
        bits.push_bytes(&reversed);
        if let Some(head) = head {
            bits.push_low_bits(head, partial);
        }
    } else {
        if let Some(head) = head {
            bits.push_low_bits(head, partial);
        }
        bits.push_bytes(body);
    }
}

/// `n` modulo 2^(8 * len) as `len` big-endian bytes.
fn twos_complement(n: &BigInt, len: usize) -> Vec<u8> {
    let raw = n.to_signed_bytes_be();
    if raw.len() >= len {
        return raw[raw.len() - len..].to_vec();
    }
    let fill = if n.sign() == Sign::Minus { 0xFF } else { 0 };
    let mut buf = vec![fill; len - raw.len()];
    buf.extend_from_slice(&raw);
    buf
}

/// An integer as a float, the way the BEAM converts it: exact rounding up
/// to 64 bits, then one 64-bit digit at a time (which may differ from
/// correct rounding in the last bit, and must, to match Erlang).
fn int_to_float(n: &BigInt) -> Option<f64> {
    let digits = n.magnitude().to_u64_digits();
    let mut x = 0.0f64;
    for digit in digits.iter().rev() {
        x = x * 18_446_744_073_709_551_616.0 + *digit as f64;
        if !x.is_finite() {
            return None;
        }
    }
    Some(if n.sign() == Sign::Minus { -x } else { x })
}

fn put_float(bits: &mut Bits, x: f64, layout: Layout, budget: &mut u64) -> SegResult<()> {
    let size = fixed_size(layout)?;
    let mut bytes = match size {
        64 => x.to_bits().to_be_bytes().to_vec(),
        32 => (x as f32).to_bits().to_be_bytes().to_vec(),
        16 => half_bits(x).to_be_bytes().to_vec(),
        _ => {
            return Err(format!(
                "a float segment must be 16, 32 or 64 bits, not {size}"
            ))
        }
    };
    if layout.little {
        bytes.reverse();
    }
    spend(budget, size)?;
    bits.push_bytes(&bytes);
    Ok(())
}

/// IEEE 754 half precision, rounded to nearest even; too large becomes
/// infinity, as in Erlang.
fn half_bits(x: f64) -> u16 {
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    let abs = x.abs();
    if abs.is_nan() {
        return sign | 0x7E00;
    }
    if abs >= 65520.0 {
        return sign | 0x7C00;
    }
    let min_normal = 2f64.powi(-14);
    if abs < min_normal {
        // Subnormal: a multiple of 2^-24 (rounding up to 1024 gives the
        // smallest normal, whose encoding is the same number).
        return sign | (abs * 2f64.powi(24)).round_ties_even() as u16;
    }
    let exponent = ((abs.to_bits() >> 52) & 0x7FF) as i32 - 1023;
    let mantissa = (abs * 2f64.powi(10 - exponent)).round_ties_even() as u16;
    // A mantissa rounded up to 2048 carries into the exponent by itself.
    sign | ((((exponent + 15) as u16) << 10) + (mantissa - 1024))
}

fn put_binary(bits: &mut Bits, value: &Bits, layout: Layout, budget: &mut u64) -> SegResult<()> {
    let size = match layout.size {
        SegSize::All { unit } if value.len.is_multiple_of(unit) => value.len,
        SegSize::All { unit } => {
            let len = value.len;
            return Err(format!(
                "a {len}-bit value is not a multiple of the unit {unit}"
            ));
        }
        SegSize::Bits(n) if n <= value.len => n,
        SegSize::Bits(n) => {
            let len = value.len;
            return Err(format!("size {n} bits is more than the value's {len} bits"));
        }
        SegSize::Natural => return Err("bad binary size".to_string()),
    };
    spend(budget, size)?;
    bits.push_prefix(value, size);
    Ok(())
}

fn put_utf(bits: &mut Bits, n: &BigInt, layout: Layout, budget: &mut u64) -> SegResult<()> {
    let c = u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("{n} is not a Unicode code point"))?;
    let mut bytes = Vec::new();
    match layout.ty {
        SegType::Utf8 => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        SegType::Utf16 => {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let unit_bytes = if layout.little {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                };
                bytes.extend_from_slice(&unit_bytes);
            }
        }
        _ => {
            let code = u32::from(c);
            let code_bytes = if layout.little {
                code.to_le_bytes()
            } else {
                code.to_be_bytes()
            };
            bytes.extend_from_slice(&code_bytes);
        }
    }
    spend(budget, 8 * bytes.len() as u64)?;
    bits.push_bytes(&bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_join_at_any_offset() {
        let mut bits = Bits::default();
        bits.push_low_bits(0b1, 1);
        bits.push_bytes(&[0xFF, 0x00]);
        bits.push_low_bits(0b1010101, 7);
        assert_eq!(bits.len, 24);
        assert_eq!(bits.bytes, vec![0xFF, 0x80, 0x55]);
    }

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        assert_eq!(half_bits(1.0), 0x3C00);
        assert_eq!(half_bits(1.5), 0x3E00);
        assert_eq!(half_bits(65504.0), 0x7BFF);
        assert_eq!(half_bits(65520.0), 0x7C00);
        assert_eq!(half_bits(2f64.powi(-25)), 0);
        assert_eq!(half_bits(2f64.powi(-25) * 1.0000001), 1);
        assert_eq!(half_bits(-0.0), 0x8000);
        assert_eq!(half_bits(1.0 + 2f64.powi(-11) + 2f64.powi(-30)), 0x3C01);
    }

    #[test]
    fn latin1_coding_needs_the_first_two_lines() {
        assert!(declares_latin1(b"%% coding: latin-1\n"));
        assert!(declares_latin1(b"a.\n%% -*- coding: LATIN-1 -*-\n"));
        assert!(!declares_latin1(b"\n\n%% coding: latin-1\n"));
        assert!(!declares_latin1(b"%% coding: latin1\n"));
        assert!(!declares_latin1(b"%% coding: utf-8\n"));
        assert!(!declares_latin1(b"coding: latin-1\n"));
    }
}
