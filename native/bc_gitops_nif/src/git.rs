//! `git_sync_start/2`: starts a sync on a thread of its own and returns at
//! once; the thread sends `{bc_gitops_git, Ref, {ok, Outcome} | {error,
//! {Kind, Message}}}` to the caller when done. With `verify`, the outcome
//! carries the signature check (`verified`), done on the same thread. A clone may take minutes:
//! it must hold neither a normal scheduler nor one of the dirty IO
//! schedulers that the node's file I/O and code loading share. Messages are
//! already redacted by core.

use crate::encode::{atom, atoms, opt_text, text};
use bc_gitops_core::git::{self, Auth, GitError, GitRef, SyncOptions, SyncOutcome, Verification};
use bc_gitops_core::verify::{SignatureFormat, SignedObject, VerifyKeys};
use rustler::types::tuple::make_tuple;
use rustler::{Binary, Encoder, Env, NifResult, OwnedEnv, Term};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

/// `timeout` is in milliseconds; see bc_gitops_git.erl for every key.
/// Options are checked here, in the caller: a bad one is
/// `{error, {invalid_input, Message}}` at once.
#[rustler::nif]
fn git_sync_start<'a>(env: Env<'a>, opts: Term<'a>, reference: Term<'a>) -> NifResult<Term<'a>> {
    let Ok(opts) = options(opts) else {
        let message = "url and local_path are required; text options must be UTF-8 binaries";
        let reason = make_tuple(env, &[atom(env, "invalid_input"), text(env, message)]);
        return Ok(make_tuple(env, &[atoms::error().encode(env), reason]));
    };
    let caller = env.pid();
    let mut owned = OwnedEnv::new();
    let saved = owned.save(reference);
    std::thread::Builder::new()
        .name("bc_gitops_git".to_string())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| git::sync(&opts)))
                .unwrap_or_else(|_| Err(GitError::Other("git sync panicked".to_string())));
            // The caller may be gone; then there is no one to tell.
            let _ = owned.send_and_clear(&caller, |env| {
                let tag = atom(env, "bc_gitops_git");
                make_tuple(env, &[tag, saved.load(env), encode_result(env, result)])
            });
        })
        .map_err(|_| rustler::Error::Term(Box::new("cannot start a git thread")))?;
    Ok(atoms::ok().encode(env))
}

fn encode_result(env: Env<'_>, result: Result<SyncOutcome, GitError>) -> Term<'_> {
    match result {
        Ok(outcome) => {
            let mut pairs = vec![
                (atom(env, "commit"), text(env, &outcome.commit)),
                (atom(env, "changed"), outcome.changed.encode(env)),
                (
                    atom(env, "healed"),
                    opt_text(env, outcome.healed.as_deref()),
                ),
            ];
            if let Some(verified) = &outcome.verified {
                pairs.push((atom(env, "verified"), encode_verification(env, verified)));
            }
            match Term::map_from_pairs(env, &pairs) {
                Ok(map) => make_tuple(env, &[atoms::ok().encode(env), map]),
                Err(_) => atoms::error().encode(env),
            }
        }
        Err(e) => {
            let reason = make_tuple(env, &[atom(env, error_kind(&e)), text(env, &e.to_string())]);
            make_tuple(env, &[atoms::error().encode(env), reason])
        }
    }
}

/// `#{result => ok | {error, {Kind, Message}}, duration_us => N}`, and on
/// success `signer => #{object, format, key, principal}`.
fn encode_verification<'a>(env: Env<'a>, verified: &Verification) -> Term<'a> {
    let duration = u64::try_from(verified.duration.as_micros()).unwrap_or(u64::MAX);
    let mut pairs = vec![(atom(env, "duration_us"), duration.encode(env))];
    match &verified.result {
        Ok(signer) => {
            let format = match signer.format {
                SignatureFormat::Ssh => "ssh",
                SignatureFormat::OpenPgp => "openpgp",
            };
            let object = match signer.object {
                SignedObject::Commit => "commit",
                SignedObject::Tag => "tag",
            };
            let fields = [
                (atom(env, "object"), atom(env, object)),
                (atom(env, "format"), atom(env, format)),
                (atom(env, "key"), text(env, &signer.key)),
                (atom(env, "principal"), text(env, &signer.principal)),
            ];
            let signer = Term::map_from_pairs(env, &fields).unwrap_or_else(|_| Term::map_new(env));
            pairs.push((atom(env, "result"), atoms::ok().encode(env)));
            pairs.push((atom(env, "signer"), signer));
        }
        Err(why) => {
            let reason = make_tuple(env, &[atom(env, why.kind()), text(env, &why.to_string())]);
            let error = make_tuple(env, &[atoms::error().encode(env), reason]);
            pairs.push((atom(env, "result"), error));
        }
    }
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| Term::map_new(env))
}

