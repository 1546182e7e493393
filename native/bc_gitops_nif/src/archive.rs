//! `tar_list/2` and `tar_unpack/3`: tar archives for `bc_gitops_tar`, which
//! holds the safety policy; core reads and writes them. `gunzip/2`: a gzip
//! stream in memory, bounded.

use crate::encode::{atom, atoms, binary, text};
use bc_gitops_core::archive::{self, ArchiveError, Kind};
use rustler::{Binary, Encoder, Env, ErlOption, Term};
use std::path::PathBuf;

/// `tar_list(Path, MaxData) -> {ok, [{Name, Type, Target}]} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn tar_list(env: Env<'_>, path: PathBuf, max_data: u64) -> Term<'_> {
    match archive::list(&path, max_data) {
        Ok(entries) => {
            let listed: Vec<Term<'_>> = entries
                .iter()
                .map(|e| {
                    let kind = match e.kind {
                        Kind::Regular => atom(env, "regular"),
                        Kind::Directory => atom(env, "directory"),
                        Kind::Symlink => atom(env, "symlink"),
                        Kind::HardLink => atom(env, "link"),
                        Kind::Char => atom(env, "char"),
                        Kind::Block => atom(env, "block"),
                        Kind::Fifo => atom(env, "fifo"),
                        Kind::Unsupported(flag) => (atoms::unsupported(), flag).encode(env),
                    };
                    let target = ErlOption::from(e.link.as_deref().map(|l| binary(env, l)));
                    (binary(env, &e.path), kind, target).encode(env)
                })
                .collect();
            (atoms::ok(), listed).encode(env)
        }
        Err(e) => error(env, &e),
    }
}

/// `tar_unpack(Path, Dest, MaxData) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn tar_unpack(env: Env<'_>, path: PathBuf, dest: PathBuf, max_data: u64) -> Term<'_> {
    match archive::unpack(&path, &dest, max_data) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => error(env, &e),
    }
}

/// `gunzip(Data, Max) -> {ok, Inflated} | {error, Reason}`: at most `Max`
/// bytes out.
#[rustler::nif(schedule = "DirtyCpu")]
fn gunzip<'a>(env: Env<'a>, data: Binary<'a>, max: u64) -> Term<'a> {
    match archive::gunzip(data.as_slice(), max) {
        Ok(out) => (atoms::ok(), binary(env, &out)).encode(env),
        Err(e) => error(env, &e),
    }
}

/// `{error, {too_large_unpacked, Max}}`, `{error, {file_error, open, Path,
/// Message}}` or `{error, {bad_archive, Message}}`.
fn error<'a>(env: Env<'a>, e: &ArchiveError) -> Term<'a> {
    let reason = match e {
        ArchiveError::TooLarge(max) => (atom(env, "too_large_unpacked"), max).encode(env),
        ArchiveError::Open { path, source } => (
            atom(env, "file_error"),
            atom(env, "open"),
            text(env, path),
            text(env, &source.to_string()),
        )
            .encode(env),
        _ => (atom(env, "bad_archive"), text(env, &e.to_string())).encode(env),
    };
    (atoms::error(), reason).encode(env)
}
