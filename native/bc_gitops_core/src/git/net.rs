//! The network side of a sync: list the remote's refs, fetch what is missing,
//! all under one deadline, with our credential and identity checks.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    cert::Cert, AutotagOption, CertificateCheckStatus, Direction, FetchOptions, Oid, ProxyOptions,
    RemoteCallbacks, Repository,
};

use super::auth::Credentials;
use super::error::{io_error, net_error, GitError, NetFacts};
use super::hostkey::{key_type, HostKeyCheck};
use super::redact::{redact_url, Redactor};
use super::relay::{Mode, Relay};
use super::tls::{Target, TlsCheck};
use super::url::{RemoteUrl, Transport};
use super::{Auth, GitRef};

/// Everything a network step needs, prepared once per sync.
pub(crate) struct Network<'a> {
    url: &'a str,
    remote: RemoteUrl,
    auth: &'a Auth,
    timeout: Duration,
    redactor: &'a Redactor,
    tls: TlsCheck,
    /// `None` when host key verification is off.
    host_keys: Option<HostKeyCheck>,
}

impl<'a> Network<'a> {
    pub(crate) fn new(
        url: &'a str,
        auth: &'a Auth,
        timeout: Duration,
        redactor: &'a Redactor,
    ) -> Result<Self, GitError> {
        let remote = RemoteUrl::parse(url)?;
        // libgit2 reports a missing local path as "unsupported URL protocol".
        // (A `file://host/...` form is left to libgit2; a `file://` path is
        // percent-decoded first, as libgit2 does.)
        let is_url = url.contains("://");
        let local = remote.local_dir().and_then(|dir| match is_url {
            false => Some(dir.to_string()),
            true if dir.starts_with('/') => percent_decode(dir),
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
        let tls = match remote.transport {
            Transport::Https => TlsCheck::new(auth.ca_file.as_deref())?,
            _ => TlsCheck::default(),
        };
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
            redactor,
            tls,
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
            let session = Session::start(self, repo, path)?;
            session.fetch(&[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])?;
            return repo
                .find_commit(oid)
                .map(|c| c.id())
                .map_err(|_| not_found());
        }
        let session = Session::start(self, repo, path)?;
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

/// One network step: a relay (for network remotes) and the state the
/// callbacks share, all under one deadline.
struct Session<'n, 'r> {
    net: &'n Network<'n>,
    repo: &'r Repository,
    local_path: &'r Path,
    relay: Option<Relay>,
    transport_url: String,
    deadline: Instant,
    facts: RefCell<NetFacts>,
    /// The repository's config, for git credential helpers.
    config: Option<git2::Config>,
}

impl<'n, 'r> Session<'n, 'r> {
    fn start(
        net: &'n Network<'n>,
        repo: &'r Repository,
        local_path: &'r Path,
    ) -> Result<Self, GitError> {
        let deadline = Instant::now() + net.timeout;
        let relay = if net.remote.is_network() {
            let mode = match net.remote.transport {
                Transport::Https => Mode::Connect,
                Transport::Http => Mode::HttpHost,
                _ => Mode::Direct,
            };
            let relay = Relay::start(&net.remote.host, net.remote.port, mode, deadline)
                .map_err(|e| io_error(&e, local_path, "starting the network relay"))?;
            Some(relay)
        } else {
            None
        };
        let transport_url = match &relay {
            Some(relay) => net.remote.relayed(net.url, relay.port()),
            None => net.url.to_string(),
        };
        let config = repo.config().ok();
        Ok(Session {
            net,
            repo,
            local_path,
            relay,
            transport_url,
            deadline,
            facts: RefCell::new(NetFacts::default()),
            config,
        })
    }

    /// The refs the remote advertises, with their ids.
    fn list(&self) -> Result<Vec<(String, Oid)>, GitError> {
        let mut remote = self.anonymous_remote()?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), Some(self.proxy()))
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
            .proxy_options(self.proxy())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.error(&e))
    }

    /// A remote that is not saved in the config (the transport URL may point
    /// at the relay).
    fn anonymous_remote(&self) -> Result<git2::Remote<'r>, GitError> {
        self.repo
            .remote_anonymous(&self.transport_url)
            .map_err(|e| {
                GitError::InvalidInput(format!(
                    "remote URL {}: {}",
                    self.net.redactor.redact(self.net.url),
                    self.net.redactor.redact(e.message())
                ))
            })
    }

    /// Routes https through the relay as a `CONNECT` proxy; the other
    /// transports connect to the relay's address (see `RemoteUrl::relayed`).
    fn proxy(&self) -> ProxyOptions<'static> {
        let mut proxy = ProxyOptions::new();
        if let (Some(relay), Transport::Https) = (&self.relay, self.net.remote.transport) {
            proxy.url(&format!("http://127.0.0.1:{}", relay.port()));
        }
        proxy
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        // Fresh per connection: every connection may need the credentials.
        let mut credentials = Credentials::new(self.net.auth, self.net.url, self.config.as_ref());
        callbacks.credentials(move |_url, url_user, allowed| {
            if !self.before_deadline() {
                return Err(git2::Error::from_str("timed out"));
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

    /// False (which cancels the transfer) once the deadline has passed.
    fn before_deadline(&self) -> bool {
        let in_time = Instant::now() < self.deadline;
        if !in_time {
            self.facts.borrow_mut().timed_out = true;
        }
        in_time
    }

    /// SSH: the host key must be in known_hosts (unless verification is
    /// off). TLS: see the `tls` module. The host libgit2 names is ignored:
    /// for ssh it is the relay's; the URL's is used instead.
    fn check_identity(&self, cert: &Cert<'_>) -> Result<CertificateCheckStatus, git2::Error> {
        if let Some(hostkey) = cert.as_hostkey() {
            let Some(check) = &self.net.host_keys else {
                return Ok(CertificateCheckStatus::CertificateOk);
            };
            let verdict = match hostkey.hostkey() {
                Some(blob) => check.verify(blob, &key_type(blob)),
                None => Err("the server's host key could not be read".to_string()),
            };
            return match verdict {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(why) => {
                    let error = git2::Error::from_str(&why);
                    self.facts.borrow_mut().identity_rejected = Some(why);
                    Err(error)
                }
            };
        }
        if let (Some(x509), Some(relay)) = (cert.as_x509(), &self.relay) {
            let target = Target {
                host: &self.net.remote.host,
                port: self.net.remote.port,
                proxy_port: relay.port(),
                deadline: self.deadline,
            };
            if let Err(why) = self.net.tls.verify(x509.data(), &target) {
                // Cut first, then let libgit2 go on: rejecting here would
                // take libgit2's buggy error path (see the `tls` module).
                relay.cut();
                self.facts.borrow_mut().identity_rejected = Some(why);
            }
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        Ok(CertificateCheckStatus::CertificatePassthrough)
    }

    fn error(&self, err: &git2::Error) -> GitError {
        let mut facts = std::mem::take(&mut *self.facts.borrow_mut());
        if let Some(relay) = &self.relay {
            facts.timed_out |= relay.timed_out();
            if facts.upstream_error.is_none() {
                facts.upstream_error = relay.upstream_error();
            }
        }
        net_error(
            err,
            &facts,
            self.net.url,
            self.net.timeout,
            self.local_path,
            self.net.redactor,
        )
    }
}

/// `%XX` escapes decoded, as in a `file://` URL's path; `None` when an
/// escape is malformed or the result is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
