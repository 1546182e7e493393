//! Git sync: makes a local directory an exact checkout of one ref of a remote
//! repository, whatever the remote and whatever went wrong before.
//!
//! This is the reconciler's view of the world (the specs repository) and the
//! `git` source type of apps (an app's repository at a ref, in a workspace
//! directory): both call [`sync`].
//!
//! What [`sync`] guarantees:
//!
//! - **Exact checkout.** The tracked ref is fetched and its tree force-checked
//!   out: local edits are overwritten, untracked and ignored files removed,
//!   nothing is merged. HEAD is detached at the commit. A rewritten
//!   (force-pushed) history is simply followed.
//! - **Safe paths.** The target is cloned if it is missing or an empty
//!   directory. A directory that holds anything else is only touched if it is
//!   a checkout made by this module (marked `bcgitops.managed` in its git
//!   config) or a git repository whose `origin` is the same URL (then adopted);
//!   any other content is user data and gives [`GitError::NotARepository`],
//!   untouched.
//! - **Self-healing.** A damaged local clone (missing objects, truncated pack,
//!   broken HEAD or index) is re-cloned into a sibling temporary directory and
//!   swapped in by two renames only once complete; the last good checkout stays
//!   in place, usable, until then (and stays if the re-clone fails). Stale
//!   `*.lock` files are removed first: the checkout belongs to this module, and
//!   calls for one path are serialized within the process.
//! - **Bounded time, as far as libgit2 allows.** Each network step (listing
//!   the remote's refs, the fetch; a healing re-clone gets its own budget) is
//!   cancelled by the first libgit2 callback (progress, credentials,
//!   certificate) after [`SyncOptions::timeout`]. A server that stops
//!   answering calls none: libgit2 itself gives up on it after
//!   [`Timeouts::server`] of silence (and on a connect after
//!   [`Timeouts::connect`]), process-wide settings (see [`configure`]). Not
//!   bounded: the name lookup (the system resolver's own timeouts apply),
//!   and a server that keeps sending a little before the pack starts.
//! - **Signatures.** With [`SyncOptions::verify`], the commit checked out
//!   (or the annotated tag that names it) is checked for a good signature
//!   of an allowed key ([`crate::verify`]) after the checkout, every sync:
//!   the checkout of a commit that fails stays for inspection, and the
//!   caller must not use it ([`SyncOutcome::verified`]).
//! - **No leaked secrets.** URLs are redacted ([`redact_url`]) and every message
//!   has the configured user name, token and passphrase masked; `Debug` of the
//!   options masks them too.
//!
//! Remotes: a local path or `file://`, `git://`, `http://`, `https://`,
//! `ssh://user@host:port/path`, scp-like `user@host:path` and
//! `[user@host:port]:path`. HTTPS certificates are verified by libgit2
//! (OpenSSL) against the system store plus every `ca_file` a sync of this
//! process named ([`Auth::ca_file`]). Not supported: submodules, shallow
//! clones, proxies from git config or the environment, SSH host
//! certificates. A redirect is followed on the first request only (as git
//! does), and credentials are never offered to another host.
//!
//! Cost: a sync whose ref has not moved, on a checkout nobody touched since
//! the last sync, lists the remote's refs and stats each path of the
//! checkout against a record the last sync left (see the `snapshot` module),
//! and writes nothing. Any difference (an edit, a stray file, a changed pack)
//! makes it read HEAD's whole tree (the health check) and force the checkout,
//! as every sync of a moved ref does. With [`SyncOptions::watch`] (Linux),
//! an inotify watch set when the record was taken replaces the stat of each
//! path: while it has seen no change, only the ref listing is done, in a
//! time that does not grow with the checkout (see the `watch` module).

mod auth;
mod error;
mod hostkey;
mod libgit2_opts;
mod net;
mod redact;
mod repo;
mod snapshot;
mod sync;
mod url;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::GitError;
pub use libgit2_opts::{configure, Timeouts};
pub use redact::redact_url;

use crate::verify::{Signer, Unverified, VerifyKeys};

/// Which ref of the remote to check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch (`refs/heads/<name>`), followed as it moves.
    Branch(String),
    /// A tag (`refs/tags/<name>`); a moved tag is followed too.
    Tag(String),
    /// A full 40-hex commit id: fetched once, then no network is needed.
    Commit(String),
    /// A name that is a branch if the remote has that branch, else a tag.
    Named(String),
}

impl Default for GitRef {
    fn default() -> Self {
        GitRef::Branch("main".to_string())
    }
}

impl GitRef {
    /// Reads a ref from one string, as app specs write it: 40 hex digits are
    /// a commit, `refs/heads/x` a branch, `refs/tags/x` a tag, and any other
    /// name a branch if the remote has it, else a tag.
    pub fn parse(text: &str) -> GitRef {
        if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            GitRef::Commit(text.to_ascii_lowercase())
        } else if let Some(branch) = text.strip_prefix("refs/heads/") {
            GitRef::Branch(branch.to_string())
        } else if let Some(tag) = text.strip_prefix("refs/tags/") {
            GitRef::Tag(tag.to_string())
        } else {
            GitRef::Named(text.to_string())
        }
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(name) => write!(f, "branch '{name}'"),
            GitRef::Tag(name) => write!(f, "tag '{name}'"),
            GitRef::Commit(id) => write!(f, "commit {id}"),
            GitRef::Named(name) => write!(f, "branch or tag '{name}'"),
        }
    }
}

