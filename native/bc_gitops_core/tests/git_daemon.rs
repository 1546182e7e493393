//! Git sync over `git://` against a real `git daemon`, and the network faults
//! that do not depend on the protocol: a closed port, and servers that accept
//! the connection and never answer (git, http, https, ssh) must time out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bc_gitops_core::git::{sync, GitError, SyncOptions};
use support::{free_port, git_daemon, read, status, Silent, Upstream};

#[test]
fn git_daemon_clone_update_and_force_push() {
    let up = Upstream::new();
    let daemon = git_daemon(up.dir.path());
    let dest = up.dir.path().join("checkout");
    let mut opts = SyncOptions::new(
        format!("git://127.0.0.1:{}/upstream.git", daemon.port),
        &dest,
    );
    opts.timeout = Duration::from_secs(20);

    let first = sync(&opts).unwrap();
    assert_eq!(
        (first.commit.as_str(), first.changed),
        (up.head().as_str(), true)
    );
    let second = up.commit(&[("a.txt", b"a\n")], "a");
    assert_eq!(sync(&opts).unwrap().commit, second);
    let rewritten = up.rewrite_last(&[("a.txt", b"rewritten\n")]);
    let out = sync(&opts).unwrap();
    assert_eq!(
        (out.commit.as_str(), out.changed),
        (rewritten.as_str(), true)
    );
    assert_eq!(read(&dest, "a.txt"), "rewritten\n");
    assert_eq!(status(&dest), "");

    // A repository the daemon does not serve.
    opts.url = format!("git://127.0.0.1:{}/missing.git", daemon.port);
    opts.local_path = up.dir.path().join("other");
    assert!(matches!(sync(&opts), Err(GitError::Unreachable { .. })));
}

#[test]
fn closed_port_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    for url in [
        format!("git://127.0.0.1:{port}/x.git"),
        format!("http://127.0.0.1:{port}/x.git"),
        format!("ssh://git@127.0.0.1:{port}/x.git"),
    ] {
        let mut opts = SyncOptions::new(&url, dir.path().join("c"));
        opts.timeout = Duration::from_secs(10);
        let started = Instant::now();
        match sync(&opts) {
            Err(GitError::Unreachable { message, .. }) => {
                assert!(message.contains("refused"), "{url}: {message}");
            }
            other => panic!("{url}: expected Unreachable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
        assert!(!dir.path().join("c").exists());
    }
}

#[test]
fn silent_servers_time_out() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let port = silent.port;
    let urls = [
        format!("git://127.0.0.1:{port}/x.git"),
        format!("http://127.0.0.1:{port}/x.git"),
        format!("https://127.0.0.1:{port}/x.git"),
        format!("ssh://git@127.0.0.1:{port}/x.git"),
        format!("[git@127.0.0.1:{port}]:x.git"),
    ];
    std::thread::scope(|s| {
        for (i, url) in urls.iter().enumerate() {
            let dest = dir.path().join(format!("c{i}"));
            s.spawn(move || {
                let mut opts = SyncOptions::new(url, &dest);
                opts.timeout = Duration::from_millis(1500);
                let started = Instant::now();
                let result = sync(&opts);
                let took = started.elapsed();
                assert!(
                    matches!(result, Err(GitError::Timeout { .. })),
                    "{url}: {result:?}"
                );
                assert!(
                    took >= Duration::from_millis(1400),
                    "{url}: gave up early, {took:?}"
                );
                assert!(
                    took < Duration::from_secs(5),
                    "{url}: not cancelled, {took:?}"
                );
                assert!(!dest.exists());
            });
        }
    });
}
