//! SSH with nothing configured: the default known_hosts and key files under
//! `$HOME/.ssh`, and ssh-agent. One test in its own binary, because it sets
//! `HOME` and `SSH_AUTH_SOCK` for the process (nothing else runs meanwhile).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bc_gitops_core::git::{sync, GitError, SyncOptions};
use support::{require, run, ssh_key, sshd, Upstream};

/// `ssh-agent -D` on a socket in `dir`, killed on drop.
struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(socket: &Path) -> Agent {
    require("/usr/bin/ssh-agent", "openssh-client");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("cannot start ssh-agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "ssh-agent did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Agent { child }
}

fn home_with(dir: &Path, known_hosts: &str, key: Option<&Path>) {
    let ssh = dir.join(".ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::write(ssh.join("known_hosts"), known_hosts).unwrap();
    if let Some(key) = key {
        fs::copy(key, ssh.join("id_ed25519")).unwrap();
        fs::copy(key.with_extension("pub"), ssh.join("id_ed25519.pub")).unwrap();
    }
}

#[test]
fn default_keys_agent_and_known_hosts() {
    support::isolate();
    let up = Upstream::new();
    let keys = tempfile::tempdir().unwrap();
    let key = ssh_key(keys.path(), "client", "");
    let server = sshd(keys.path(), &[&key]);
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        server.user,
        server.server.port,
        up.bare.display()
    );
    let known = format!("[127.0.0.1]:{} {}\n", server.server.port, server.host_key);
    let options = |name: &str| {
        let mut opts = SyncOptions::new(&url, up.dir.path().join(name));
        opts.timeout = Duration::from_secs(20);
        opts
    };

    // ~/.ssh/id_ed25519 and ~/.ssh/known_hosts, no agent.
    let home = keys.path().join("home-with-key");
    home_with(&home, &known, Some(&key));
    std::env::set_var("HOME", &home);
    std::env::remove_var("SSH_AUTH_SOCK");
    assert_eq!(sync(&options("default-key")).unwrap().commit, up.head());

    // ssh-agent holding the key, no key file.
    let home = keys.path().join("home-with-agent");
    home_with(&home, &known, None);
    std::env::set_var("HOME", &home);
    let socket = keys.path().join("agent.sock");
    let _agent = agent(&socket);
    run(Command::new("ssh-add")
        .arg("-q")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket));
    std::env::set_var("SSH_AUTH_SOCK", &socket);
    assert_eq!(sync(&options("agent")).unwrap().commit, up.head());

    // Nothing to offer: a clear Auth error.
    std::env::remove_var("SSH_AUTH_SOCK");
    match sync(&options("nothing")) {
        Err(GitError::Auth { message, .. }) => {
            assert!(message.contains("no credentials"), "{message}")
        }
        other => panic!("expected Auth, got {other:?}"),
    }

    // The default known_hosts does not list the host: refused.
    fs::write(home.join(".ssh/known_hosts"), "").unwrap();
    let result = sync(&options("unknown-host"));
    assert!(
        matches!(result, Err(GitError::Certificate { .. })),
        "{result:?}"
    );
}
