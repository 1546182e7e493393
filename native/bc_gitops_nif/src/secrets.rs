//! Encrypted env values (`{age, Armored}`) on the Erlang side of core's
//! `secret` module:
//!
//! - `age_check/1`: is a value a well-formed armored age file (decrypts
//!   nothing);
//! - `env_reveal/2`: an env map with every encrypted value decrypted, for
//!   the one moment the env is applied;
//! - [`SameEnv`]: env equality for the planner, where an encrypted value
//!   equals another that decrypts to the same plaintext; the plaintext
//!   never leaves this module.
//!
//! Errors carry the key, a kind and a message that names the identity file:
//! never the plaintext.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bc_gitops_core::secret::{self, Identities, SecretError};
use rustler::types::tuple::{get_tuple, make_tuple};
use rustler::{Binary, Encoder, Env, Term};
use zeroize::Zeroizing;

use crate::encode::{atom, atoms, text};

/// The armored text of `{age, Armored}`, if `value` is one.
fn armored<'a>(value: Term<'a>) -> Option<Binary<'a>> {
    let items = get_tuple(value).ok()?;
    match items.as_slice() {
        [tag, inner] if tag.atom_to_string().ok().as_deref() == Some("age") => {
            inner.decode::<Binary>().ok()
        }
        _ => None,
    }
}

/// `age_check(Armored) -> ok | {error, Message}`: whether `Armored` is a
/// well-formed armored age file encrypted to recipients. Reads at most
/// 64 KiB of base64: cheap enough for a normal scheduler.
#[rustler::nif]
fn age_check<'a>(env: Env<'a>, armored: Binary<'a>) -> Term<'a> {
    match secret::check_armored(armored.as_slice()) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => make_tuple(
            env,
            &[atoms::error().encode(env), text(env, &e.to_string())],
        ),
    }
}

/// `env_reveal(Env, IdentityFile) -> {ok, Plain} | {error, {Key, Kind,
/// Message}}`: `Env` with each `{age, Armored}` value replaced by its
/// plaintext (a term when it parses as exactly one, else a binary; see
/// core's `secret::plaintext_term`). The first value that fails stops it.
#[rustler::nif(schedule = "DirtyCpu")]
fn env_reveal<'a>(env: Env<'a>, map: Term<'a>, identity: String) -> rustler::NifResult<Term<'a>> {
    let entries: Vec<(Term<'a>, Term<'a>)> = map.decode::<rustler::MapIterator>()?.collect();
    let mut identities: Option<Identities> = None;
    let mut out = Term::map_new(env);
    for (key, value) in entries {
        let value = match armored(value) {
            None => value,
            Some(armored) => {
                let revealed = loaded(&mut identities, Path::new(&identity))
                    .and_then(|ids| ids.decrypt(armored.as_slice()));
                match revealed {
                    Ok(plain) => crate::encode::term(env, &secret::plaintext_term(&plain)),
                    Err(e) => {
                        let reason =
                            make_tuple(env, &[key, atom(env, e.kind()), text(env, &e.to_string())]);
                        return Ok(make_tuple(env, &[atoms::error().encode(env), reason]));
                    }
                }
            }
        };
        out = out.map_put(key, value)?;
    }
    Ok(make_tuple(env, &[atoms::ok().encode(env), out]))
}

/// The identities, read once per call.
fn loaded<'i>(
    slot: &'i mut Option<Identities>,
    path: &Path,
) -> Result<&'i Identities, SecretError> {
    match slot {
        Some(ids) => Ok(ids),
        None => Ok(slot.insert(Identities::load(path)?)),
    }
}

/// A decrypted value (`None`: it did not decrypt), zeroed when dropped.
type Plain = Option<Zeroizing<Vec<u8>>>;

/// What the planner needs to compare encrypted values: the identity file,
/// read at the first comparison that needs it, and the plaintexts seen in
/// this plan (keyed by ciphertext).
pub struct Secrets {
    identity: Option<PathBuf>,
    identities: RefCell<Option<Option<Identities>>>,
    plain: RefCell<HashMap<Vec<u8>, Plain>>,
}

impl Secrets {
    pub fn new(identity: Option<PathBuf>) -> Secrets {
        Secrets {
            identity,
            identities: RefCell::new(None),
            plain: RefCell::new(HashMap::new()),
        }
    }

    /// Whether two ciphertexts decrypt to the same plaintext. A value that
    /// does not decrypt equals nothing (so the app is acted on, and the
    /// action reports why).
    fn same_plaintext(&self, a: &[u8], b: &[u8]) -> bool {
        let (Some(pa), Some(pb)) = (self.plaintext(a), self.plaintext(b)) else {
            return false;
        };
        pa == pb
    }

    fn plaintext(&self, armored: &[u8]) -> Plain {
        if let Some(known) = self.plain.borrow().get(armored) {
            return known.clone();
        }
        let mut identities = self.identities.borrow_mut();
        let ids = identities.get_or_insert_with(|| {
            self.identity
                .as_deref()
                .and_then(|path| Identities::load(path).ok())
        });
        let plain = ids.as_ref().and_then(|ids| ids.decrypt(armored).ok());
        self.plain
            .borrow_mut()
            .insert(armored.to_vec(), plain.clone());
        plain
    }
}

/// An env map, compared as `=:=` would, except that `{age, A}` equals
/// `{age, B}` when both decrypt to the same plaintext (a value encrypted
/// again is not a change).
#[derive(Clone, Copy)]
pub struct SameEnv<'a, 's> {
    pub term: Term<'a>,
    pub secrets: &'s Secrets,
}

impl PartialEq for SameEnv<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        if self.term.eq(&other.term) {
            return true;
        }
        let (Ok(mine), Ok(theirs)) = (self.term.map_size(), other.term.map_size()) else {
            return false;
        };
        if mine != theirs || self.identity_missing() {
            return false;
        }
        let Ok(entries) = self.term.decode::<rustler::MapIterator>() else {
            return false;
        };
        for (key, value) in entries {
            let Ok(other_value) = other.term.map_get(key) else {
                return false;
            };
            if value.eq(&other_value) {
                continue;
            }
            match (armored(value), armored(other_value)) {
                (Some(a), Some(b)) if self.secrets.same_plaintext(a.as_slice(), b.as_slice()) => {}
                _ => return false,
            }
        }
        true
    }
}

impl SameEnv<'_, '_> {
    fn identity_missing(&self) -> bool {
        self.secrets.identity.is_none()
    }
}