/// How to authenticate, and how to check the server's identity.
///
/// SSH credentials are offered in this order, each once: `ssh_key` (with
/// `ssh_passphrase`) if set, and then nothing else; otherwise ssh-agent (when
/// `SSH_AUTH_SOCK` is set), then `~/.ssh/id_ed25519`, then `~/.ssh/id_rsa`.
/// HTTPS: `username` + `token` if a token is set (user name `git` if none),
/// otherwise the git credential helpers configured for the URL. A server that
/// refuses them all gives [`GitError::Auth`], never a retry loop.
#[derive(Clone)]
pub struct Auth {
    /// Private key file for SSH.
    pub ssh_key: Option<PathBuf>,
    /// Passphrase of `ssh_key` (or of the default keys).
    pub ssh_passphrase: Option<String>,
    /// known_hosts file; by default `~/.ssh/known_hosts` then
    /// `/etc/ssh/ssh_known_hosts`.
    pub ssh_known_hosts: Option<PathBuf>,
    /// Check the SSH host key against known_hosts (default true). Turning it
    /// off trusts whoever answers: only for throwaway test setups.
    pub ssh_verify_host: bool,
    /// User name (SSH, when the URL has none; HTTPS with `token`).
    pub username: Option<String>,
    /// Password or access token for HTTPS.
    pub token: Option<String>,
    /// A PEM file of CA certificates (or a server's own self-signed
    /// certificate) to trust for HTTPS besides the system store. libgit2
    /// keeps trusted certificates process-wide: once a sync has named this
    /// file, it is trusted for every HTTPS remote of the process.
    pub ca_file: Option<PathBuf>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            ssh_key: None,
            ssh_passphrase: None,
            ssh_known_hosts: None,
            ssh_verify_host: true,
            username: None,
            token: None,
            ca_file: None,
        }
    }
}

/// `Some("***")` for a set secret: Debug output must not leak it.
fn masked(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("ssh_key", &self.ssh_key)
            .field("ssh_passphrase", &masked(&self.ssh_passphrase))
            .field("ssh_known_hosts", &self.ssh_known_hosts)
            .field("ssh_verify_host", &self.ssh_verify_host)
            .field("username", &masked(&self.username))
            .field("token", &masked(&self.token))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What to sync where.
#[derive(Clone)]
pub struct SyncOptions {
    /// The remote (see the module doc for the forms accepted).
    pub url: String,
    /// The ref to check out (default: branch `main`).
    pub git_ref: GitRef,
    /// The checkout directory.
    pub local_path: PathBuf,
    /// Budget of each network step (default 60 s), checked at each libgit2
    /// callback (see the module doc).
    pub timeout: Duration,
    /// Credentials and identity checks.
    pub auth: Auth,
    /// When set, the commit checked out (or the annotated tag naming it)
    /// must carry a good signature from one of these keys; the verdict is
    /// in [`SyncOutcome::verified`].
    pub verify: Option<VerifyKeys>,
    /// Watch the checkout with inotify between syncs (default false), so
    /// that a sync of an untouched checkout does not stat each of its
    /// paths. One inotify instance per checkout: for the few checkouts
    /// synced often (the gitops repository), not for every app source.
    pub watch: bool,
}

impl SyncOptions {
    /// Options with the defaults: branch `main`, 60 s, default [`Auth`].
    pub fn new(url: impl Into<String>, local_path: impl Into<PathBuf>) -> SyncOptions {
        SyncOptions {
            url: url.into(),
            git_ref: GitRef::default(),
            local_path: local_path.into(),
            timeout: Duration::from_secs(60),
            auth: Auth::default(),
            verify: None,
            watch: false,
        }
    }
}

impl fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncOptions")
            .field("url", &redact_url(&self.url))
            .field("git_ref", &self.git_ref)
            .field("local_path", &self.local_path)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .field("verify", &self.verify)
            .field("watch", &self.watch)
            .finish()
    }
}

/// The result of a successful sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The commit now checked out (40 hex digits).
    pub commit: String,
    /// Whether it differs from the commit checked out before this call
    /// (true for a first clone).
    pub changed: bool,
    /// Why the checkout was re-cloned, if it was (redacted).
    pub healed: Option<String>,
    /// The signature check, when [`SyncOptions::verify`] was set. A commit
    /// that fails it is checked out all the same (for inspection): its
    /// content must not be used.
    pub verified: Option<Verification>,
}

/// The verdict on a checkout's signature, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub result: Result<Signer, Unverified>,
    pub duration: Duration,
}

/// Makes `opts.local_path` an exact checkout of `opts.git_ref` of `opts.url`
/// (see the module doc for the rules). Blocks; calls for the same path are
/// serialized.
pub fn sync(opts: &SyncOptions) -> Result<SyncOutcome, GitError> {
    sync::run(opts)
}

/// Whether a watch is armed on the checkout at `local_path`: then the next
/// sync of it, if nothing changed there, answers without statting its paths.
pub fn watching(local_path: &Path) -> bool {
    std::path::absolute(local_path).is_ok_and(|path| watch::is_armed(&path.join(".git")))
}
