//! Encrypted env values: ASCII-armored age files, as `age -r <recipient>
//! -a` makes them, decrypted with the identities of one file.
//!
//! - [`check_armored`] says whether a value is a well-formed armored age
//!   file (armor, base64, header) without decrypting it: what spec
//!   validation and `bc_gitops validate` check.
//! - [`Identities`] reads an identity file: age X25519 identities
//!   (`AGE-SECRET-KEY-1...`, one a line, `#` comments), or one unencrypted
//!   OpenSSH private key (ed25519 or RSA, as `age -R ~/.ssh/id.pub`
//!   encrypts to). Passphrase-protected keys and plugins are not supported.
//! - [`plaintext_term`] reads a decrypted value: exactly one Erlang term
//!   (`file:consult/1` syntax, ending with a dot) is that term; anything
//!   else is the bytes as a binary.
//!
//! Nothing here puts plaintext in an error: messages name the identity
//! file and what failed. Plaintext buffers are zeroed when dropped.

use std::io::Read;
use std::path::{Path, PathBuf};

use age::armor::ArmoredReader;
use zeroize::Zeroizing;

use crate::term::{Spanned, Term};
use crate::term_parse;

/// The first line of an armored age file.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// The largest value accepted: far more than any secret, far less than
/// what would make a spec file huge.
pub const MAX_ARMORED_BYTES: usize = 64 * 1024;

/// Why a value cannot be used. Never holds plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not a well-formed armored age file (the ciphertext itself is bad).
    #[error("not a well-formed armored age file: {0}")]
    Malformed(String),
    /// The identity file is missing or cannot be read.
    #[error("cannot read the age identity file {path}: {message}")]
    Identity { path: PathBuf, message: String },
    /// No identity of the file is a recipient of the value.
    #[error("no identity in {path} can decrypt it (encrypted to other recipients)")]
    NoMatchingIdentity { path: PathBuf },
    /// The identity matched, but the content does not decrypt (a damaged
    /// or altered ciphertext).
    #[error("it does not decrypt with {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl SecretError {
    /// A short name of the kind, for matching (Erlang atoms).
    pub fn kind(&self) -> &'static str {
        match self {
            SecretError::Malformed(_) => "malformed",
            SecretError::Identity { .. } => "identity",
            SecretError::NoMatchingIdentity { .. } => "no_matching_identity",
            SecretError::Corrupt { .. } => "corrupt",
        }
    }
}

/// The binary age file inside the armor, after checking the armor and the
/// header. Refuses values encrypted to a passphrase (there is no one to
/// type it).
fn dearmor(armored: &[u8]) -> Result<Vec<u8>, SecretError> {
    let malformed = |why: &str| SecretError::Malformed(why.to_string());
    if armored.len() > MAX_ARMORED_BYTES {
        return Err(malformed("larger than 64 KiB"));
    }
    let text = std::str::from_utf8(armored).map_err(|_| malformed("not UTF-8 text"))?;
    if !text.trim_start().starts_with(ARMOR_BEGIN) {
        return Err(malformed(
            "it does not start with -----BEGIN AGE ENCRYPTED FILE----- (use age -a)",
        ));
    }
    let mut binary = Vec::new();
    ArmoredReader::new(text.trim_start().as_bytes())
        .read_to_end(&mut binary)
        .map_err(|e| SecretError::Malformed(format!("bad armor: {e}")))?;
    let decryptor = age::Decryptor::new_buffered(&binary[..])
        .map_err(|e| SecretError::Malformed(format!("bad age header: {e}")))?;
    if decryptor.is_scrypt() {
        return Err(malformed(
            "it is encrypted to a passphrase; encrypt it to the node's recipient (age -r)",
        ));
    }
    Ok(binary)
}

/// Whether `armored` is a well-formed armored age file, encrypted to
/// recipients (not a passphrase). Decrypts nothing.
pub fn check_armored(armored: &[u8]) -> Result<(), SecretError> {
    dearmor(armored).map(|_| ())
}

/// The identities of one file.
pub struct Identities {
    path: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Identities {
    /// Reads the identity file at `path`.
    pub fn load(path: &Path) -> Result<Identities, SecretError> {
        let error = |message: String| SecretError::Identity {
            path: path.to_path_buf(),
            message,
        };
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| error(e.to_string()))?);
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if text
            .starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----")
            || text.starts_with(b"-----BEGIN RSA PRIVATE KEY-----")
        {
            match age::ssh::Identity::from_buffer(&text[..], None) {
                Ok(age::ssh::Identity::Unencrypted(key)) => {
                    vec![Box::new(age::ssh::Identity::Unencrypted(key))]
                }
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(error(
                        "a passphrase-protected ssh key is not supported".into(),
                    ))
                }
                Ok(age::ssh::Identity::Unsupported(_)) => {
                    return Err(error("an ssh key of a type age does not support".into()))
                }
                Err(e) => return Err(error(e.to_string())),
            }
        } else {
            age::IdentityFile::from_buffer(&text[..])
                .and_then(|file| {
                    file.into_identities()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .map_err(|e| error(e.to_string()))?
        };
        if keys.is_empty() {
            return Err(error("it holds no identity".into()));
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The identity file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decrypts an armored value.
    pub fn decrypt(&self, armored: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let binary = dearmor(armored)?;
        let decryptor = age::Decryptor::new_buffered(&binary[..])
            .map_err(|e| SecretError::Malformed(format!("bad age header: {e}")))?;
        let path = self.path.clone();
        let mut reader = decryptor
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => {
                    SecretError::NoMatchingIdentity { path: path.clone() }
                }
                other => SecretError::Corrupt {
                    path: path.clone(),
                    message: other.to_string(),
                },
            })?;
        let mut plain = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| SecretError::Corrupt {
                path,
                message: format!("the payload does not authenticate ({})", e.kind()),
            })?;
        Ok(plain)
    }
}

/// A decrypted value as an env value: exactly one term, when the plaintext
/// parses as one (`file:consult/1` syntax, UTF-8, every atom one the VM can
/// make); else the bytes as they are, as a binary.
pub fn plaintext_term(plain: &[u8]) -> Spanned {
    match term_parse::parse_terms_bytes(plain) {
        Ok(mut terms) if terms.len() == 1 && crate::spec::wide_atom(&terms[0]).is_none() => {
            terms.remove(0)
        }
        _ => Spanned::new(0, Term::Binary(plain.to_vec())),
    }
}
