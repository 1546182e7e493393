//! Git sync over `git://` against a real `git daemon`, and the network faults
//! that do not depend on the protocol: a closed port, and servers that accept
//! the connection and never answer (git, http, https, ssh) must time out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bc_gitops_core::git::{sync, GitError, SyncOptions};
use support::{closed_port, git_daemon, isolate, read, status, within, Proxy, Silent, Upstream};

/// How long a test waits before calling a sync hung: a guard, not a measure.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn git_daemon_clone_update_and_force_push() {
    isolate();
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
fn force_push_between_listing_and_fetch_is_followed() {
    // The sync lists the remote's refs on one connection and fetches on a
    // second; the branch is force-pushed in between.
    let up = Upstream::new();
    let daemon = git_daemon(up.dir.path());
    let dest = up.dir.path().join("checkout");
    let work = up.work.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let proxy = Proxy::start(daemon.port, move |n| {
        if n == 1 {
            tx.send(Upstream::rewrite_last_in(
                &work,
                &[("race.txt", b"after\n")],
            ))
            .unwrap();
        }
    });
    let mut opts = SyncOptions::new(
        format!("git://127.0.0.1:{}/upstream.git", daemon.port),
        &dest,
    );
    opts.timeout = Duration::from_secs(20);
    sync(&opts).unwrap();

    // Listed: `listed`; fetched: its rewrite.
    let listed = up.commit(&[("race.txt", b"before\n")], "listed");
    opts.url = format!("git://127.0.0.1:{}/upstream.git", proxy.port);
    let out = sync(&opts).unwrap();
    let rewritten = rx.try_recv().expect("the proxy saw no second connection");
    assert_ne!(listed, rewritten);
    assert_eq!(
        (out.commit.as_str(), out.changed, out.healed.as_deref()),
        (rewritten.as_str(), true, None),
        "a moved ref is not a damaged clone: no re-clone"
    );
    assert_eq!(read(&dest, "race.txt"), "after\n");
    assert_eq!(status(&dest), "");
}

#[test]
fn closed_port_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let port = closed.port;
    for url in [
        format!("git://127.0.0.1:{port}/x.git"),
        format!("http://127.0.0.1:{port}/x.git"),
        format!("ssh://git@127.0.0.1:{port}/x.git"),
    ] {
        let mut opts = SyncOptions::new(&url, dir.path().join("c"));
        opts.timeout = Duration::from_secs(30);
        match within(HANG, move || sync(&opts)) {
            Err(GitError::Unreachable { message, .. }) => {
                assert!(message.contains("refused"), "{url}: {message}");
            }
            other => panic!("{url}: expected Unreachable, got {other:?}"),
        }
        assert!(!dir.path().join("c").exists());
    }
}

#[test]
fn silent_servers_time_out() {
    isolate();
    let dir = tempfile::tempdir().unwrap();
    let urls: [fn(u16) -> String; 5] = [
        |port| format!("git://127.0.0.1:{port}/x.git"),
        |port| format!("http://127.0.0.1:{port}/x.git"),
        |port| format!("https://127.0.0.1:{port}/x.git"),
        |port| format!("ssh://git@127.0.0.1:{port}/x.git"),
        |port| format!("[git@127.0.0.1:{port}]:x.git"),
    ];
    std::thread::scope(|s| {
        for (i, url) in urls.iter().enumerate() {
            let dest = dir.path().join(format!("c{i}"));
            s.spawn(move || {
                let silent = Silent::start();
                let url = url(silent.port);
                let mut opts = SyncOptions::new(&url, &dest);
                opts.timeout = Duration::from_millis(1500);
                let result = within(HANG, move || sync(&opts));
                assert!(
                    matches!(result, Err(GitError::Timeout { .. })),
                    "{url}: {result:?}"
                );
                // The connection reached the server, and the cancellation
                // reached it too: the server sees it closed.
                assert!(silent.accepted() >= 1, "{url}: no connection");
                assert!(
                    silent.all_closed_within(HANG),
                    "{url}: the server's connection stayed open after the sync returned"
                );
                assert!(!dest.exists());
            });
        }
    });
}
