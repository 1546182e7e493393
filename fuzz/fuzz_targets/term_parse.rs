//! Feeds arbitrary UTF-8 to `parse_terms`. It must never panic, overflow
//! the stack or hang; and whatever it accepts must print as text that parses
//! back to the same terms.

#![no_main]

use bc_gitops_core::term_parse::parse_terms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(terms) = parse_terms(src) else {
        return;
    };
    let printed: String = terms.iter().map(|term| format!("{term}.\n")).collect();
    match parse_terms(&printed) {
        Ok(again) => assert_eq!(terms, again, "round trip changed the terms:\n{printed}"),
        Err(e) => panic!("printed terms do not parse ({e}):\n{printed}"),
    }
});
