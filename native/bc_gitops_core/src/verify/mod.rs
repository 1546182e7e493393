//! Commit signatures: whether the commit a sync checked out (or the
//! annotated tag that names it) carries a good signature from an allowed
//! key, as git makes them with `git commit -S` / `git tag -s`:
//!
//! - SSH (`gpg.format=ssh`): an `SSHSIG` in namespace `git`, from a key
//!   listed in an ALLOWED SIGNERS file (see [`allowed_signers`]);
//! - OpenPGP (gpg): a detached signature from a key of an armored public
//!   key file (see [`openpgp`]).
//!
//! What a signature covers: the commit object's bytes without its `gpgsig`
//! header, that is its tree id, parent ids, author, committer and message;
//! so the whole tree (every file checked out) is covered through the
//! hashes. A tag's signature covers the tag object (the commit id it
//! names, its name, tagger and message). Nothing else is: not the ref
//! (a branch may be moved to another signed commit, e.g. an older one),
//! not the commit's ancestors (each verified commit stands for itself),
//! and the committer date is the signer's word.
//!
//! No external program runs: everything is checked in process.

pub(crate) mod allowed_signers;
pub(crate) mod openpgp;

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use git2::{Oid, Repository};
use ssh_key::{HashAlg, SshSig};

/// The namespace git signs commits and tags in (`ssh-keygen -Y sign -n git`).
const SSH_NAMESPACE: &str = "git";
const SSH_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const PGP_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";

/// Which keys may sign. At least one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyKeys {
    /// An ALLOWED SIGNERS file (ssh-keygen's format).
    pub allowed_signers: Option<PathBuf>,
    /// A file of armored OpenPGP public keys.
    pub gpg_keys: Option<PathBuf>,
}

/// Which object carried the good signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedObject {
    Commit,
    Tag,
}

/// How it was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    Ssh,
    OpenPgp,
}

/// A good signature and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub object: SignedObject,
    pub format: SignatureFormat,
    /// SSH: `SHA256:...`; OpenPGP: the primary key's fingerprint (hex).
    pub key: String,
    /// SSH: the principals of the allowed signers line; OpenPGP: the key's
    /// first user id.
    pub principal: String,
}

/// Why a commit is not trusted. Messages name keys and files, never the
/// signed content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// Neither the commit nor the tag carries a signature.
    #[error("{0}")]
    Unsigned(String),
    /// Signed by a key that is not allowed.
    #[error("{0}")]
    UnknownKey(String),
    /// The key has expired (or is not valid yet).
    #[error("{0}")]
    ExpiredKey(String),
    /// The key was revoked.
    #[error("{0}")]
    RevokedKey(String),
    /// The signature does not match the object, or cannot be read.
    #[error("{0}")]
    BadSignature(String),
    /// A signature kind that is not supported (X.509).
    #[error("{0}")]
    Unsupported(String),
    /// A key file cannot be read or parsed.
    #[error("{0}")]
    Keys(String),
}

impl Unverified {
    /// A short name of the kind, for matching (Erlang atoms).
    pub fn kind(&self) -> &'static str {
        match self {
            Unverified::Unsigned(_) => "unsigned",
            Unverified::UnknownKey(_) => "unknown_key",
            Unverified::ExpiredKey(_) => "expired_key",
            Unverified::RevokedKey(_) => "revoked_key",
            Unverified::BadSignature(_) => "bad_signature",
            Unverified::Unsupported(_) => "unsupported",
            Unverified::Keys(_) => "keys",
        }
    }
}

impl fmt::Display for SignedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignedObject::Commit => "commit",
            SignedObject::Tag => "tag",
        })
    }
}

/// Verifies `commit` of `repo`, or the annotated `tag` that names it: one
/// good signature from an allowed key is enough. When both fail, the
/// commit's reason is given (with the tag's).
pub fn verify(
    repo: &Repository,
    commit: Oid,
    tag: Option<Oid>,
    keys: &VerifyKeys,
    now: SystemTime,
) -> Result<Signer, Unverified> {
    let tag_verdict = tag.map(|tag| {
        let signed = signed_tag(repo, tag)?;
        check(signed, SignedObject::Tag, keys, now)
    });
    if let Some(Ok(signer)) = tag_verdict {
        return Ok(signer);
    }
    let signed = signed_commit(repo, commit)?;
    match (check(signed, SignedObject::Commit, keys, now), tag_verdict) {
        (Ok(signer), _) => Ok(signer),
        (Err(commit_why), Some(Err(tag_why))) => Err(with_tag(commit_why, &tag_why)),
        (Err(why), _) => Err(why),
    }
}

fn with_tag(why: Unverified, tag_why: &Unverified) -> Unverified {
    let add = |m: String| format!("{m}; the annotated tag: {tag_why}");
    match why {
        Unverified::Unsigned(m) => Unverified::Unsigned(add(m)),
        Unverified::UnknownKey(m) => Unverified::UnknownKey(add(m)),
        Unverified::ExpiredKey(m) => Unverified::ExpiredKey(add(m)),
        Unverified::RevokedKey(m) => Unverified::RevokedKey(add(m)),
        Unverified::BadSignature(m) => Unverified::BadSignature(add(m)),
        Unverified::Unsupported(m) => Unverified::Unsupported(add(m)),
        Unverified::Keys(m) => Unverified::Keys(m),
    }
}

