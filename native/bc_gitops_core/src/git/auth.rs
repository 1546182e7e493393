//! The credentials offered to a remote: one candidate per libgit2 request, in
//! a fixed order, and a hard stop when they run out.
//!
//! libgit2 calls the credentials callback again each time the server refuses
//! what it got; a callback that always answers loops forever against a
//! server with the wrong key. Here every candidate is offered at most once,
//! the number of calls is capped, and running out gives a clear
//! "authentication failed" (recorded in `exhausted` for the error mapping).

use std::collections::VecDeque;
use std::env;
use std::path::PathBuf;

use git2::{Config, Cred, CredentialType};

use super::Auth;

/// Upper bound on callback calls for one connection, whatever happens.
const MAX_CALLS: u32 = 8;

/// An SSH identity to try.
enum SshSource {
    Agent,
    KeyFile(PathBuf),
}

/// The credential state of one connection.
pub(crate) struct Credentials<'a> {
    auth: &'a Auth,
    /// The remote URL as configured (credential helpers match on it).
    url: &'a str,
    config: Option<&'a Config>,
    ssh_queue: Option<VecDeque<SshSource>>,
    password_tried: bool,
    default_tried: bool,
    calls: u32,
    offered: Vec<String>,
    /// Set when the callback gave up, with why.
    pub exhausted: Option<String>,
}

impl<'a> Credentials<'a> {
    pub(crate) fn new(auth: &'a Auth, url: &'a str, config: Option<&'a Config>) -> Self {
        Credentials {
            auth,
            url,
            config,
            ssh_queue: None,
            password_tried: false,
            default_tried: false,
            calls: 0,
            offered: Vec::new(),
            exhausted: None,
        }
    }

    /// The next credential for a request allowing `allowed`, or an error once
    /// every candidate was offered.
    pub(crate) fn next(
        &mut self,
        url_user: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return self.give_up();
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&self.ssh_user(url_user));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = self.ssh_user(url_user);
            while let Some(source) = self.ssh_sources().pop_front() {
                match source {
                    SshSource::Agent => {
                        self.offered.push("ssh-agent".into());
                        if let Ok(cred) = Cred::ssh_key_from_agent(&user) {
                            return Ok(cred);
                        }
                    }
                    SshSource::KeyFile(key) => {
                        self.offered.push(format!("ssh key {}", key.display()));
                        let public = key.with_extension("pub");
                        let public = public.is_file().then_some(public);
                        let passphrase = self.auth.ssh_passphrase.as_deref();
                        return Cred::ssh_key(&user, public.as_deref(), &key, passphrase);
                    }
                }
            }
            return self.give_up();
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !self.password_tried {
            self.password_tried = true;
            if let Some(token) = &self.auth.token {
                self.offered.push("the configured token".into());
                let user = self.auth.username.as_deref().or(url_user).unwrap_or("git");
                return Cred::userpass_plaintext(user, token);
            }
            if let Some(config) = self.config {
                if let Ok(cred) = Cred::credential_helper(config, self.url, url_user) {
                    self.offered.push("git credential helper".into());
                    return Ok(cred);
                }
            }
        }
        if allowed.contains(CredentialType::DEFAULT) && !self.default_tried {
            self.default_tried = true;
            self.offered.push("default (negotiate) credentials".into());
            return Cred::default();
        }
        self.give_up()
    }

    fn ssh_user(&self, url_user: Option<&str>) -> String {
        url_user
            .or(self.auth.username.as_deref())
            .unwrap_or("git")
            .to_string()
    }

    /// The SSH candidates, built on first use: the configured key alone, or
    /// the agent and the default key files.
    fn ssh_sources(&mut self) -> &mut VecDeque<SshSource> {
        let auth = self.auth;
        self.ssh_queue.get_or_insert_with(|| {
            let mut queue = VecDeque::new();
            if let Some(key) = &auth.ssh_key {
                queue.push_back(SshSource::KeyFile(key.clone()));
                return queue;
            }
            if env::var_os("SSH_AUTH_SOCK").is_some() {
                queue.push_back(SshSource::Agent);
            }
            if let Some(home) = env::var_os("HOME") {
                for name in ["id_ed25519", "id_rsa"] {
                    let key = PathBuf::from(&home).join(".ssh").join(name);
                    if key.is_file() {
                        queue.push_back(SshSource::KeyFile(key));
                    }
                }
            }
            queue
        })
    }

    fn give_up(&mut self) -> Result<Cred, git2::Error> {
        let why = if self.offered.is_empty() {
            "no credentials to offer (set ssh_key, or username and token)".to_string()
        } else {
            format!("the server refused {}", self.offered.join(", then "))
        };
        self.exhausted = Some(why.clone());
        Err(git2::Error::from_str(&format!(
            "authentication failed: {why}"
        )))
    }
}
