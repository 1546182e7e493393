//! HTTPS server verification, decided by us for each operation.
//!
//! Why not simply let libgit2 decide: HTTPS goes through the deadline relay
//! as an HTTP `CONNECT` proxy (see `relay`), and libgit2 1.9.7 has a
//! use-after-free when a proxied TLS connection is rejected in its
//! certificate check (`http_client_connect` frees the proxy stream, then
//! `SSL_shutdown` writes through it: a hang or a crash). So the
//! `certificate_check` callback always answers "ok" to libgit2, and when our
//! verdict is "no", it first cuts the relay: nothing more reaches the server
//! (no request, no credential) and the operation fails, reported as
//! [`super::GitError::Certificate`].
//!
//! The verdict, for the leaf certificate libgit2 saw (the only one git2
//! exposes):
//!
//! 1. the leaf is byte-for-byte one of the certificates in `ca_file` (a
//!    self-signed server pinned by its certificate): trusted;
//! 2. otherwise `openssl s_client` connects through the same relay and
//!    verifies the server's full chain with OpenSSL: the system store plus
//!    `ca_file` if set (`-partial_chain`: an intermediate there is a valid
//!    anchor), the host name, the dates. Trusted if that passes and the
//!    server showed it the same leaf.
//!
//! `ca_file` therefore applies to this operation only; git2's
//! `opts::set_ssl_cert_file` was not an option: it is `unsafe` (forbidden
//! here) and process-global and additive in libgit2 (a CA added for one
//! remote would be trusted for every remote). The cost: HTTPS needs the
//! `openssl` command (package `openssl`) unless `ca_file` pins the server's
//! certificate, and one extra TLS handshake per sync.

use std::cell::RefCell;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::encoding::base64_decode;
use super::error::GitError;

/// The HTTPS trust settings of one operation, and its verdict cache.
#[derive(Debug, Default)]
pub(crate) struct TlsCheck {
    ca_file: Option<PathBuf>,
    pinned: Vec<Vec<u8>>,
    /// The last verdict: a sync makes two connections to one server.
    cache: RefCell<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    leaf: Vec<u8>,
    verdict: Result<(), String>,
}

/// How the probe reaches the server: the relay's port and the target.
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub proxy_port: u16,
    pub deadline: Instant,
}

impl TlsCheck {
    /// Trust settings with an optional extra CA file (read now, so that a bad
    /// file is an input error, not a failed connection).
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<TlsCheck, GitError> {
        let Some(path) = ca_file else {
            return Ok(TlsCheck::default());
        };
        let text = fs::read_to_string(path)
            .map_err(|e| GitError::InvalidInput(format!("ca_file {}: {e}", path.display())))?;
        let pinned = pem_certificates(&text);
        if pinned.is_empty() {
            return Err(GitError::InvalidInput(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(TlsCheck {
            ca_file: Some(path.to_path_buf()),
            pinned,
            cache: RefCell::new(None),
        })
    }

    /// Whether the server that presented the DER certificate `leaf` is to be
    /// trusted; the error says why not.
    pub(crate) fn verify(&self, leaf: &[u8], target: &Target<'_>) -> Result<(), String> {
        if self.pinned.iter().any(|c| c == leaf) {
            return Ok(());
        }
        if let Some(cached) = &*self.cache.borrow() {
            if cached.leaf == leaf {
                return cached.verdict.clone();
            }
        }
        let verdict = self.probe(leaf, target);
        *self.cache.borrow_mut() = Some(Cached {
            leaf: leaf.to_vec(),
            verdict: verdict.clone(),
        });
        verdict
    }

    fn probe(&self, leaf: &[u8], target: &Target<'_>) -> Result<(), String> {
        let host = target.host;
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let connect = if host.contains(':') {
            format!("[{host}]:{}", target.port)
        } else {
            format!("{host}:{}", target.port)
        };
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-proxy",
            &format!("127.0.0.1:{}", target.proxy_port),
            "-connect",
            &connect,
        ])
        .args(["-verify_return_error", "-showcerts"]);
        if is_ip {
            cmd.args(["-noservername", "-verify_ip", host]);
        } else {
            cmd.args(["-servername", host, "-verify_hostname", host]);
        }
        if let Some(ca) = &self.ca_file {
            cmd.arg("-CAfile").arg(ca).arg("-partial_chain");
        }
        let (ok, output) = run_until(&mut cmd, target.deadline)?;
        let verified = ok && output.contains("Verify return code: 0 (ok)");
        if !verified {
            let reason = output
                .lines()
                .find_map(|l| l.strip_prefix("verify error:"))
                .or_else(|| {
                    output
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("Verify return code: "))
                })
                .map_or_else(|| "the TLS handshake failed".to_string(), str::to_string);
            let hint = if self.ca_file.is_some() {
                "ca_file does not vouch for it either"
            } else {
                "set ca_file to the CA (or the server's own certificate) that signs it"
            };
            return Err(format!(
                "the certificate of {host} is not trusted ({reason}); {hint}"
            ));
        }
        if pem_certificates(&output).first().map(Vec::as_slice) != Some(leaf) {
            return Err(format!(
                "{host} showed different certificates to two connections"
            ));
        }
        Ok(())
    }
}

/// Runs `cmd` (stdin closed) until it exits or `deadline`; returns whether
/// it succeeded and its stdout and stderr.
fn run_until(cmd: &mut Command, deadline: Instant) -> Result<(bool, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run `openssl` to verify the server certificate ({e}); install it")
        })?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output: String = readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        Some(status) => Ok((status.success(), output)),
        None => Err("timed out verifying the server certificate".to_string()),
    }
}

/// The DER bodies of the `CERTIFICATE` blocks of a PEM text.
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else {
            break;
        };
        if let Some(der) = base64_decode(&body[..end]) {
            out.push(der);
        }
        rest = &body[end + END.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nMIIB\nAg==\n-----END CERTIFICATE-----\n\
                   x\n-----BEGIN CERTIFICATE-----\nCQk=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_certificates(pem),
            vec![vec![0x30, 0x82, 1, 2], vec![9, 9]]
        );
    }
}
