//! The one error type of the git module, and the rules that turn a libgit2 or
//! I/O failure into a variant a caller can act on.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::redact::Redactor;

/// Why a sync failed. Every message is already redacted: no URL credential,
/// token, user name or passphrase of the [`super::Auth`] in use appears in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// The options themselves are wrong (bad ref name, unreadable CA file...).
    #[error("invalid git sync options: {0}")]
    InvalidInput(String),
    /// The remote could not be reached or does not serve that repository.
    #[error("git remote {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    /// The remote refused every credential offered.
    #[error("authentication failed for {url}: {message}")]
    Auth { url: String, message: String },
    /// The server's identity could not be verified (TLS certificate or SSH
    /// host key): nothing was sent to it.
    #[error("could not verify the identity of {url}: {message}")]
    Certificate { url: String, message: String },
    /// The remote has no such branch, tag or commit.
    #[error("{what} not found in {url}")]
    RefNotFound { url: String, what: String },
    /// A network operation ran past the timeout and was cancelled.
    #[error("git operation on {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    /// Something that is not a checkout of ours is at the target path; it was
    /// left untouched.
    #[error("{path} is not a bc_gitops checkout: {reason}")]
    NotARepository { path: PathBuf, reason: String },
    /// The disk (or quota) is full; the previous checkout was kept.
    #[error("no space left while writing {path}: {message}")]
    DiskFull { path: PathBuf, message: String },
    /// Another local I/O failure; the previous checkout was kept.
    #[error("I/O error on {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// The local clone is damaged and could not be healed by a re-clone.
    #[error("local clone at {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// Anything else libgit2 reported.
    #[error("git error: {0}")]
    Other(String),
}

impl GitError {
    /// Whether a fresh clone may cure this failure (the local clone, not the
    /// remote, is at fault).
    pub(crate) fn is_corrupt(&self) -> bool {
        matches!(self, GitError::Corrupt { .. })
    }
}

