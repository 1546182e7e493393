//! Git sync over SSH against a real sshd (own config, host key and
//! authorized_keys in a temp dir): host key verification (unknown host
//! refused, known_hosts plain or hashed accepted, verification off), key
//! authentication (right key, passphrase-protected key, wrong key), and the
//! scp-like URL form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bc_gitops_core::git::{sync, Auth, GitError, SyncOptions};
use support::{isolate, run, ssh_key, sshd, status, within, Sshd, Upstream};

struct Setup {
    up: Upstream,
    keys: tempfile::TempDir,
    sshd: Sshd,
    key: PathBuf,
    protected: PathBuf,
    stranger: PathBuf,
}

fn setup() -> Setup {
    let up = Upstream::new();
    let keys = tempfile::tempdir().unwrap();
    let key = ssh_key(keys.path(), "client", "");
    let protected = ssh_key(keys.path(), "protected", "open sesame");
    let stranger = ssh_key(keys.path(), "stranger", "");
    let sshd = sshd(keys.path(), &[&key, &protected]);
    Setup {
        up,
        keys,
        sshd,
        key,
        protected,
        stranger,
    }
}

impl Setup {
    fn url(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.sshd.user,
            self.sshd.server.port,
            self.up.bare.display()
        )
    }

    fn known_hosts(&self) -> PathBuf {
        let path = self.keys.path().join("known_hosts");
        let line = format!(
            "[127.0.0.1]:{} {}\n",
            self.sshd.server.port, self.sshd.host_key
        );
        fs::write(
            &path,
            format!("# test\nother.example.org {}\n{line}", self.sshd.host_key),
        )
        .unwrap();
        path
    }

    fn options(&self, url: String, dest: &Path, auth: Auth) -> SyncOptions {
        let mut opts = SyncOptions::new(url, dest);
        opts.timeout = Duration::from_secs(20);
        opts.auth = auth;
        opts
    }
}

#[test]
fn host_key_verification() {
    isolate();
    let s = setup();
    let root = s.up.dir.path();

    // Unknown host: refused before authenticating.
    let empty = s.keys.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_known_hosts: Some(empty),
        ..Auth::default()
    };
    match sync(&s.options(s.url(), &root.join("unknown"), auth)) {
        Err(GitError::Certificate { message, .. }) => {
            assert!(message.contains("SHA256:"), "{message}")
        }
        other => panic!("expected Certificate, got {other:?}"),
    }
    assert!(!root.join("unknown").exists());

    // A different key for this host: refused as a mismatch.
    let wrong = s.keys.path().join("wrong_known_hosts");
    let other_key = fs::read_to_string(s.stranger.with_extension("pub")).unwrap();
    let other_key = other_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(
        &wrong,
        format!("[127.0.0.1]:{} {other_key}\n", s.sshd.server.port),
    )
    .unwrap();
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_known_hosts: Some(wrong),
        ..Auth::default()
    };
    match sync(&s.options(s.url(), &root.join("mismatch"), auth)) {
        Err(GitError::Certificate { message, .. }) => {
            assert!(message.contains("MISMATCH"), "{message}")
        }
        other => panic!("expected Certificate, got {other:?}"),
    }

    // Listed in known_hosts: accepted.
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_known_hosts: Some(s.known_hosts()),
        ..Auth::default()
    };
    let dest = root.join("known");
    let out = sync(&s.options(s.url(), &dest, auth.clone())).unwrap();
    assert_eq!(out.commit, s.up.head());
    let next = s.up.commit(&[("c.txt", b"c\n")], "c");
    assert_eq!(sync(&s.options(s.url(), &dest, auth)).unwrap().commit, next);
    assert_eq!(status(&dest), "");

    // Hashed known_hosts (ssh-keygen -H): accepted.
    let hashed = s.known_hosts();
    run(Command::new("ssh-keygen")
        .arg("-q")
        .arg("-H")
        .arg("-f")
        .arg(&hashed));
    assert!(fs::read_to_string(&hashed).unwrap().contains("|1|"));
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_known_hosts: Some(hashed),
        ..Auth::default()
    };
    assert_eq!(
        sync(&s.options(s.url(), &root.join("hashed"), auth))
            .unwrap()
            .commit,
        next
    );

    // Verification off: accepted without known_hosts.
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_verify_host: false,
        ..Auth::default()
    };
    assert_eq!(
        sync(&s.options(s.url(), &root.join("unverified"), auth))
            .unwrap()
            .commit,
        next
    );
}

#[test]
fn key_authentication() {
    isolate();
    let s = setup();
    let root = s.up.dir.path();
    let known = s.known_hosts();

    // A key the server does not know: an Auth error. Were the credentials
    // offered in a loop, the sync would end at its deadline, as a Timeout.
    let auth = Auth {
        ssh_key: Some(s.stranger.clone()),
        ssh_known_hosts: Some(known.clone()),
        ..Auth::default()
    };
    let opts = s.options(s.url(), &root.join("stranger"), auth);
    match within(Duration::from_secs(60), move || sync(&opts)) {
        Err(GitError::Auth { message, .. }) => assert!(message.contains("stranger"), "{message}"),
        other => panic!("expected Auth, got {other:?}"),
    }

    // Passphrase-protected key: works with the passphrase...
    let auth = Auth {
        ssh_key: Some(s.protected.clone()),
        ssh_passphrase: Some("open sesame".into()),
        ssh_known_hosts: Some(known.clone()),
        ..Auth::default()
    };
    assert_eq!(
        sync(&s.options(s.url(), &root.join("protected"), auth))
            .unwrap()
            .commit,
        s.up.head()
    );

    // ...and is an Auth error, passphrase not shown, with a wrong one.
    let auth = Auth {
        ssh_key: Some(s.protected.clone()),
        ssh_passphrase: Some("wrong phrase".into()),
        ssh_known_hosts: Some(known.clone()),
        ..Auth::default()
    };
    match sync(&s.options(s.url(), &root.join("bad-phrase"), auth)) {
        Err(e @ GitError::Auth { .. }) => assert!(!format!("{e} {e:?}").contains("wrong phrase")),
        other => panic!("expected Auth, got {other:?}"),
    }

    // scp-like form with a port: `[user@host:port]:path`.
    let scp = format!(
        "[{}@127.0.0.1:{}]:{}",
        s.sshd.user,
        s.sshd.server.port,
        s.up.bare.display()
    );
    let auth = Auth {
        ssh_key: Some(s.key.clone()),
        ssh_known_hosts: Some(known),
        ..Auth::default()
    };
    assert_eq!(
        sync(&s.options(scp, &root.join("scp"), auth))
            .unwrap()
            .commit,
        s.up.head()
    );
}
