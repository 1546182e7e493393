//! The pure core of bc_gitops: everything that can be done without the BEAM.
//!
//! - [`term`]: the Erlang term model, and [`term_parse`] / [`term_print`] to
//!   read and write it in the syntax `file:consult/1` accepts;
//! - [`spec`]: the typed application spec, its discovery, parsing (Erlang
//!   terms, JSON and YAML) and validation;
//! - [`plan`]: the diff of desired against current state, as ordered actions;
//! - [`archive`]: tar archives listed and unpacked, with bounds.
//!
//! The rustler crate `bc_gitops_nif` is a thin layer over this one, so all of
//! it is tested with plain `cargo test`.

pub mod archive;
pub mod git;
pub mod plan;
pub mod spec;
pub mod term;
pub mod term_parse;
pub mod term_print;