/// A signature and the bytes it covers; `None` when there is none.
struct Signed {
    signature: Option<String>,
    data: Vec<u8>,
}

fn unreadable(what: &str, id: Oid, e: &git2::Error) -> Unverified {
    Unverified::BadSignature(format!("cannot read {what} {id}: {}", e.message()))
}

/// A commit's `gpgsig` header and the commit without it (libgit2 does the
/// split as git does).
fn signed_commit(repo: &Repository, commit: Oid) -> Result<Signed, Unverified> {
    match repo.extract_signature(&commit, None) {
        Ok((signature, data)) => Ok(Signed {
            signature: Some(String::from_utf8_lossy(&signature).into_owned()),
            data: data.to_vec(),
        }),
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            // Unsigned, or not there at all: tell them apart.
            repo.find_commit(commit)
                .map_err(|e| unreadable("commit", commit, &e))?;
            Ok(Signed {
                signature: None,
                data: Vec::new(),
            })
        }
        Err(e) => Err(unreadable("commit", commit, &e)),
    }
}

/// A tag's signature is appended to its message: git takes the last line
/// that starts a signature as its start (`parse_signed_buffer`).
fn signed_tag(repo: &Repository, tag: Oid) -> Result<Signed, Unverified> {
    let odb = repo.odb().map_err(|e| unreadable("tag", tag, &e))?;
    let object = odb.read(tag).map_err(|e| unreadable("tag", tag, &e))?;
    let bytes = object.data();
    let mut start = None;
    let mut offset = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(SSH_BEGIN.as_bytes()) || line.starts_with(PGP_BEGIN.as_bytes()) {
            start = Some(offset);
        }
        offset += line.len();
    }
    Ok(match start {
        Some(at) => Signed {
            signature: Some(String::from_utf8_lossy(&bytes[at..]).into_owned()),
            data: bytes[..at].to_vec(),
        },
        None => Signed {
            signature: None,
            data: Vec::new(),
        },
    })
}

fn check(
    signed: Signed,
    object: SignedObject,
    keys: &VerifyKeys,
    now: SystemTime,
) -> Result<Signer, Unverified> {
    let Some(signature) = signed.signature else {
        return Err(Unverified::Unsigned(format!("the {object} is not signed")));
    };
    let text = signature.trim_start();
    if text.starts_with(SSH_BEGIN) {
        let path = keys.allowed_signers.as_ref().ok_or_else(|| {
            Unverified::UnknownKey(format!(
                "the {object} has an SSH signature, but no allowed_signers file is configured"
            ))
        })?;
        let signers = allowed_signers::read(path).map_err(Unverified::Keys)?;
        let (key, principal) = ssh(text, &signed.data, &signers, now)?;
        Ok(Signer {
            object,
            format: SignatureFormat::Ssh,
            key,
            principal,
        })
    } else if text.starts_with(PGP_BEGIN) {
        let path = keys.gpg_keys.as_ref().ok_or_else(|| {
            Unverified::UnknownKey(format!(
                "the {object} has an OpenPGP signature, but no gpg_keys file is configured"
            ))
        })?;
        let certs = openpgp::read_keys(path)?;
        let good = openpgp::verify(text, &signed.data, &certs, now)?;
        Ok(Signer {
            object,
            format: SignatureFormat::OpenPgp,
            key: good.fingerprint,
            principal: good.user,
        })
    } else {
        Err(Unverified::Unsupported(format!(
            "the {object}'s signature is neither SSH nor OpenPGP (X.509 is not supported)"
        )))
    }
}

/// An SSHSIG over `data`, by a key of `signers` that allows namespace `git`
/// now. Returns the key's fingerprint and the line's principals.
fn ssh(
    armored: &str,
    data: &[u8],
    signers: &[allowed_signers::Signer],
    now: SystemTime,
) -> Result<(String, String), Unverified> {
    let signature = SshSig::from_pem(armored)
        .map_err(|e| Unverified::BadSignature(format!("unreadable SSH signature: {e}")))?;
    let key = signature.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if signature.namespace() != SSH_NAMESPACE {
        return Err(Unverified::BadSignature(format!(
            "the SSH signature is for namespace \"{}\", not \"{SSH_NAMESPACE}\"",
            signature.namespace()
        )));
    }
    let mut refusals = Vec::new();
    for signer in signers.iter().filter(|s| &s.key == key) {
        match signer.refuses(SSH_NAMESPACE, now) {
            Some(why) => refusals.push(format!("line {}: {why}", signer.line)),
            None => {
                let public = ssh_key::PublicKey::from(key.clone());
                return public
                    .verify(SSH_NAMESPACE, data, &signature)
                    .map(|()| (fingerprint.clone(), signer.principals.clone()))
                    .map_err(|e| {
                        Unverified::BadSignature(format!(
                            "the signature by SSH key {fingerprint} does not match the object ({e})"
                        ))
                    });
            }
        }
    }
    if refusals.is_empty() {
        return Err(Unverified::UnknownKey(format!(
            "SSH key {fingerprint} is not in allowed_signers"
        )));
    }
    let why = format!(
        "SSH key {fingerprint} is not allowed now: {}",
        refusals.join("; ")
    );
    if refusals
        .iter()
        .any(|r| r.contains("expired") || r.contains("not valid yet"))
    {
        Err(Unverified::ExpiredKey(why))
    } else {
        Err(Unverified::UnknownKey(why))
    }
}
