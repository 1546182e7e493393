//! The network side of a sync: list the remote's refs, fetch what is missing,
//! under one deadline as far as libgit2 lets a callback end an operation,
//! with our credential and SSH host-key checks.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    cert::Cert, AutotagOption, CertificateCheckStatus, Direction, FetchOptions, Oid, ProxyOptions,
    RemoteCallbacks, Repository,
};

use super::auth::Credentials;
use super::error::{net_error, GitError, NetFacts};
use super::hostkey::{key_type, HostKeyCheck};
use super::libgit2_opts::Timeouts;
use super::redact::{percent_decode, redact_url, Redactor};
use super::url::{RemoteUrl, Transport};
use super::{Auth, GitRef};

/// Everything a network step needs, prepared once per sync.
pub(crate) struct Network<'a> {
    url: &'a str,
    remote: RemoteUrl,
    auth: &'a Auth,
    timeout: Duration,
    /// libgit2's own (process-wide) timeouts.
    libgit2: Timeouts,
    redactor: &'a Redactor,
    /// `None` when host key verification is off.
    host_keys: Option<HostKeyCheck>,
}

impl<'a> Network<'a> {
    pub(crate) fn new(
        url: &'a str,
        auth: &'a Auth,
        timeout: Duration,
        libgit2: Timeouts,
        redactor: &'a Redactor,
    ) -> Result<Self, GitError> {
        let remote = RemoteUrl::parse(url)?;
        // libgit2 reports a missing local path as "unsupported URL protocol".
        // (A `file://host/...` form is left to libgit2; a `file://` path is
        // percent-decoded first, as libgit2 does.)
        let is_url = url.contains("://");
        let local = remote.local_dir().and_then(|dir| match is_url {
            false => Some(dir.to_string()),
            true if dir.starts_with('/') => Some(percent_decode(dir)),
            true => None,
        });
        if let Some(dir) = local {
            if !Path::new(&dir).exists() {
                return Err(GitError::Unreachable {
                    url: redact_url(url),
                    message: format!("no such directory: {dir}"),
                });
            }
        }
        let host_keys = (auth.ssh_verify_host && remote.transport == Transport::Ssh).then(|| {
            let files = match &auth.ssh_known_hosts {
                Some(file) => vec![file.clone()],
                None => {
                    let mut files = Vec::new();
                    if let Some(home) = std::env::var_os("HOME") {
                        files.push(PathBuf::from(home).join(".ssh").join("known_hosts"));
                    }
                    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
                    files
                }
            };
            HostKeyCheck {
                files,
                name: remote.known_hosts_name(),
            }
        });
        Ok(Network {
            url,
            remote,
            auth,
            timeout,
            libgit2,
            redactor,
            host_keys,
        })
    }

    /// Makes the commit `git_ref` names on the remote present in `repo` and
    /// returns its id. Talks to the remote only when needed: a commit id
    /// already present needs nothing, and a ref whose commit is present needs
    /// only the ref listing. Errors name `path` (the checkout, not a staging
    /// directory).
    pub(crate) fn fetch_target(
        &self,
        repo: &Repository,
        git_ref: &GitRef,
        path: &Path,
    ) -> Result<Oid, GitError> {
        let not_found = || GitError::RefNotFound {
            url: self.redactor.redact(self.url),
            what: git_ref.to_string(),
        };
        if let GitRef::Commit(hex) = git_ref {
            let oid = Oid::from_str(hex)
                .map_err(|_| GitError::InvalidInput(format!("bad commit id {hex}")))?;
            if repo.find_commit(oid).is_ok() {
                return Ok(oid);
            }
            let session = Session::start(self, repo, path);
            session.fetch(&[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])?;
            return repo
                .find_commit(oid)
                .map(|c| c.id())
                .map_err(|_| not_found());
        }
        let session = Session::start(self, repo, path);
        let heads = session.list()?;
        let find = |name: String| {
            heads
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, oid)| (n.clone(), *oid))
        };
        let found = match git_ref {
            GitRef::Branch(name) => find(format!("refs/heads/{name}")),
            GitRef::Tag(name) => find(format!("refs/tags/{name}")),
            GitRef::Named(name) => {
                find(format!("refs/heads/{name}")).or_else(|| find(format!("refs/tags/{name}")))
            }
            GitRef::Commit(_) => None,
        };
        let (refname, oid) = found.ok_or_else(not_found)?;
        // An annotated tag is advertised with its peeled commit as `<ref>^{}`.
        let commit = find(format!("{refname}^{{}}")).map_or(oid, |(_, peeled)| peeled);
        if repo.find_commit(commit).is_ok() {
            return Ok(commit);
        }
        let local_ref = match refname.strip_prefix("refs/heads/") {
            Some(branch) => format!("refs/remotes/origin/{branch}"),
            None => refname.clone(),
        };
        session.fetch(&[&format!("+{refname}:{local_ref}")])?;
        // What the fetch brought, not what `list` saw: the ref may have moved
        // (a force-push) between the two connections.
        let reference = match repo.find_reference(&local_ref) {
            Ok(reference) => reference,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(not_found()),
            Err(e) => return Err(self.unreadable_fetch(git_ref, &e)),
        };
        reference
            .peel_to_commit()
            .map(|c| c.id())
            .map_err(|e| self.unreadable_fetch(git_ref, &e))
    }

    /// The fetch succeeded but its result cannot be read: a failure of this
    /// fetch (the transfer), not a sign that the local clone is damaged.
    fn unreadable_fetch(&self, git_ref: &GitRef, err: &git2::Error) -> GitError {
        GitError::Other(format!(
            "fetched {git_ref} from {} but cannot read it: {}",
            self.redactor.redact(self.url),
            self.redactor.redact(err.message())
        ))
    }
}

