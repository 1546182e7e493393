//! Feeds arbitrary UTF-8 to `parse_yaml`. It must never panic, overflow the
//! stack or hang; an error must name a line of the input; whatever it
//! accepts must be a tree within the nesting limit, each node on a line of
//! the input, that prints as Erlang terms that parse back to the same tree.

#![no_main]

use bc_gitops_core::spec::parse_yaml;
use bc_gitops_core::term::{Spanned, Term};
use bc_gitops_core::term_parse::{parse_terms, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    // YAML ends a line at \n, \r\n or a lone \r.
    let lines = src.replace("\r\n", "\n").replace('\r', "\n");
    let lines = u32::try_from(lines.lines().count().max(1)).unwrap_or(u32::MAX);
    let tree = match parse_yaml(src) {
        Ok(tree) => tree,
        Err(e) => {
            let line = e.line.unwrap_or(1);
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of {lines}: {e}"
            );
            return;
        }
    };
    check(&tree, 0, lines);
    let printed = format!("{}.\n", tree.term);
    match parse_terms(&printed) {
        Ok(again) => assert_eq!(vec![tree], again, "round trip changed the tree:\n{printed}"),
        Err(e) => panic!("printed tree does not parse ({e}):\n{printed}"),
    }
});

/// Depth within the limit, every line within the input.
fn check(node: &Spanned, depth: usize, lines: u32) {
    assert!(
        (1..=lines).contains(&node.line),
        "line {} of {lines}",
        node.line
    );
    let children: Vec<&Spanned> = match &node.term {
        Term::List { items, tail } => items.iter().chain(tail.as_deref()).collect(),
        Term::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
        Term::Tuple(_) => panic!("YAML gives no tuples"),
        _ => return,
    };
    assert!(depth < MAX_DEPTH, "nested deeper than {MAX_DEPTH}");
    for child in children {
        check(child, depth + 1, lines);
    }
}
