//! The Erlang term syntax: parsing, printing, and agreement with real
//! Erlang (`file:consult/1` run through `erl`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bc_gitops_core::term::{Spanned, Term};
use bc_gitops_core::term_parse::{parse_terms, ParseError, MAX_DEPTH, MAX_INT_DIGITS};
use num_bigint::BigInt;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn s(term: Term) -> Spanned {
    Spanned::new(1, term)
}

fn atom(name: &str) -> Term {
    Term::Atom(name.to_string())
}

fn int(value: i64) -> Term {
    Term::Int(value)
}

fn big(text: &str) -> Term {
    Term::int(text.parse::<BigInt>().unwrap())
}

fn list(items: Vec<Term>) -> Term {
    Term::list(items.into_iter().map(s).collect())
}

fn improper(items: Vec<Term>, tail: Term) -> Term {
    Term::List {
        items: items.into_iter().map(s).collect(),
        tail: Some(Box::new(s(tail))),
    }
}

fn tuple(items: Vec<Term>) -> Term {
    Term::Tuple(items.into_iter().map(s).collect())
}

fn map(entries: Vec<(Term, Term)>) -> Term {
    Term::Map(entries.into_iter().map(|(k, v)| (s(k), s(v))).collect())
}

fn string(text: &str) -> Term {
    list(text.chars().map(|c| int(i64::from(u32::from(c)))).collect())
}

fn bin(bytes: &[u8]) -> Term {
    Term::Binary(bytes.to_vec())
}

/// The single term of `src`.
fn one(src: &str) -> Term {
    match parse_terms(src) {
        Ok(mut terms) if terms.len() == 1 => terms.remove(0).term,
        Ok(terms) => panic!("{src:?}: expected one term, got {terms:?}"),
        Err(e) => panic!("{src:?}: {e}"),
    }
}

fn err(src: &str) -> ParseError {
    match parse_terms(src) {
        Ok(terms) => panic!("{src:?} should not parse, got {terms:?}"),
        Err(e) => e,
    }
}

fn assert_err(src: &str, line: u32, fragment: &str) {
    let e = err(src);
    assert_eq!(e.line, line, "{src:?}: wrong line in {e}");
    assert!(
        e.message.contains(fragment),
        "{src:?}: message {:?} should contain {fragment:?}",
        e.message
    );
}

// ---------------------------------------------------------------------------
// Parsing, feature by feature
// ---------------------------------------------------------------------------

#[test]
fn empty_input_and_comments_give_no_terms() {
    assert_eq!(parse_terms("").unwrap(), vec![]);
    assert_eq!(parse_terms("  \n\t% only a comment\n%%\n").unwrap(), vec![]);
}