/// One network step (a connection), and the state its callbacks share,
/// under one deadline.
struct Session<'n, 'r> {
    net: &'n Network<'n>,
    repo: &'r Repository,
    local_path: &'r Path,
    started: Instant,
    deadline: Instant,
    facts: RefCell<NetFacts>,
    /// The repository's config, for git credential helpers.
    config: Option<git2::Config>,
}

impl<'n, 'r> Session<'n, 'r> {
    fn start(net: &'n Network<'n>, repo: &'r Repository, local_path: &'r Path) -> Self {
        let started = Instant::now();
        Session {
            net,
            repo,
            local_path,
            started,
            deadline: started + net.timeout,
            facts: RefCell::new(NetFacts::default()),
            config: repo.config().ok(),
        }
    }

    /// The refs the remote advertises, with their ids.
    fn list(&self) -> Result<Vec<(String, Oid)>, GitError> {
        let mut remote = self.anonymous_remote()?;
        let connection = remote
            .connect_auth(
                Direction::Fetch,
                Some(self.callbacks()),
                Some(ProxyOptions::new()),
            )
            .map_err(|e| self.error(&e))?;
        let heads = connection.list().map_err(|e| self.error(&e))?;
        Ok(heads
            .iter()
            .map(|h| (h.name().to_string(), h.oid()))
            .collect())
    }

    fn fetch(&self, refspecs: &[&str]) -> Result<(), GitError> {
        let mut remote = self.anonymous_remote()?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .proxy_options(ProxyOptions::new())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.error(&e))
    }

    /// A remote that is not saved in the config (whose `origin` URL is the
    /// redacted one).
    fn anonymous_remote(&self) -> Result<git2::Remote<'r>, GitError> {
        self.repo.remote_anonymous(self.net.url).map_err(|e| {
            GitError::InvalidInput(format!(
                "remote URL {}: {}",
                self.net.redactor.redact(self.net.url),
                self.net.redactor.redact(e.message())
            ))
        })
    }

    /// Every callback libgit2 makes during the step ends it once the
    /// deadline has passed: that is the only way to stop a transfer that
    /// is still receiving data (a silent server is libgit2's own timeout).
    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        // Fresh per connection: every connection may need the credentials.
        let mut credentials = Credentials::new(self.net.auth, self.net.url, self.config.as_ref());
        callbacks.credentials(move |url, url_user, allowed| {
            if !self.before_deadline() {
                return Err(git2::Error::from_str("timed out"));
            }
            if !self.same_host(url) {
                let why = "the server redirected to another host; no credentials are sent there";
                self.facts.borrow_mut().auth_exhausted = Some(why.to_string());
                return Err(git2::Error::from_str(why));
            }
            let result = credentials.next(url_user, allowed);
            if let Some(why) = &credentials.exhausted {
                self.facts.borrow_mut().auth_exhausted = Some(why.clone());
            }
            result
        });
        callbacks.transfer_progress(|_| self.before_deadline());
        callbacks.sideband_progress(|_| self.before_deadline());
        callbacks.certificate_check(|cert, _| self.check_identity(cert));
        callbacks
    }

    /// False (which cancels the operation) once the deadline has passed.
    fn before_deadline(&self) -> bool {
        let in_time = Instant::now() < self.deadline;
        if !in_time {
            self.facts.borrow_mut().timed_out = true;
        }
        in_time
    }

    /// Whether `url` (which libgit2 asks credentials for) is on the host of
    /// the configured remote, and not where a redirect led.
    fn same_host(&self, url: &str) -> bool {
        let remote = &self.net.remote;
        RemoteUrl::parse(url).map_or(true, |asked| {
            asked.host.eq_ignore_ascii_case(&remote.host) && asked.port == remote.port
        })
    }

    /// SSH: the host key must be in known_hosts (unless verification is
    /// off). TLS: libgit2 has verified the chain and the host name against
    /// the system store and the `ca_file`s (see `libgit2_opts`); its verdict
    /// stands.
    fn check_identity(&self, cert: &Cert<'_>) -> Result<CertificateCheckStatus, git2::Error> {
        if !self.before_deadline() {
            return Err(git2::Error::from_str("timed out"));
        }
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(check) = &self.net.host_keys else {
            return Ok(CertificateCheckStatus::CertificateOk);
        };
        let verdict = match hostkey.hostkey() {
            Some(blob) => check.verify(blob, &key_type(blob)),
            None => Err("the server's host key could not be read".to_string()),
        };
        match verdict {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(why) => {
                let error = git2::Error::from_str(&why);
                self.facts.borrow_mut().identity_rejected = Some(why);
                Err(error)
            }
        }
    }

    fn error(&self, err: &git2::Error) -> GitError {
        let mut facts = std::mem::take(&mut *self.facts.borrow_mut());
        let elapsed = self.started.elapsed();
        facts.outlasted_server_timeout = elapsed >= self.net.libgit2.server;
        net_error(
            err,
            &facts,
            self.net.url,
            elapsed,
            self.local_path,
            self.net.redactor,
        )
    }
}