/// ENOSPC and EDQUOT, the errno values of a full disk or quota on Linux.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// Whether a libgit2 or OS message says the disk is full.
pub(crate) fn says_disk_full(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

/// Maps an I/O failure on `path`, with what we were doing, to `DiskFull` or `Io`.
pub(crate) fn io_error(err: &io::Error, path: &Path, doing: &str) -> GitError {
    let message = format!("{doing}: {err}");
    let full = matches!(err.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        || err.kind() == io::ErrorKind::StorageFull
        || says_disk_full(&message);
    if full {
        GitError::DiskFull {
            path: path.to_path_buf(),
            message,
        }
    } else {
        GitError::Io {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// Maps a failure reading what the local clone at `path` already held (its
/// objects, references or index, as the health check reads them): a full
/// disk is reported as such, anything else means the clone is damaged (and
/// is healed by the caller). Only the health checks may call this: a failure
/// of anything else (a transfer, a checkout) is not proof of damage.
pub(crate) fn corrupt_error(err: &git2::Error, path: &Path, redactor: &Redactor) -> GitError {
    disk_full_or(err, path, redactor, |path, message| GitError::Corrupt {
        path,
        message,
    })
}

/// Maps a libgit2 failure of a local operation on `path` that is not a read
/// of existing data (creating a repository, writing the worktree): a full
/// disk, or else an I/O error. Never `Corrupt`: retrying it must not re-clone.
pub(crate) fn local_error(err: &git2::Error, path: &Path, redactor: &Redactor) -> GitError {
    disk_full_or(err, path, redactor, |path, message| GitError::Io {
        path,
        message,
    })
}

/// `DiskFull` when the (redacted) libgit2 message says so, else `otherwise`.
fn disk_full_or(
    err: &git2::Error,
    path: &Path,
    redactor: &Redactor,
    otherwise: impl FnOnce(PathBuf, String) -> GitError,
) -> GitError {
    let message = redactor.redact(err.message());
    let path = path.to_path_buf();
    if says_disk_full(&message) {
        GitError::DiskFull { path, message }
    } else {
        otherwise(path, message)
    }
}

/// What the callbacks observed besides libgit2's own error, which is often
/// a bare "user cancelled" or "early EOF" once a callback stopped it.
#[derive(Debug, Default)]
pub(crate) struct NetFacts {
    /// The deadline passed and a callback cancelled the operation.
    pub timed_out: bool,
    /// The credentials callback ran out of things to offer.
    pub auth_exhausted: Option<String>,
    /// Our SSH host-key check rejected the server.
    pub identity_rejected: Option<String>,
    /// The operation lasted at least libgit2's server timeout.
    pub outlasted_server_timeout: bool,
}

/// Maps a libgit2 failure of a network operation (ls-remote or fetch) that
/// ran for `elapsed`.
pub(crate) fn net_error(
    err: &git2::Error,
    facts: &NetFacts,
    url: &str,
    elapsed: Duration,
    local_path: &Path,
    redactor: &Redactor,
) -> GitError {
    use git2::{ErrorClass as Class, ErrorCode as Code};
    let url = redactor.redact(url);
    let message = redactor.redact(err.message());
    // libgit2's own connect and server timeouts say so in the code (a plain
    // socket) or in the message (ssh, a connect). Under TLS only the errno
    // of the non-blocking socket, EAGAIN, is left, and it is also left by
    // other failures: a timeout then only if it lasted long enough.
    let libgit2_timeout = err.code() == Code::Timeout
        || message.to_ascii_lowercase().contains("timed out")
        || (facts.outlasted_server_timeout && message.contains("Resource temporarily unavailable"));
    if facts.timed_out || libgit2_timeout {
        let after = Duration::from_millis(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
        return GitError::Timeout { url, after };
    }
    if let Some(why) = &facts.identity_rejected {
        let message = redactor.redact(why);
        return GitError::Certificate { url, message };
    }
    if let Some(why) = &facts.auth_exhausted {
        let message = redactor.redact(why);
        return GitError::Auth { url, message };
    }
    if says_disk_full(&message) {
        let path = local_path.to_path_buf();
        return GitError::DiskFull { path, message };
    }
    // libgit2 1.9.7 loses the reason when a certificate has subjectAltNames
    // but none of the host's kind (DNS name, IP address): its common-name
    // fallback reads past the names and fails as an "early EOF", which
    // OpenSSL 3 reports in no other case. The certificate was refused.
    if err.class() == Class::Ssl && message.contains("received early EOF") {
        let message = "the server's certificate does not name this host (its \
                       subjectAltNames have no entry for it)"
            .to_string();
        return GitError::Certificate { url, message };
    }
    // libgit2's verdict on the chain or the host name of a TLS server.
    let untrusted = err.code() == Code::Certificate
        || (err.class() == Class::Ssl && message.contains("certificate"));
    if untrusted {
        let message = format!(
            "{message} (the server's certificate is not trusted, or not for this host name: \
             set ca_file to the CA, or the server's own self-signed certificate, that signs it)"
        );
        return GitError::Certificate { url, message };
    }
    match (err.code(), err.class()) {
        (Code::Auth, _) => GitError::Auth { url, message },
        // Writing what was received failed locally (permissions, a lock
        // held by another process): the previous checkout is kept.
        (Code::Locked, _) | (_, Class::Filesystem) => {
            let path = local_path.to_path_buf();
            GitError::Io { path, message }
        }
        // Bad data in the transfer (or a failure storing it): a failure of
        // this fetch, never proof that the local clone is damaged (that is
        // for the health checks to say), so nothing is re-cloned for it.
        (_, Class::Odb | Class::Zlib | Class::Index | Class::Object | Class::Tree)
        | (_, Class::Reference | Class::Checkout | Class::FetchHead | Class::Indexer)
        | (_, Class::Repository | Class::Invalid) => {
            GitError::Other(format!("fetching from {url} failed: {message}"))
        }
        _ => GitError::Unreachable { url, message },
    }
}
