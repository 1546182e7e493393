//! OpenPGP signatures, as git makes them with gpg (`gpg -bsau <key>`: an
//! armored detached signature over the object), checked with rpgp against
//! a file of armored public keys.
//!
//! rpgp checks the mathematics; the rules of when a key may sign are here:
//! the certificate's self-signatures must verify; a key with a revocation
//! signature (of the primary key, or of the signing subkey) is refused,
//! whatever the reason given; a key (or subkey) past its expiration time
//! now is refused, as is a signature past its own expiration; a subkey
//! must be bound with the signing flag (and its back signature).

use std::path::Path;
use std::time::SystemTime;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};

use super::Unverified;

/// The signer of a good signature: primary key fingerprint and first user
/// id.
pub(crate) struct Good {
    pub fingerprint: String,
    pub user: String,
}

/// Reads every armored public key in `path`: each `BEGIN PGP PUBLIC KEY
/// BLOCK` ... `END` block (one or several keys each); text between blocks
/// is ignored.
pub(crate) fn read_keys(path: &Path) -> Result<Vec<SignedPublicKey>, Unverified> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
    let unreadable = |why: String| Unverified::Keys(format!("gpg_keys {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let mut keys = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let line = text[..text.len() - rest.len() + start].lines().count() + 1;
        let block = &rest[start..];
        let end = block
            .find(END)
            .map(|at| at + END.len())
            .ok_or_else(|| unreadable(format!("line {line}: a key block without its END line")))?;
        let bad = |e: pgp::errors::Error| {
            // rpgp's messages may dump the input: keep their first line.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            let short: String = first.chars().take(120).collect();
            unreadable(format!(
                "line {line}: not a readable OpenPGP public key ({short})"
            ))
        };
        let (parsed, _) = SignedPublicKey::from_string_many(&block[..end]).map_err(bad)?;
        for key in parsed {
            keys.push(key.map_err(bad)?);
        }
        rest = &block[end..];
    }
    if keys.is_empty() {
        return Err(unreadable("holds no armored public key".into()));
    }
    Ok(keys)
}

/// Checks `armored` (a detached signature) over `data` against `keys` at
/// `now`.
pub(crate) fn verify(
    armored: &str,
    data: &[u8],
    keys: &[SignedPublicKey],
    now: SystemTime,
) -> Result<Good, Unverified> {
    let (signature, _) = DetachedSignature::from_string(armored)
        .map_err(|e| Unverified::BadSignature(format!("unreadable OpenPGP signature: {e}")))?;
    let signature = signature.signature;
    if !matches!(
        signature.typ(),
        Some(SignatureType::Binary | SignatureType::Text)
    ) {
        return Err(Unverified::BadSignature(format!(
            "not a signature over data ({:?})",
            signature.typ()
        )));
    }
    let issuer = issuer_text(&signature);
    let now = Timestamp::try_from(now).unwrap_or_else(|_| Timestamp::now());
    for cert in keys {
        if let Some(verdict) = check_with_cert(cert, &signature, data, now) {
            return verdict.map(|()| Good {
                fingerprint: format!("{:X}", cert.fingerprint()),
                user: cert
                    .details
                    .users
                    .first()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                    .unwrap_or_default(),
            });
        }
    }
    Err(Unverified::UnknownKey(format!(
        "OpenPGP key {issuer} is not in gpg_keys"
    )))
}

/// `None` when no key of `cert` issued the signature; else the verdict.
fn check_with_cert(
    cert: &SignedPublicKey,
    signature: &Signature,
    data: &[u8],
    now: Timestamp,
) -> Option<Result<(), Unverified>> {
    let name = format!("{:X}", cert.fingerprint());
    if issued_by(signature, &cert.primary_key) {
        return Some(
            cert_usable(cert, &name, now)
                .and_then(|()| signature_good(signature, &cert.primary_key, data, now, &name)),
        );
    }
    let subkey = cert
        .public_subkeys
        .iter()
        .find(|sub| issued_by(signature, &sub.key))?;
    Some(
        cert_usable(cert, &name, now)
            .and_then(|()| subkey_usable(cert, subkey, &name, now))
            .and_then(|()| signature_good(signature, &subkey.key, data, now, &name)),
    )
}