fn error_kind(e: &GitError) -> &'static str {
    match e {
        GitError::InvalidInput(_) => "invalid_input",
        GitError::Unreachable { .. } => "unreachable",
        GitError::Auth { .. } => "auth",
        GitError::Certificate { .. } => "certificate",
        GitError::RefNotFound { .. } => "ref_not_found",
        GitError::Timeout { .. } => "timeout",
        GitError::NotARepository { .. } => "not_a_repository",
        GitError::DiskFull { .. } => "disk_full",
        GitError::Io { .. } => "io",
        GitError::Corrupt { .. } => "corrupt",
        GitError::Other(_) => "other",
    }
}

fn options(map: Term<'_>) -> NifResult<SyncOptions> {
    let url = required_text(map, "url")?;
    let local_path = required_text(map, "local_path")?;
    let mut opts = SyncOptions::new(url, local_path);
    if let Some(r) = opt(map, "ref")? {
        opts.git_ref = GitRef::parse(&r);
    }
    if let Some(ms) = get(map, "timeout").and_then(|t| t.decode::<u64>().ok()) {
        opts.timeout = Duration::from_millis(ms);
    }
    opts.watch = get(map, "watch")
        .and_then(|t| t.decode::<bool>().ok())
        .unwrap_or(false);
    opts.auth = Auth {
        ssh_key: opt(map, "ssh_key")?.map(PathBuf::from),
        ssh_passphrase: opt(map, "ssh_passphrase")?,
        ssh_known_hosts: opt(map, "ssh_known_hosts")?.map(PathBuf::from),
        ssh_verify_host: get(map, "ssh_verify_host")
            .and_then(|t| t.decode::<bool>().ok())
            .unwrap_or(true),
        username: opt(map, "username")?,
        token: opt(map, "token")?,
        ca_file: opt(map, "ca_file")?.map(PathBuf::from),
    };
    if let Some(keys) = get(map, "verify") {
        let verify = VerifyKeys {
            allowed_signers: opt(keys, "allowed_signers")?.map(PathBuf::from),
            gpg_keys: opt(keys, "gpg_keys")?.map(PathBuf::from),
        };
        if verify.allowed_signers.is_none() && verify.gpg_keys.is_none() {
            return Err(rustler::Error::BadArg);
        }
        opts.verify = Some(verify);
    }
    Ok(opts)
}

fn get<'a>(map: Term<'a>, key: &str) -> Option<Term<'a>> {
    let env = map.get_env();
    map.map_get(atom(env, key)).ok()
}

/// A binary option; absent or `undefined` is `None`, anything else that is
/// not UTF-8 text is badarg.
fn opt(map: Term<'_>, key: &str) -> NifResult<Option<String>> {
    match get(map, key) {
        None => Ok(None),
        Some(t) if t.atom_to_string().ok().as_deref() == Some("undefined") => Ok(None),
        Some(t) => {
            let bin: Binary = t.decode()?;
            let s = std::str::from_utf8(bin.as_slice()).map_err(|_| rustler::Error::BadArg)?;
            Ok(Some(s.to_string()))
        }
    }
}

fn required_text(map: Term<'_>, key: &str) -> NifResult<String> {
    opt(map, key)?.ok_or(rustler::Error::BadArg)
}

/// `redact_url/1`: the URL with any credentials masked. Cheap, so it runs
/// on a normal scheduler.
#[rustler::nif]
fn redact_url(url: String) -> String {
    git::redact_url(&url)
}