#[test]
fn several_terms_with_their_lines() {
    let terms = parse_terms("a.\n\n  {b,\n c}. % trailing\n\"x\".").unwrap();
    let lines: Vec<u32> = terms.iter().map(|t| t.line).collect();
    assert_eq!(lines, vec![1, 3, 5]);
    assert_eq!(terms[1].term, tuple(vec![atom("b"), atom("c")]));
    match &terms[1].term {
        Term::Tuple(items) => assert_eq!(items[1].line, 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_dot_needs_whitespace_comment_or_end_after_it() {
    assert_eq!(one("a.% c"), atom("a"));
    assert_eq!(one("a.\r\n"), atom("a"));
    assert_eq!(one("a.\u{A0}"), atom("a"));
    assert_eq!(parse_terms("a. b.").unwrap().len(), 2);
    assert_err("a.b.", 1, "'.'");
}

#[test]
fn whitespace_includes_controls_and_latin1_blanks() {
    assert_eq!(
        one("\u{1}\r\t\u{0B}\u{0C}{\u{85}a\u{A0}}."),
        tuple(vec![atom("a")])
    );
}

#[test]
fn plain_atoms() {
    assert_eq!(one("abc."), atom("abc"));
    assert_eq!(one("a1@B_c."), atom("a1@B_c"));
    assert_eq!(one("true."), atom("true"));
    assert_eq!(one("maybe."), atom("maybe"));
    assert_eq!(one("else."), atom("else"));
    assert_eq!(one("ßÀé."), atom("ßÀé"));
    assert_eq!(one("ÿ."), atom("ÿ"));
}

#[test]
fn quoted_atoms_and_escapes() {
    assert_eq!(one("'hello world'."), atom("hello world"));
    assert_eq!(one("'end'."), atom("end"));
    assert_eq!(one("''."), atom(""));
    assert_eq!(one(r"'a\'b\\c'."), atom("a'b\\c"));
    assert_eq!(one(r"'\x{3bb}\x41\101\^a\s'."), atom("λAA\u{1} "));
    assert_eq!(one("'λ'."), atom("λ"));
    assert_eq!(one("'a\nb'."), atom("a\nb"));
}

#[test]
fn atom_length_limit_is_255_characters() {
    let ok = "λ".repeat(255);
    assert_eq!(one(&format!("'{ok}'.")), atom(&ok));
    assert_err(&format!("'{ok}λ'."), 1, "too long");
    assert_err(&format!("{}.", "a".repeat(256)), 1, "too long");
}

#[test]
fn reserved_words_are_not_atoms() {
    for word in [
        "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
        "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
        "rem", "try", "when", "xor",
    ] {
        assert_err(&format!("\n{word}."), 2, "reserved word");
    }
}

#[test]
fn variables_are_errors() {
    assert_err("{a,\n Foo}.", 2, "variables are not allowed in terms: Foo");
    assert_err("_.", 1, "variables are not allowed in terms: _");
    assert_err("[_x].", 1, "_x");
    assert_err("Éa.", 1, "Éa");
}

#[test]
fn integers() {
    assert_eq!(one("0."), int(0));
    assert_eq!(one("-42."), int(-42));
    assert_eq!(one("+7."), int(7));
    assert_eq!(one("- 1."), int(-1));
    assert_eq!(one("-\n1."), int(-1));
    assert_eq!(one("1_000_000."), int(1_000_000));
    assert_eq!(one("16#FF."), int(255));
    assert_eq!(one("16#ff_ff."), int(0xFFFF));
    assert_eq!(one("2#1010."), int(10));
    assert_eq!(one("36#Zz."), int(35 * 36 + 35));
    assert_eq!(one("1_6#F."), int(15));
    assert_eq!(one("-16#10."), int(-16));
    assert_eq!(
        one("123456789012345678901234567890."),
        big("123456789012345678901234567890")
    );
    assert_eq!(one("9223372036854775807."), int(i64::MAX));
    assert_eq!(one("-9223372036854775808."), int(i64::MIN));
    assert_eq!(one("9223372036854775808."), big("9223372036854775808"));
    assert_eq!(
        one("-16#FFFFFFFFFFFFFFFFFF."),
        big("-4722366482869645213695")
    );
}

#[test]
fn bad_integers() {
    assert_err("1__0.", 1, "variable");
    assert_err("1_.", 1, "variable _");
    assert_err("16#_F.", 1, "missing digits");
    assert_err("16#.", 1, "missing digits");
    assert_err("37#1.", 1, "base 37");
    assert_err("1#1.", 1, "base 1");
    assert_err("2#102.", 1, "integer 2");
    assert_err("- - 1.", 1, "unexpected '-': a term may have one sign");
    assert_err("-(-1).", 1, "number literal");
    assert_err("--1.", 1, "'--'");
    assert_err("-a.", 1, "number literal");
}

#[test]
fn characters() {
    assert_eq!(one("$a."), int(97));
    assert_eq!(one("$ ."), int(32));
    assert_eq!(one("$\n."), int(10));
    assert_eq!(one("$%."), int(37));
    assert_eq!(one(r"$\n."), int(10));
    assert_eq!(one(r"$\s."), int(32));
    assert_eq!(one(r"$\^A."), int(1));
    assert_eq!(one(r"$\^a."), int(1));
    assert_eq!(one(r"$\^?."), int(31));
    assert_eq!(one(r"$\101."), int(65));
    assert_eq!(one(r"$\777."), int(511));
    assert_eq!(one(r"$\x41."), int(65));
    assert_eq!(one(r"$\x{1F600}."), int(0x1F600));
    assert_eq!(one(r"$\q."), int(113));
    assert_eq!(one("$é."), int(233));
    assert_eq!(one("-$a."), int(-97));
    assert_eq!(one("+$a."), int(97));
    assert_err(r"$\x{110000}.", 1, "Unicode");
    assert_err(r"$\x{D800}.", 1, "Unicode");
    assert_err(r"$\x4g.", 1, "hex");
    assert_err("$", 1, "unterminated character");
}

#[test]
fn floats() {
    assert_eq!(one("1.5."), Term::Float(1.5));
    assert_eq!(one("-1.5."), Term::Float(-1.5));
    assert_eq!(one("1.0e10."), Term::Float(1e10));
    assert_eq!(one("1.0E-3."), Term::Float(1e-3));
    assert_eq!(one("2.5e+3."), Term::Float(2500.0));
    assert_eq!(one("1_0.0_5e0_1."), Term::Float(100.5));
    assert_eq!(one("0.1e-320."), Term::Float(1e-321));
    assert_eq!(one("1.0e-400."), Term::Float(0.0));
    let Term::Float(negative_zero) = one("- 0.0.") else {
        panic!()
    };
    assert!(negative_zero.is_sign_negative());
}

#[test]
fn bad_floats() {
    assert_err("1e3.", 1, "atom e3");
    assert_err("1.e5.", 1, "'.'");
    assert_err("1.0e.", 1, "exponent");
    assert_err("1.0e_1.", 1, "exponent");
    assert_err("1.0e309.", 1, "out of range");
}

#[test]
fn strings() {
    assert_eq!(one(r#""hi"."#), string("hi"));
    assert_eq!(one(r#""ab" "cd"."#), string("abcd"));
    assert_eq!(one("\"a\" % c\n \"b\"."), string("ab"));
    assert_eq!(one("\"\"."), list(vec![]));
    assert_eq!(one("\"é€\"."), string("é€"));
    assert_eq!(
        one(r#""\b\d\e\f\n\r\s\t\v\'\"\\\q\z"."#),
        string("\u{8}\u{7F}\u{1B}\u{C}\n\r \t\u{B}'\"\\qz")
    );
    assert_eq!(
        one(r#""\^@\^Z\^[\1234\x{0}\x7e"."#),
        string("\0\u{1A}\u{1B}S4\0~")
    );
    assert_eq!(one("\"a\\\nb\"."), string("a\nb"));
    assert_eq!(one("\"line\nbreak\"."), string("line\nbreak"));
}

#[test]
fn bad_strings() {
    assert_err("a.\n\n\"abc", 3, "unterminated string starting on line 3");
    assert_err("\n'abc", 2, "unterminated quoted atom starting on line 2");
    assert_err("\"\u{FFFF}\".", 1, "U+FFFF");
    assert_err(r#""\x{}"."#, 1, "no digits");
    assert_err("\"a\\", 1, "unterminated string");
}

#[test]
fn latin1_coding_comment_reads_bytes_as_characters() {
    assert_eq!(
        one("%% coding: latin-1\n\"é\"."),
        list(vec![int(195), int(169)])
    );
    assert_eq!(one("%% -*- coding: utf-8 -*-\n\"é\"."), string("é"));
    assert_eq!(one("\n\n%% coding: latin-1\n\"é\"."), string("é"));
}

#[test]
fn lists() {
    assert_eq!(one("[]."), list(vec![]));
    assert_eq!(one("[ ]."), list(vec![]));
    assert_eq!(one("[a, b]."), list(vec![atom("a"), atom("b")]));
    assert_eq!(one("[a | b]."), improper(vec![atom("a")], atom("b")));
    assert_eq!(one("[a | [b]]."), list(vec![atom("a"), atom("b")]));
    assert_eq!(one("[a | []]."), list(vec![atom("a")]));
    assert_eq!(
        one("[a | [b | c]]."),
        improper(vec![atom("a"), atom("b")], atom("c"))
    );
    assert_eq!(
        one("[a | \"bc\"]."),
        list(vec![atom("a"), int(98), int(99)])
    );
    assert_eq!(one("[1, -2 | 3]."), improper(vec![int(1), int(-2)], int(3)));
}

#[test]
fn bad_lists() {
    assert_err("[a,].", 1, "expected a term, found ']'");
    assert_err("[a|].", 1, "expected a term, found ']'");
    assert_err(
        "[a|b|c].",
        1,
        "expected ']' after the tail of a list, found '|'",
    );
    assert_err(
        "[a b].",
        1,
        "expected ',', '|' or ']' in list, found atom b",
    );
    assert_err("[a\n", 2, "end of input");
}

#[test]
fn tuples() {
    assert_eq!(one("{}."), tuple(vec![]));
    assert_eq!(one("{a}."), tuple(vec![atom("a")]));
    assert_eq!(one("{1 , 2}."), tuple(vec![int(1), int(2)]));
    assert_eq!(
        one("{{}, {{}}}."),
        tuple(vec![tuple(vec![]), tuple(vec![tuple(vec![])])])
    );
}

#[test]
fn bad_tuples() {
    assert_err("{a,}.", 1, "expected a term, found '}'");
    assert_err(
        "{a\n foo}.",
        2,
        "expected ',' or '}' in tuple, found atom foo",
    );
    assert_err("{a, 'b c' d}.", 1, "found atom d");
}

#[test]
fn maps() {
    assert_eq!(one("#{}."), map(vec![]));
    assert_eq!(one("# {a => 1}."), map(vec![(atom("a"), int(1))]));
    assert_eq!(
        one("#{a => 1, \"k\" => [2], {t} => #{}}."),
        map(vec![
            (atom("a"), int(1)),
            (string("k"), list(vec![int(2)])),
            (tuple(vec![atom("t")]), map(vec![])),
        ])
    );
    // Source order and duplicates are kept; the model says the last wins.
    assert_eq!(
        one("#{a => 1, a => 2}."),
        map(vec![(atom("a"), int(1)), (atom("a"), int(2))])
    );
}

#[test]
fn bad_maps() {
    assert_err("#{a := 1}.", 1, "':=' is not allowed");
    assert_err("#{a => 1,}.", 1, "expected a term, found '}'");
    assert_err("#{a}.", 1, "expected '=>' after a map key, found '}'");
    assert_err("#r{a = 1}.", 1, "records are not terms");
    assert_err("#{} #{}.", 1, "expected '.' after the term, found '#'");
    assert_err("#{a => 1}#{a => 2}.", 1, "'#'");
}

#[test]
fn parentheses_leave_no_trace() {
    assert_eq!(one("(a)."), atom("a"));
    assert_eq!(one("((1))."), int(1));
    assert_eq!(one("-(1)."), int(-1));
    assert_eq!(one("- ( (2.5) )."), Term::Float(-2.5));
    assert_eq!(
        one("{(a), [(-1)]}."),
        tuple(vec![atom("a"), list(vec![int(-1)])])
    );
    assert_err("().", 1, "expected a term, found ')'");
    assert_err("(a.", 1, "expected ')'");
}

#[test]
fn other_expressions_are_not_terms() {
    assert_err("1 + 2.", 1, "'+'");
    assert_err("a, b.", 1, "','");
    assert_err("f(1).", 1, "'('");
    assert_err("fun() -> ok end.", 1, "reserved word fun");
    assert_err("a = b.", 1, "'='");
    assert_err("\"a\" ++ \"b\".", 1, "'++'");
    assert_err("m:f.", 1, "':'");
    assert_err("<0.1.0>.", 1, "'<'");
    assert_err("a × b.", 1, "'×'");
    assert_err("λ.", 1, "unexpected character 'λ'");
    assert_err("\u{FEFF}a.", 1, "U+FEFF");
    assert_err(".", 1, "expected a term, found '.'");
    assert_err(
        "a\n\n",
        3,
        "missing '.' at the end of the term starting on line 1",
    );
    assert_err("a. b", 1, "missing '.'");
    assert_err("%\u{FFFF}\na.", 1, "U+FFFF");
}

#[test]
fn binaries_plain() {
    assert_eq!(one("<<>>."), bin(&[]));
    assert_eq!(one("<<1,2,255>>."), bin(&[1, 2, 255]));
    assert_eq!(one("<<\"abc\">>."), bin(b"abc"));
    assert_eq!(one("<<\"a\" \"b\", \"c\">>."), bin(b"abc"));
    assert_eq!(one("<<\"\">>."), bin(&[]));
    assert_eq!(one("<<$a, $b>>."), bin(b"ab"));
    assert_eq!(one("<<256, -1>>."), bin(&[0, 255]));
    assert_eq!(one("<<-(1)>>."), bin(&[255]));
    assert_eq!(one("<<(1):(8)>>."), bin(&[1]));
    assert_eq!(one("<<\"é\">>."), bin(&[233]));
    assert_eq!(one("<<\"€\">>."), bin(&[0xAC]));
}

#[test]
fn binaries_with_sizes_and_types() {
    assert_eq!(one("<<1:16>>."), bin(&[0, 1]));
    assert_eq!(one("<<300:16/little>>."), bin(&[44, 1]));
    assert_eq!(one("<<1:16/native>>."), bin(&[1, 0]));
    assert_eq!(one("<<-1:16/signed-integer-big>>."), bin(&[255, 255]));
    assert_eq!(one("<<1:4, 2:4>>."), bin(&[0x12]));
    assert_eq!(one("<<16#ABC:12/little, 0:4>>."), bin(&[0xBC, 0xA0]));
    assert_eq!(one("<<1:2/unit:4>>."), bin(&[1]));
    assert_eq!(one("<<1:0>>."), bin(&[]));
    assert_eq!(one("<<1:1/unit:16>>."), bin(&[0, 1]));
    assert_eq!(one("<<1:$\\^B/unit:4>>."), bin(&[1]));
    assert_eq!(one("<<1.5/float>>."), bin(&[63, 248, 0, 0, 0, 0, 0, 0]));
    assert_eq!(one("<<1.5:32/float>>."), bin(&[63, 192, 0, 0]));
    assert_eq!(one("<<1.5:16/float-little>>."), bin(&[0, 62]));
    assert_eq!(one("<<1:16/float>>."), bin(&[60, 0]));
    assert_eq!(one("<<1.0e300:32/float>>."), bin(&[127, 128, 0, 0]));
    assert_eq!(
        one("<<1.5:8/float-unit:8>>."),
        bin(&[63, 248, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(one("<<1/float-float>>."), bin(&[63, 240, 0, 0, 0, 0, 0, 0]));
    assert_eq!(one("<<\"é\"/utf8>>."), bin(&[195, 169]));
    assert_eq!(one("<<\"ab\"/utf16-little>>."), bin(&[97, 0, 98, 0]));
    assert_eq!(one("<<$a/utf32>>."), bin(&[0, 0, 0, 97]));
    assert_eq!(one("<<16#1F600/utf16>>."), bin(&[0xD8, 0x3D, 0xDE, 0x00]));
    assert_eq!(one("<<$a:undefined/utf8>>."), bin(&[97]));
    assert_eq!(one("<<\"a\":16>>."), bin(&[0, 97]));
    assert_eq!(one("<<\"ab\":4>>."), bin(&[0x12]));
    assert_eq!(one("<<\"a\"/float>>."), bin(&[64, 88, 64, 0, 0, 0, 0, 0]));
    assert_eq!(one("<<\"\"/float>>."), bin(&[]));
    assert_eq!(one("<<(<<1,2>>)/binary, 3>>."), bin(&[1, 2, 3]));
    assert_eq!(one("<<<<1,2,3>>:2/binary>>."), bin(&[1, 2]));
    assert_eq!(one("<<<<1,2>>:all/binary>>."), bin(&[1, 2]));
    assert_eq!(one("<<<<1,2>>/bytes-binary>>."), bin(&[1, 2]));
    assert_eq!(one("<<<<1,2>>:15/bits, 0:1>>."), bin(&[1, 2]));
    assert_eq!(one("<<1:4, <<1:4>>/bits>>."), bin(&[0x11]));
    assert_eq!(one("<<1/'integer'>>."), bin(&[1]));
    // The BEAM converts big integers to floats 64 bits at a time.
    assert_eq!(
        one("<<166153499473114502559719956244594689/float>>."),
        bin(&[71, 64, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn bad_binaries() {
    assert_err("<<1:4>>.", 1, "bitstrings are not supported");
    assert_err("{\n<<1:$a>>}.", 2, "97 bits");
    assert_err("<<1.5>>.", 1, "integer segment needs an integer");
    assert_err("<<1:8/binary>>.", 1, "needs a binary value");
    assert_err("<<<<\"a\">>>>.", 1, "integer segment");
    assert_err("<<a>>.", 1, "an atom cannot be a binary segment value");
    assert_err("<<[1]>>.", 1, "a list cannot");
    assert_err("<<1/foo>>.", 1, "unknown type foo");
    assert_err("<<1/integer:3>>.", 1, "unknown type integer:3");
    assert_err("<<1/integer-float>>.", 1, "conflicting types");
    assert_err("<<1/big-little>>.", 1, "conflicting byte orders");
    assert_err("<<1/unit:8>>.", 1, "a unit needs an explicit size");
    assert_err("<<1:1/unit:257>>.", 1, "unit must be 1..256");
    assert_err("<<1:1/unit:0>>.", 1, "unit must be 1..256");
    assert_err("<<1:8/utf8>>.", 1, "no size or unit");
    assert_err("<<16#D800/utf8>>.", 1, "not a Unicode code point");
    assert_err("<<1:12/float>>.", 1, "16, 32 or 64");
    assert_err("<<1:all>>.", 1, "non-negative integer");
    assert_err("<<1:(-8)>>.", 1, "negative size");
    assert_err("<<1:-8>>.", 1, "unexpected '-'");
    assert_err("<<1:8.0>>.", 1, "non-negative integer");
    assert_err("<<<<1,2,3>>:4/binary>>.", 1, "more than the value");
    assert_err("<<<<1:4>>/binary>>.", 1, "multiple of the unit 8");
    assert_err("<<\"\"/binary>>.", 1, "binary value");
    assert_err("<<-\"a\">>.", 1, "number literal");
    assert_err("<<#{}>>.", 1, "found '#'");
    assert_err("<<1/unit:$a>>.", 1, "an integer after 'unit:'");
    assert_err("<<1:(8)/(integer)>>.", 1, "a type");
    assert_err(
        "<<1 2>>.",
        1,
        "expected ',' or '>>' in binary, found integer 2",
    );
    let huge = err("<<0:4294967295/unit:256>>.");
    assert!(huge.message.contains("not supported"), "{huge}");
}

#[test]
fn nesting_is_limited() {
    let ok = format!("{}a{}.", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse_terms(&ok).is_ok());
    let deep = format!(
        "{}a{}.",
        "[".repeat(MAX_DEPTH + 1),
        "]".repeat(MAX_DEPTH + 1)
    );
    assert!(err(&deep).message.contains("nested too deeply"));
    // Far deeper than any stack could take, without a crash.
    for opener in ["[", "{", "(", "-(", "#{a=>", "<<(", "[a|", "<<1:("] {
        let src = opener.repeat(100_000);
        assert!(err(&src).message.contains("nested too deeply"), "{opener}");
    }
}

#[test]
fn integer_digits_are_limited() {
    let most = "9".repeat(MAX_INT_DIGITS);
    assert!(matches!(one(&format!("{most}.")), Term::BigInt(_)));
    assert!(matches!(
        one(&format!("36#{}.", "z".repeat(MAX_INT_DIGITS))),
        Term::BigInt(_)
    ));
    // A megabyte of digits would take seconds to convert: refused at once.
    let start = std::time::Instant::now();
    for src in [
        format!("\n{most}9."),
        format!("\n7#{}.", "6".repeat(1_000_000)),
        format!("\n{}.", "1".repeat(1_000_000)),
    ] {
        let e = err(&src);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("more than 4300 digits"), "{e}");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn error_display_has_line_and_message() {
    let e = err("a.\nb\n");
    assert_eq!(e.to_string(), format!("line {}: {}", e.line, e.message));
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

#[test]
fn print_atoms() {
    let cases = [
        ("abc", "abc"),
        ("a1@B_c", "a1@B_c"),
        ("ßé", "'\\337\\351'"),
        ("Abc", "'Abc'"),
        ("_a", "'_a'"),
        ("", "''"),
        ("a b", "'a b'"),
        ("end", "'end'"),
        ("maybe", "'maybe'"),
        ("a'b\\c", "'a\\'b\\\\c'"),
        ("\n\t\u{1}\u{7F}\u{80}\u{A0}", "'\\n\\t\\001\\d\\200\\240'"),
        ("λ", "'\\x{3BB}'"),
        ("1a", "'1a'"),
    ];
    for (name, printed) in cases {
        assert_eq!(atom(name).to_string(), printed);
    }
}

#[test]
fn print_numbers() {
    assert_eq!(int(-5).to_string(), "-5");
    assert_eq!(
        big("-123456789012345678901234567890").to_string(),
        "-123456789012345678901234567890"
    );
    assert_eq!(Term::Float(1.5).to_string(), "1.5");
    assert_eq!(Term::Float(1e20).to_string(), "1.0e20");
    assert_eq!(Term::Float(1e-7).to_string(), "1.0e-7");
    assert_eq!(Term::Float(1.25e-7).to_string(), "1.25e-7");
    assert_eq!(Term::Float(100.0).to_string(), "100.0");
    assert_eq!(Term::Float(-0.0).to_string(), "-0.0");
    assert_eq!(Term::Float(5e-324).to_string(), "5.0e-324");
    assert_eq!(Term::Float(f64::INFINITY).to_string(), "1.0e999");
    assert!(parse_terms("1.0e999.").is_err());
    assert!(parse_terms(&format!("{}.", Term::Float(f64::NAN))).is_err());
}

#[test]
fn print_containers() {
    assert_eq!(bin(b"a\"b\\").to_string(), r#"<<"a\"b\\">>"#);
    assert_eq!(bin(&[]).to_string(), "<<>>");
    assert_eq!(bin(&[1, 200]).to_string(), "<<1,200>>");
    assert_eq!(string("hi").to_string(), "[104,105]");
    assert_eq!(improper(vec![atom("a")], atom("b")).to_string(), "[a|b]");
    assert_eq!(tuple(vec![int(1), list(vec![])]).to_string(), "{1,[]}");
    assert_eq!(
        map(vec![(atom("k"), bin(b"v")), (int(1), tuple(vec![]))]).to_string(),
        r#"#{k => <<"v">>,1 => {}}"#
    );
    // Not a normal form, but still valid syntax for the same list.
    let odd = Term::List {
        items: vec![],
        tail: Some(Box::new(s(atom("t")))),
    };
    assert_eq!(odd.to_string(), "t");
    assert_eq!(Spanned::new(9, atom("x")).to_string(), "x");
}

// ---------------------------------------------------------------------------
// Round trips of parsed text (what fuzz/fuzz_targets/term_parse.rs checks)
// ---------------------------------------------------------------------------

/// Print then parse must give the same terms.
fn assert_round_trip(src: &str) {
    let terms = parse_terms(src).unwrap();
    let printed: String = terms.iter().map(|t| format!("{t}.\n")).collect();
    let again = parse_terms(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(terms, again, "{printed}");
}

#[test]
fn round_trip_edge_cases() {
    assert_round_trip("'\\^\u{A0}'. '\\x{10FFFF}\\^@'. 'ÿ\u{80}\u{9F}'. 'a\\'b'.");
    assert_round_trip("-0.0. 5.0e-324. 1.7976931348623157e308. -1.0e-7.");
    assert_round_trip("-9223372036854775808. 16#FFFFFFFFFFFFFFFFFFFFFFFF. -$\\x{10FFFF}.");
    assert_round_trip("[a | [b | c]]. [[] | []]. [x | \"yz\"]. {[1 | 2.5], #{[] => []}}.");
    assert_round_trip("<<\"\\\"\\\\\">>. <<0, 127, 128>>. <<\"é\"/utf8>>. <<>>.");
    assert_round_trip("%% coding: latin-1\n'\u{e9}'. \"\u{e9}\".");
    // Printed text must not switch Erlang's source encoding by accident.
    assert_round_trip("'%coding: latin-1'. 'é'. 'ß'.");
}

// ---------------------------------------------------------------------------
// Property: printing then parsing gives the term back
// ---------------------------------------------------------------------------

fn arb_atom() -> impl Strategy<Value = Term> {
    let any_text = prop::collection::vec(any::<char>(), 0..12).prop_map(|chars| {
        chars
            .into_iter()
            .filter(|c| *c != '\u{FFFE}' && *c != '\u{FFFF}')
            .collect::<String>()
    });
    prop_oneof![
        "[a-z][a-zA-Z0-9_@]{0,8}",
        "[A-Z_][a-z]{0,3}",
        "[ -~]{0,10}",
        "[a-zß-ÿ][À-ÿ]{0,4}",
        prop::sample::select(vec!["end", "maybe", "else", "fun", "true", "", "'", "\\"])
            .prop_map(String::from),
        any_text,
    ]
    .prop_map(Term::Atom)
}

fn arb_int() -> impl Strategy<Value = Term> {
    prop_oneof![
        any::<i64>().prop_map(Term::Int),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 1..40)).prop_map(|(negative, bytes)| {
            let magnitude = BigInt::from_bytes_be(num_bigint::Sign::Plus, &bytes);
            Term::int(if negative { -magnitude } else { magnitude })
        }),
    ]
}

fn arb_float() -> impl Strategy<Value = Term> {
    prop_oneof![
        any::<f64>(),
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        -1e6f64..1e6,
    ]
    .prop_filter("finite and not -0.0", |x| {
        x.is_finite() && !(*x == 0.0 && x.is_sign_negative())
    })
    .prop_map(Term::Float)
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        arb_atom(),
        arb_int(),
        arb_float(),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Term::Binary),
        "[ -~]{0,12}".prop_map(|text| Term::Binary(text.into_bytes())),
        prop::collection::vec(any::<char>(), 0..8).prop_map(|chars| {
            let text: String = chars.into_iter().collect();
            string(&text)
        }),
    ]
}

fn arb_term() -> impl Strategy<Value = Term> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        let spanned = inner.clone().prop_map(s);
        let not_list = inner.clone().prop_filter("a tail that is not a list", |t| {
            !matches!(t, Term::List { .. })
        });
        prop_oneof![
            prop::collection::vec(spanned.clone(), 0..6).prop_map(Term::list),
            (prop::collection::vec(spanned.clone(), 1..4), not_list).prop_map(|(items, tail)| {
                Term::List {
                    items,
                    tail: Some(Box::new(s(tail))),
                }
            }),
            prop::collection::vec(spanned.clone(), 0..6).prop_map(Term::Tuple),
            prop::collection::vec((spanned.clone(), spanned), 0..4).prop_map(Term::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn printed_terms_parse_back_equal(term in arb_term()) {
        let printed = format!("{term}.");
        let parsed = parse_terms(&printed);
        prop_assert!(parsed.is_ok(), "{printed}: {parsed:?}");
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0].term, &term, "printed as {}", printed);
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,60}") {
        let _ = parse_terms(&src);
    }
}

// ---------------------------------------------------------------------------
// Agreement with real Erlang
// ---------------------------------------------------------------------------

/// What `file:consult/1` made of one file, each term in the canonical form
/// of [`canonical`].
#[derive(Debug, PartialEq)]
enum Consulted {
    Terms(Vec<String>),
    /// Erlang read a bitstring that is not whole bytes, which we refuse.
    Bitstring,
    Error,
}

/// A term printed like Erlang's `~w`, except that floats are their IEEE
/// bits (exact) and map entries are sorted by their printed key (the same
/// order on both sides).
fn canonical(term: &Term) -> String {
    canonical_as(term, false)
}

/// With `same_zeros`, `-0.0` prints as `0.0`: OTP 25 map keys compare
/// with `=:=`, for which the two are equal.
fn canonical_as(term: &Term, same_zeros: bool) -> String {
    let canonical = |term: &Term| canonical_as(term, same_zeros);
    match term {
        Term::Atom(name) => w_atom(name),
        Term::Int(value) => value.to_string(),
        Term::BigInt(value) => value.to_string(),
        Term::Float(value) if same_zeros && *value == 0.0 => "F0".to_string(),
        Term::Float(value) => format!("F{}", value.to_bits()),
        Term::Binary(bytes) => {
            let bytes: Vec<String> = bytes.iter().map(u8::to_string).collect();
            format!("<<{}>>", bytes.join(","))
        }
        Term::List { items, tail } => {
            let mut out = format!("[{}", joined(items, same_zeros));
            if let Some(tail) = tail {
                write!(out, "|{}", canonical(&tail.term)).unwrap();
            }
            out + "]"
        }
        Term::Tuple(items) => format!("{{{}}}", joined(items, same_zeros)),
        Term::Map(entries) => {
            // As in `maps:from_list/1`, a later equal key replaces the
            // whole entry.
            let mut by_key: BTreeMap<String, (String, String)> = BTreeMap::new();
            for (k, v) in entries {
                let entry = (canonical(&k.term), canonical(&v.term));
                by_key.insert(canonical_as(&k.term, true), entry);
            }
            let mut sorted: Vec<(String, String)> = by_key.into_values().collect();
            sorted.sort();
            let entries: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=>{v}")).collect();
            format!("#{{{}}}", entries.join(","))
        }
    }
}

fn joined(items: &[Spanned], same_zeros: bool) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| canonical_as(&i.term, same_zeros))
        .collect();
    items.join(",")
}

/// An atom as OTP 25's `io_lib:write_atom/1` writes it, on its own rather
/// than through our `Display` (which also quotes `maybe` and `else`).
fn w_atom(name: &str) -> String {
    const RESERVED: [&str; 27] = [
        "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
        "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
        "rem", "try", "when", "xor",
    ];
    let lower = |c: char| c.is_ascii_lowercase() || ('ß'..='ÿ').contains(&c) && c != '÷';
    let upper = |c: char| c.is_ascii_uppercase() || ('À'..='Þ').contains(&c) && c != '×';
    let name_char = |c: char| lower(c) || upper(c) || c.is_ascii_digit() || c == '_' || c == '@';
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(lower) && chars.all(name_char);
    if plain && !RESERVED.contains(&name) {
        return name.to_string();
    }
    let mut out = String::from("'");
    for c in name.chars() {
        let code = u32::from(c);
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            ' '..='~' | '\u{A0}'..='\u{FF}' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{B}' => out.push_str("\\v"),
            '\u{8}' => out.push_str("\\b"),
            '\u{C}' => out.push_str("\\f"),
            '\u{1B}' => out.push_str("\\e"),
            '\u{7F}' => out.push_str("\\d"),
            _ if code > 0xFF => write!(out, "\\x{{{code:X}}}").unwrap(),
            _ => write!(out, "\\{code:03o}").unwrap(),
        }
    }
    out + "'"
}

/// The Erlang side of [`canonical`]: consults `Dir/N.txt` for each N and
/// writes one line per file to `Dir/out.txt`.
const ERLANG_CONSULT_ALL: &str = r##"
P = fun P(t, T) when is_atom(T) -> io_lib:format("~w", [T]);
        P(t, T) when is_integer(T) -> integer_to_list(T);
        P(t, T) when is_float(T) -> <<B:64>> = <<T/float>>, [$F | integer_to_list(B)];
        P(t, T) when is_binary(T) ->
            ["<<", lists:join(",", [integer_to_list(X) || X <- binary_to_list(T)]), ">>"];
        P(t, T) when is_bitstring(T) -> throw(bitstring);
        P(t, T) when is_list(T) -> ["[", P(l, T), "]"];
        P(t, T) when is_tuple(T) -> ["{", lists:join(",", [P(t, X) || X <- tuple_to_list(T)]), "}"];
        P(t, T) when is_map(T) ->
            KVs = lists:sort([{lists:flatten(P(t, K)), lists:flatten(P(t, V))}
                              || {K, V} <- maps:to_list(T)]),
            ["#{", lists:join(",", [[K, "=>", V] || {K, V} <- KVs]), "}"];
        P(l, []) -> [];
        P(l, [H]) -> P(t, H);
        P(l, [H | T]) when is_list(T) -> [P(t, H), ",", P(l, T)];
        P(l, [H | T]) -> [P(t, H), "|", P(t, T)]
    end,
Line = fun(I) ->
    File = filename:join(Dir, integer_to_list(I) ++ ".txt"),
    Result = case file:consult(File) of
        {ok, Terms} ->
            try ["ok" | [[$\t, P(t, T)] || T <- Terms]]
            catch throw:bitstring -> "bitstring"
            end;
        {error, _} -> "error"
    end,
    [integer_to_list(I), $\t, Result, $\n]
end,
Out = [Line(I) || I <- lists:seq(0, Count - 1)],
ok = file:write_file(filename:join(Dir, "out.txt"), unicode:characters_to_binary(Out)),
halt(0).
"##;

/// Runs `file:consult/1` on each file in one `erl`. Fails the test, never
/// skips it, when `erl` is missing.
fn erl_consult_all(files: &[String]) -> Vec<Consulted> {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.txt")), text).unwrap();
    }
    let dir_text = dir.path().to_str().unwrap();
    assert!(!dir_text.contains('"'), "odd temp dir {dir_text}");
    let program = format!(
        "Dir = \"{dir_text}\", Count = {}, {ERLANG_CONSULT_ALL}",
        files.len()
    );
    let output = Command::new("erl")
        .args(["-noshell", "-noinput", "-eval", &program])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `erl` ({e}): Erlang/OTP must be installed and on PATH \
                 for the conformance test against file:consult/1"
            )
        });
    let out_path = dir.path().join("out.txt");
    assert!(
        output.status.success() && Path::new(&out_path).exists(),
        "erl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let out = std::fs::read_to_string(out_path).unwrap();
    let results: Vec<Consulted> = out.lines().map(parse_erl_line).collect();
    assert_eq!(results.len(), files.len());
    results
}

fn parse_erl_line(line: &str) -> Consulted {
    let mut fields = line.split('\t').skip(1);
    match fields.next() {
        Some("ok") => Consulted::Terms(fields.map(str::to_string).collect()),
        Some("bitstring") => Consulted::Bitstring,
        _ => Consulted::Error,
    }
}

fn ours(text: &str) -> Consulted {
    match parse_terms(text) {
        Ok(terms) => Consulted::Terms(terms.iter().map(|t| canonical(&t.term)).collect()),
        Err(e) if e.message.contains("bitstrings are not supported") => Consulted::Bitstring,
        Err(_) => Consulted::Error,
    }
}

/// Every file must give the same result from Erlang and from us. Returns
/// how many files Erlang accepted.
fn assert_agrees_with_erlang(files: &[String]) -> usize {
    let theirs = erl_consult_all(files);
    let mut mismatches = Vec::new();
    for (text, erl) in files.iter().zip(&theirs) {
        let ours = ours(text);
        // We stop at the first binary that is not whole bytes, where Erlang
        // may go on to another error: both refuse the file.
        let both_refuse = *erl == Consulted::Error && ours == Consulted::Bitstring;
        if ours != *erl && !both_refuse {
            mismatches.push(format!(
                "source {text:?}\n  erl:  {erl:?}\n  ours: {ours:?}\n  ours in full: {:?}",
                parse_terms(text)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} files differ from file:consult/1:\n{}",
        mismatches.len(),
        files.len(),
        mismatches
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    theirs
        .iter()
        .filter(|r| matches!(r, Consulted::Terms(_)))
        .count()
}

/// Terms that must parse, covering every feature; one file holds them all.
const VALID: &[&str] = &[
    "abc",
    "a1@B_c",
    "true",
    "maybe",
    "else",
    "ßÀé",
    "'hello world'",
    "'end'",
    "''",
    r"'a\'b\\c'",
    r"'\x{3bb}\x41\101\^a\s'",
    "'λ€'",
    "'a\nb'",
    "'\\d\\200\u{A0}'",
    "0",
    "-42",
    "+7",
    "- 1",
    "1_000_000",
    "16#FF",
    "16#ff_ff",
    "2#1010",
    "36#Zz",
    "1_6#F",
    "-16#10",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "$a",
    "$ ",
    "$\n",
    "$%",
    r"$\n",
    r"$\s",
    r"$\^A",
    r"$\^?",
    r"$\101",
    r"$\777",
    r"$\x41",
    r"$\x{1F600}",
    r"$\q",
    "$é",
    "-$a",
    "+$a",
    "$'",
    "$\"",
    "$\\\\",
    "1.5",
    "-1.5",
    "1.0e10",
    "1.0E-3",
    "2.5e+3",
    "1_0.0_5e0_1",
    "0.1e-320",
    "1.0e-400",
    "- 0.0",
    "0.1",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "4.9e-324",
    "123456789012345678901234567890.123456789e-10",
    "0.30000000000000004",
    r#""hi""#,
    r#""ab" "cd""#,
    "\"a\" % c\n \"b\"",
    r#""""#,
    "\"é€\"",
    r#""\b\d\e\f\n\r\s\t\v\'\"\\\q\z""#,
    r#""\^@\^Z\^[\1234\x{0}\x7e""#,
    "\"a\\\nb\"",
    "[]",
    "[ ]",
    "[a, b]",
    "[a | b]",
    "[a | [b]]",
    "[a | []]",
    "[a | [b | c]]",
    "[a | \"bc\"]",
    "[1, -2 | 3]",
    "{}",
    "{a}",
    "{1 , 2}",
    "{{}, {{}}}",
    "#{}",
    "# {a => 1}",
    "#{a => 1, \"k\" => [2], {t} => #{}}",
    "#{a => 1, a => 2}",
    "#{1 => a, 1.0 => b, <<1>> => c, [1] => d}",
    "#{- 0.0 => a, 0.0 => b, {0.0} => c, {-0.0} => d}",
    "(a)",
    "((1))",
    "-(1)",
    "- ( (2.5) )",
    "{(a), [(-1)]}",
    "<<>>",
    "<<1,2,255>>",
    "<<\"abc\">>",
    "<<\"a\" \"b\", \"c\">>",
    "<<\"\">>",
    "<<$a, $b>>",
    "<<256, -1>>",
    "<<-(1)>>",
    "<<(1):(8)>>",
    "<<\"é\">>",
    "<<\"€\">>",
    "<<1:16>>",
    "<<300:16/little>>",
    "<<1:16/native>>",
    "<<-1:16/signed-integer-big>>",
    "<<1:4, 2:4>>",
    "<<16#ABC:12/little, 0:4>>",
    "<<16#ABCDE:20/little, 0:4>>",
    "<<1:2/unit:4>>",
    "<<1:0>>",
    "<<1:1/unit:16>>",
    "<<1.5/float>>",
    "<<1.5:32/float>>",
    "<<1.5:16/float-little>>",
    "<<1:16/float>>",
    "<<1.0e300:32/float>>",
    "<<(-1.0e300):16/float>>",
    "<<1.0e-10:16/float>>",
    "<<65519.99:16/float>>",
    "<<6.1e-5:16/float>>",
    "<<1.5:8/float-unit:8>>",
    "<<1/float-float>>",
    "<<1.5:64/float-native>>",
    "<<\"é\"/utf8>>",
    "<<\"ab\"/utf16-little>>",
    "<<$a/utf32>>",
    "<<16#1F600/utf16>>",
    "<<16#1F600/utf32-little>>",
    "<<16#FFFE/utf8>>",
    "<<$a:undefined/utf8>>",
    "<<\"a\":16>>",
    "<<\"ab\":4>>",
    "<<\"a\":16/little>>",
    "<<\"a\"/float>>",
    "<<\"\"/float>>",
    "<<\"\"/utf8>>",
    "<<(<<1,2>>)/binary, 3>>",
    "<<<<1,2,3>>:2/binary>>",
    "<<<<1,2>>:all/binary>>",
    "<<<<1,2>>/bytes-binary>>",
    "<<<<1,2>>:15/bits, 0:1>>",
    "<<1:4, <<1:4>>/bits>>",
    "<<1/'integer'>>",
    "<<1:8/little-unit:1>>",
    "<<$a/utf16-little-signed>>",
    "<<(1.5):32/float>>",
    "<<166153499473114502559719956244594689/float>>",
    "<<9007199254740993/float>>",
    "<<-166153499473114502559719956244594689:16/float>>",
    "<<123456789012345678901234567890:100/little, 0:4>>",
    "<<-5:70, 0:2>>",
    "{config, [{port, 8080}, {hosts, [\"a\", <<\"b\">>]}, {opts, #{debug => true}}]}",
];

/// Texts that `file:consult/1` refuses, each in its own file.
const INVALID: &[&str] = &[
    "a",
    "a.b.",
    "1e3.",
    "1.e5.",
    "1.0e.",
    "1.0e309.",
    "1__0.",
    "16#.",
    "37#1.",
    "2#102.",
    "- - 1.",
    "-(-1).",
    "--1.",
    "-a.",
    "Foo.",
    "_.",
    "end.",
    "a b.",
    "[a,].",
    "[a|].",
    "[a|b|c].",
    "{a,}.",
    "#{a := 1}.",
    "#{a => 1,}.",
    "#r{a = 1}.",
    "#{} #{}.",
    "().",
    "1 + 2.",
    "a, b.",
    "f(1).",
    "a = b.",
    "\"a\" ++ \"b\".",
    "m:f.",
    "<0.1.0>.",
    "λ.",
    "\u{FEFF}a.",
    ".",
    "%\u{FFFF}\na.",
    "\"\u{FFFF}\".",
    r#""\x{}"."#,
    r"$\x{110000}.",
    r"$\x{D800}.",
    r"$\x4g.",
    "$",
    "\"abc",
    "'abc",
    "<<1.5>>.",
    "<<1:8/binary>>.",
    "<<<<\"a\">>>>.",
    "<<a>>.",
    "<<[1]>>.",
    "<<1/foo>>.",
    "<<1/integer:3>>.",
    "<<1/integer-float>>.",
    "<<1/big-little>>.",
    "<<1/unit:8>>.",
    "<<1:1/unit:257>>.",
    "<<1:8/utf8>>.",
    "<<16#D800/utf8>>.",
    "<<16#110000/utf8>>.",
    "<<1:12/float>>.",
    "<<1:all>>.",
    "<<1:(-8)>>.",
    "<<1:-8>>.",
    "<<1:8.0>>.",
    "<<<<1,2,3>>:4/binary>>.",
    "<<<<1:4>>/binary>>.",
    "<<\"\"/binary>>.",
    "<<-\"a\">>.",
    "<<#{}>>.",
    "<<1/unit:$a>>.",
    "<<1:(8)/(integer)>>.",
    "<<1 2>>.",
    "<<1/utf32-unit:8>>.",
    "<<1e400/float>>.",
    "<<1:4>>.",
    "<<1:$a>>.",
    "$\\^.",
    "'a",
    "a. b",
    "\"a\\",
];

#[test]
fn agrees_with_erlang_on_a_corpus() {
    let mut files = Vec::new();
    // One file with every valid term, so that order and lines are checked
    // over many terms.
    files.push(VALID.iter().map(|t| format!("{t}.\n")).collect::<String>());
    files.extend(VALID.iter().map(|t| format!("{t}.")));
    files.extend(INVALID.iter().map(|t| t.to_string()));
    // An integer too large for a float.
    files.push(format!("<<1{}/float>>.", "0".repeat(330)));
    files.push(format!("'{}'.", "λ".repeat(255)));
    files.push(format!("'{}'.", "λ".repeat(256)));
    files.push(format!("{}.", "a".repeat(255)));
    files.push(format!("{}.", "a".repeat(256)));
    files.push("%% coding: latin-1\n\"é\".\n'ÿ€'.".to_string());
    files.push("a.\n%% -*- coding: LATIN-1 -*-\n<<\"é\">>.".to_string());
    files.push("\n\n%% coding: latin-1\n\"é\".".to_string());
    files.push("\"x%coding=latin-1\".\n\"é\".".to_string());
    files.push("% coding: latin-1x\n\"é\".".to_string());
    files.push("% coding:latin-1\n\"é\".".to_string());
    files.push("%% encoding = latin-1\n\"é\".".to_string());
    let printed = printed_forms(&files);
    files.extend(printed);
    let accepted = assert_agrees_with_erlang(&files);
    let valid = 1 + VALID.len() + 9;
    assert_eq!(accepted, 2 * valid, "the valid part of the corpus");
}

/// Our printing of each text we parse, so that Erlang checks that it reads
/// it back as the same terms.
fn printed_forms(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter_map(|text| parse_terms(text).ok())
        .map(|terms| terms.iter().map(|t| format!("{t}.\n")).collect())
        .collect()
}

/// A small deterministic random generator (xorshift64*), so that the
/// random corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn gen_space(rng: &mut Rng) -> &'static str {
    rng.pick(&[
        "", "", "", " ", " ", "\n", "\t", " % c\n", "\r\n", "\u{A0}", "\u{85}", "\u{1}", "%λ\n",
    ])
}

fn gen_atom(rng: &mut Rng) -> String {
    rng.pick(&[
        "a",
        "ok",
        "b1@x_Y",
        "true",
        "maybe",
        "else",
        "end",
        "ßx",
        "éa",
        "'A b'",
        "'\\n'",
        "'\\x{3bb}'",
        "'\\^A'",
        "'\\101'",
        "'é'",
        "'λ'",
        "''",
        "'a\\'b'",
        "'\\q'",
        "'\\x4'",
        "Var",
        "_",
        "'end'",
    ])
    .to_string()
}

fn gen_integer(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.below(1000).to_string(),
        1 => rng.next().to_string() + &rng.next().to_string(),
        2 => format!(
            "{}#{}",
            rng.pick(&["2", "8", "16", "36", "1_6", "37", "1"]),
            rng.pick(&["101", "7_7", "fF", "zZ", "_1", "", "1__0", "1_"])
        ),
        _ => rng
            .pick(&["1_000", "0", "00", "1__0", "1_", "9223372036854775808"])
            .to_string(),
    }
}

fn gen_float(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("{}.{}", rng.below(100_000), rng.below(1000)),
        1 => format!(
            "{}.{}{}{}{}",
            rng.below(10),
            rng.below(100),
            rng.pick(&["e", "E"]),
            rng.pick(&["", "+", "-", "_"]),
            rng.below(400)
        ),
        _ => rng
            .pick(&[
                "1e3",
                "1.e5",
                "1.0e",
                "0.0",
                "1.0e-400",
                "1.0e309",
                "1_0.0_1e0_1",
                "2.5e-324",
            ])
            .to_string(),
    }
}

fn gen_char(rng: &mut Rng) -> String {
    rng.pick(&[
        "$a",
        "$\\n",
        "$\\s",
        "$\\^A",
        "$\\^?",
        "$\\101",
        "$\\x41",
        "$\\x{1F600}",
        "$ ",
        "$é",
        "$\\\\",
        "$'",
        "$\\x{D800}",
        "$\\x{}",
        "$\\777",
        "$%",
        "$λ",
    ])
    .to_string()
}

fn gen_string(rng: &mut Rng) -> String {
    let mut out = String::from("\"");
    for _ in 0..rng.below(4) {
        out.push_str(rng.pick(&[
            "abc",
            "\\n",
            "\\x{3bb}",
            "é",
            "\\^Z",
            "\\\"",
            "\\'",
            "\\q",
            "% no",
            "\\101",
            "€",
            " ",
            "\\x{FFFE}",
            "\\1234",
        ]));
    }
    out.push('"');
    if rng.chance(15) {
        out.push_str(gen_space(rng));
        out.push_str(&gen_string(rng));
    }
    out
}

fn gen_number(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => gen_integer(rng),
        1 => gen_float(rng),
        _ => gen_char(rng),
    }
}

fn gen_segment(rng: &mut Rng, depth: usize) -> String {
    let mut out = match rng.below(8) {
        0 | 1 => gen_integer(rng),
        2 => format!("-{}", rng.below(300)),
        3 => gen_float(rng),
        4 => gen_char(rng),
        5 => gen_string(rng),
        6 if depth > 0 => format!("({})", gen_binary(rng, depth - 1)),
        6 => gen_binary(rng, 0),
        _ => gen_term(rng, 0),
    };
    if rng.chance(40) {
        out.push(':');
        out.push_str(rng.pick(&[
            "0",
            "1",
            "3",
            "4",
            "7",
            "8",
            "12",
            "16",
            "24",
            "32",
            "64",
            "65",
            "all",
            "undefined",
            "$\\^B",
            "(8)",
            "8.0",
            "(-8)",
            "X",
        ]));
    }
    if rng.chance(50) {
        out.push('/');
        for i in 0..1 + rng.below(3) {
            if i > 0 {
                out.push('-');
            }
            out.push_str(rng.pick(&[
                "integer",
                "float",
                "binary",
                "bytes",
                "bits",
                "bitstring",
                "utf8",
                "utf16",
                "utf32",
                "signed",
                "unsigned",
                "big",
                "little",
                "native",
                "unit:1",
                "unit:8",
                "unit:3",
                "unit:0",
                "foo",
                "'integer'",
            ]));
        }
    }
    out
}

fn gen_binary(rng: &mut Rng, depth: usize) -> String {
    let parts: Vec<String> = (0..rng.below(4)).map(|_| gen_segment(rng, depth)).collect();
    format!("<<{}>>", parts.join(","))
}

fn gen_items(rng: &mut Rng, depth: usize, max: usize) -> Vec<String> {
    (0..rng.below(max + 1))
        .map(|_| format!("{}{}", gen_space(rng), gen_term(rng, depth - 1)))
        .collect()
}

fn gen_term(rng: &mut Rng, depth: usize) -> String {
    let kinds = if depth == 0 { 8 } else { 14 };
    match rng.below(kinds) {
        0 => gen_atom(rng),
        1 => gen_integer(rng),
        2 => gen_float(rng),
        3 => gen_char(rng),
        4 => gen_string(rng),
        5 => {
            let sign = rng.pick(&["-", "+", "- ", "- -", "+-"]);
            let space = gen_space(rng);
            let number = gen_number(rng);
            if rng.chance(20) {
                format!("{sign}({space}{number})")
            } else {
                format!("{sign}{space}{number}")
            }
        }
        6 if depth > 0 => format!("({})", gen_term(rng, depth - 1)),
        6 => format!("({})", gen_atom(rng)),
        7 => rng
            .pick(&[
                "Foo", "end", "1 + 2", "a b", "f(1)", "#r{}", "[]", "{}", "#{}",
            ])
            .to_string(),
        8 | 9 => format!("[{}]", gen_items(rng, depth, 4).join(",")),
        10 => {
            let items = gen_items(rng, depth, 3).join(",");
            format!("[{items} |{}{}]", gen_space(rng), gen_term(rng, depth - 1))
        }
        11 => format!("{{{}}}", gen_items(rng, depth, 4).join(",")),
        12 => {
            let entries: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let arrow = if rng.chance(95) { "=>" } else { ":=" };
                    format!(
                        "{} {arrow} {}",
                        gen_term(rng, depth - 1),
                        gen_term(rng, depth - 1)
                    )
                })
                .collect();
            format!("#{{{}}}", entries.join(", "))
        }
        _ => gen_binary(rng, depth.min(2)),
    }
}

/// Occasionally breaks the text, to test the errors too.
fn mutate(rng: &mut Rng, text: String) -> String {
    if !rng.chance(15) {
        return text;
    }
    let mut chars: Vec<char> = text.chars().collect();
    let at = rng.below(chars.len() + 1);
    match rng.below(3) {
        0 if at < chars.len() => {
            chars.remove(at);
        }
        _ => {
            let insert = rng.pick(&[
                "-", "(", ")", "[", "]", "{", "}", ",", "|", ".", "#", "<<", ">>", ":", "/", "'",
                "\"", "$", "\\", "_", "e", "1", "=>", ":=", " ", "%", "\n", "λ", "\u{FFFE}",
                "\u{A0}", "×", "ß", "À", "\u{7F}", "..", "\u{0}", "^", "x{", "+",
            ]);
            for (i, c) in insert.chars().enumerate() {
                chars.insert(at + i, c);
            }
        }
    }
    chars.into_iter().collect()
}

/// Random texts, some valid and some broken. `TERM_SYNTAX_SEED` and
/// `TERM_SYNTAX_COUNT` set another corpus, for a longer hunt by hand.
#[test]
fn agrees_with_erlang_on_random_texts() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let mut rng = Rng(env("TERM_SYNTAX_SEED", 0x9E37_79B9_7F4A_7C15) | 1);
    let count = env("TERM_SYNTAX_COUNT", 4000) as usize;
    let files: Vec<String> = (0..count)
        .map(|_| {
            let mut text = String::new();
            for _ in 0..1 + rng.below(2) {
                text.push_str(&gen_term(&mut rng, 3));
                text.push_str(rng.pick(&[".\n", ". ", ".%c\n", ".\n\n", ".\u{A0}", ".\t", "."]));
            }
            mutate(&mut rng, text)
        })
        .collect();
    let printed = printed_forms(&files);
    let files = [files, printed].concat();
    let accepted = assert_agrees_with_erlang(&files);
    // The corpus must keep testing terms, not only errors.
    assert!(accepted * 3 > files.len(), "only {accepted} valid texts");
}