fn issued_by(signature: &Signature, key: &impl KeyDetails) -> bool {
    let fingerprint = key.fingerprint();
    let key_id = key.legacy_key_id();
    signature.issuer_fingerprint().contains(&&fingerprint)
        || signature.issuer_key_id().contains(&&key_id)
}

fn issuer_text(signature: &Signature) -> String {
    match (
        signature.issuer_fingerprint().first(),
        signature.issuer_key_id().first(),
    ) {
        (Some(fp), _) => format!("{fp:X}"),
        (None, Some(id)) => id.to_string().to_ascii_uppercase(),
        (None, None) => "(no issuer)".into(),
    }
}

/// The primary key: it has a good self-signature, no good revocation of
/// its own (a revocation that does not verify is junk, ignored), and is not
/// expired now by its newest good self-signature. Certifications by other
/// keys are ignored.
fn cert_usable(cert: &SignedPublicKey, name: &str, now: Timestamp) -> Result<(), Unverified> {
    let primary = &cert.primary_key;
    let own = |s: &&Signature| issued_by(s, primary);
    let revoked = cert
        .details
        .revocation_signatures
        .iter()
        .filter(own)
        .any(|s| s.verify_key(primary).is_ok());
    if revoked {
        return Err(Unverified::RevokedKey(format!("key {name} is revoked")));
    }
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(own)
        .filter(|s| s.verify_key(primary).is_ok());
    let certifications = cert.details.users.iter().flat_map(|user| {
        user.signatures
            .iter()
            .filter(own)
            .filter(|s| {
                matches!(
                    s.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                )
            })
            .filter(move |s| {
                s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
            })
    });
    let newest = direct
        .chain(certifications)
        .max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0));
    if newest.is_none() {
        return Err(Unverified::BadSignature(format!(
            "key {name} has no valid self-signature"
        )));
    }
    expiry_check(newest, primary.created_at(), now, name)
}

/// A signing subkey: bound (with a back signature), not revoked, not
/// expired, and flagged for signing.
fn subkey_usable(
    cert: &SignedPublicKey,
    subkey: &SignedPublicSubKey,
    name: &str,
    now: Timestamp,
) -> Result<(), Unverified> {
    let sub = format!("{name} (subkey {:X})", subkey.key.fingerprint());
    subkey
        .verify_bindings(&cert.primary_key)
        .map_err(|e| Unverified::BadSignature(format!("key {sub} is not bound: {e}")))?;
    if subkey
        .signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        return Err(Unverified::RevokedKey(format!("key {sub} is revoked")));
    }
    let binding = subkey
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0));
    if !binding.is_some_and(|b| b.key_flags().sign()) {
        return Err(Unverified::BadSignature(format!(
            "key {sub} is not a signing key"
        )));
    }
    expiry_check(binding, subkey.key.created_at(), now, &sub)
}

fn expiry_check(
    signature: Option<&Signature>,
    created: Timestamp,
    now: Timestamp,
    name: &str,
) -> Result<(), Unverified> {
    let lifetime = signature
        .and_then(Signature::key_expiration_time)
        .map(|d| d.as_secs())
        .filter(|secs| *secs > 0);
    match lifetime {
        Some(secs)
            if u64::from(created.as_secs()) + u64::from(secs) <= u64::from(now.as_secs()) =>
        {
            Err(Unverified::ExpiredKey(format!("key {name} has expired")))
        }
        _ => Ok(()),
    }
}

fn signature_good(
    signature: &Signature,
    key: &impl pgp::types::VerifyingKey,
    data: &[u8],
    now: Timestamp,
    name: &str,
) -> Result<(), Unverified> {
    signature.verify(key, data).map_err(|e| {
        Unverified::BadSignature(format!(
            "the signature by key {name} does not match the object: {e}"
        ))
    })?;
    let created = signature.created().map(Timestamp::as_secs).unwrap_or(0);
    if created < key.created_at().as_secs() {
        return Err(Unverified::BadSignature(format!(
            "the signature is older than key {name}"
        )));
    }
    let lifetime = signature
        .signature_expiration_time()
        .map(|d| d.as_secs())
        .filter(|secs| *secs > 0);
    if lifetime.is_some_and(|secs| u64::from(created) + u64::from(secs) <= u64::from(now.as_secs()))
    {
        return Err(Unverified::ExpiredKey(format!(
            "the signature by key {name} has expired"
        )));
    }
    Ok(())
}
