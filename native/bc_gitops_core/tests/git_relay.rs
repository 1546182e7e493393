//! The deadline relay leaves no thread behind: once `sync` has returned,
//! whether it timed out or succeeded, no relay thread runs. One test in its
//! own binary, because the thread count is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bc_gitops_core::git::{live_relay_threads, sync, GitError, SyncOptions};
use support::{git_daemon, within, Silent, Upstream};

const HANG: Duration = Duration::from_secs(60);

#[test]
fn no_relay_thread_outlives_a_sync() {
    let up = Upstream::new();
    assert_eq!(live_relay_threads(), 0);

    // A sync that times out against a server that never answers; its relay
    // threads are seen running while it waits.
    let silent = Silent::start();
    let mut opts = SyncOptions::new(
        format!("git://127.0.0.1:{}/x.git", silent.port),
        up.dir.path().join("timeout"),
    );
    opts.timeout = Duration::from_secs(5);
    let running = std::thread::spawn(move || sync(&opts));
    // Watchdog, acceptor, and the connection's two pumping threads.
    let guard = std::time::Instant::now() + HANG;
    while live_relay_threads() < 4 || silent.accepted() == 0 {
        assert!(std::time::Instant::now() < guard, "hung");
        std::thread::sleep(Duration::from_millis(5));
    }
    let result = running.join().unwrap();
    assert!(
        matches!(result, Err(GitError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(live_relay_threads(), 0, "after a timed-out sync");

    // A sync that succeeds.
    let daemon = git_daemon(up.dir.path());
    let mut opts = SyncOptions::new(
        format!("git://localhost:{}/upstream.git", daemon.port),
        up.dir.path().join("ok"),
    );
    opts.timeout = Duration::from_secs(20);
    let out = within(HANG, move || sync(&opts)).unwrap();
    assert_eq!(out.commit, up.head());
    assert_eq!(live_relay_threads(), 0, "after a successful sync");
}
