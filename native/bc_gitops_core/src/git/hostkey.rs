//! SSH host key verification against OpenSSH known_hosts files.
//!
//! Done here rather than left to libgit2 because libgit2 only reads
//! `~/.ssh/known_hosts`, while the `ssh_known_hosts` option names another
//! file and the system's `/etc/ssh/ssh_known_hosts` counts too. Supports
//! plain and hashed (`|1|salt|hash`) host names, `[host]:port` entries,
//! `*`/`?` wildcards, `!` negation and `@revoked`; `@cert-authority` lines
//! are skipped (host certificates are not supported).

use std::fs;
use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The host key policy of one operation.
#[derive(Debug, Clone)]
pub(crate) struct HostKeyCheck {
    /// The files to look in, in order; missing files count as empty.
    pub files: Vec<PathBuf>,
    /// The host name as written in known_hosts (`host` or `[host]:port`).
    pub name: String,
}

/// A parsed known_hosts line.
struct Entry<'a> {
    revoked: bool,
    patterns: &'a str,
    key_type: &'a str,
    key: Vec<u8>,
}

impl HostKeyCheck {
    /// Accepts `key` (the raw SSH wire-format host key blob) if a known_hosts
    /// file lists it for this host; the error says why not, with the key's
    /// SHA256 fingerprint so that an operator can check and add it.
    pub(crate) fn verify(&self, key: &[u8], key_type: &str) -> Result<(), String> {
        let mut other_key_listed = false;
        for file in &self.files {
            let Ok(text) = fs::read_to_string(file) else {
                continue;
            };
            for entry in text.lines().filter_map(parse_line) {
                if !host_matches(entry.patterns, &self.name) && !entry.revoked {
                    continue;
                }
                if entry.revoked {
                    if entry.key == key {
                        return Err(format!("host key {} is marked @revoked", fingerprint(key)));
                    }
                    continue;
                }
                if entry.key == key {
                    return Ok(());
                }
                if entry.key_type == key_type {
                    other_key_listed = true;
                }
            }
        }
        let files = self
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if other_key_listed {
            Err(format!(
                "HOST KEY MISMATCH for {}: the server offered {key_type} {} but known_hosts ({files}) \
                 lists another key for it (possible man-in-the-middle)",
                self.name,
                fingerprint(key)
            ))
        } else {
            Err(format!(
                "host {} is not in known_hosts ({files}); its {key_type} key is {}",
                self.name,
                fingerprint(key)
            ))
        }
    }
}

/// The key type named inside an SSH wire-format key blob (`ssh-ed25519`...).
pub(crate) fn key_type(blob: &[u8]) -> String {
    let len = blob
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    blob.get(4..4 + len).map_or_else(
        || "unknown".to_string(),
        |t| String::from_utf8_lossy(t).into_owned(),
    )
}

/// The OpenSSH-style `SHA256:...` fingerprint of a key blob.
fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut words = line.split_whitespace();
    let mut first = words.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        first = words.next()?;
    }
    let key_type = words.next()?;
    let key = STANDARD.decode(words.next()?).ok()?;
    Some(Entry {
        revoked,
        patterns: first,
        key_type,
        key,
    })
}

/// Whether `name` matches a comma-separated pattern list: some positive
/// pattern matches and no negated one does.
fn host_matches(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            if hashed_matches(hashed, name) {
                matched = true;
            }
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if glob(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                return false;
            }
        } else if glob(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash` (both base64): HMAC-SHA1 keyed with the salt over the name.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` wildcards, as in OpenSSH host patterns.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_hashes() {
        assert!(host_matches("github.com,140.82.121.4", "github.com"));
        assert!(host_matches("*.example.org", "git.example.org"));
        assert!(!host_matches(
            "*.example.org,!bad.example.org",
            "bad.example.org"
        ));
        assert!(host_matches("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
        assert!(!host_matches("127.0.0.1", "[127.0.0.1]:2222"));
        // A hashed entry for "localhost", written by `ssh-keygen -H`.
        let hashed = "|1|/p/RYZrGrnA5DnCJvreKUdvdBZU=|SCrFV5pW/JX90RwecFAivUv9+38=";
        assert!(host_matches(hashed, "localhost"));
        assert!(!host_matches(hashed, "otherhost"));
    }

    #[test]
    fn fingerprint_and_key_type_match_ssh_keygen() {
        // `ssh-keygen -lf` of this ed25519 public key.
        let blob = STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIFlkby3nTXRnTIFMVF5FEf0K9zYNKKbGhl535OhiBQS4")
            .unwrap_or_default();
        assert_eq!(
            fingerprint(&blob),
            "SHA256:dKy62VPLXJyGIO1D764TZnlnOCfh1Zvs7npEP26wrvg"
        );
        assert_eq!(key_type(&blob), "ssh-ed25519");
    }
}
