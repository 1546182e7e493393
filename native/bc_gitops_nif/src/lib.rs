//! The rustler layer over `bc_gitops_core`: converts terms and calls core.
//!
//! Every function here may take more than a millisecond on real input, so
//! each runs on a dirty scheduler. A panic inside a NIF is caught by rustler
//! and raised as an Erlang exception; it never takes the VM down.

mod archive;
mod encode;
mod git;
mod planning;
mod records;

use bc_gitops_core::spec::{self, DirError};
use encode::{atom, atoms, text};
use rustler::types::tuple::make_tuple;
use rustler::{Encoder, Env, Term};
use std::path::Path;

/// `parse_dir(Root, AppsDir) -> {ok, Specs, Errors, Warnings} | {error, {Kind, Message}}`.
#[rustler::nif(schedule = "DirtyIo")]
fn parse_dir<'a>(env: Env<'a>, root: String, apps_dir: String) -> Term<'a> {
    match spec::parse_dir(Path::new(&root), &apps_dir) {
        Ok(out) => {
            let specs: Vec<_> = out
                .specs
                .iter()
                .map(|s| records::AppSpecOut::new(env, s))
                .collect();
            let errors: Vec<_> = out
                .errors
                .iter()
                .map(|e| records::DiagnosticOut::new(env, e, e.kind.as_str()))
                .collect();
            let warnings: Vec<_> = out
                .warnings
                .iter()
                .map(|w| records::DiagnosticOut::new(env, w, w.kind.as_str()))
                .collect();
            (atoms::ok(), specs, errors, warnings).encode(env)
        }
        Err(e) => {
            let kind = match &e {
                DirError::AppsDirOutside(_) => "apps_dir_outside",
                DirError::AppsDirMissing(_) => "apps_dir_missing",
                DirError::AppsDirNotDir(_) => "apps_dir_not_dir",
                DirError::Io { .. } => "io",
            };
            let reason = make_tuple(env, &[atom(env, kind), text(env, &e.to_string())]);
            make_tuple(env, &[atoms::error().encode(env), reason])
        }
    }
}

/// `plan(Desired, Current, Invalid) -> {ok, Actions, Blocked}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn plan<'a>(
    env: Env<'a>,
    desired: Vec<Term<'a>>,
    current: Vec<Term<'a>>,
    invalid: Vec<String>,
) -> rustler::NifResult<Term<'a>> {
    planning::plan(env, &desired, &current, &invalid)
}

/// `consult(Text) -> {ok, Terms} | {error, {Line, Reason}}`: what
/// `file:consult/1` gives for `Text`, but making no atom; an atom the VM
/// does not know yet is `{error, {Line, {unknown_atom, Name}}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn consult<'a>(env: Env<'a>, bytes: rustler::Binary<'a>) -> Term<'a> {
    let error = |line: u32, reason: Term<'a>| (atoms::error(), (line, reason)).encode(env);
    let terms = match bc_gitops_core::term_parse::parse_terms_bytes(bytes.as_slice()) {
        Ok(terms) => terms,
        Err(e) => return error(e.line, text(env, &e.message)),
    };
    let mut out = Vec::with_capacity(terms.len());
    for t in &terms {
        match encode::term_existing_atoms(env, t) {
            Ok(term) => out.push(term),
            Err((line, name)) => {
                return error(line, (atoms::unknown_atom(), text(env, &name)).encode(env))
            }
        }
    }
    (atoms::ok(), out).encode(env)
}

/// Sets libgit2's process-wide timeouts (the defaults of
/// `bc_gitops_core::git::Timeouts`) before any sync can start.
fn load(_env: Env, _load_info: Term) -> bool {
    bc_gitops_core::git::configure(bc_gitops_core::git::Timeouts::default()).is_ok()
}

rustler::init!("bc_gitops_nif", load = load);
