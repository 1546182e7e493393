//! The inotify watch of a checkout (`SyncOptions::watch`): what it counts as
//! a change, what it does not, and its limits. Each case runs alone: the
//! watches are process-wide, and one case arms more than a process keeps.
//!
//! How a case tells who answered a sync: with the record
//! `.git/bc-gitops-snapshot` moved aside, a stat check fails and the sync
//! checks out again, which writes a new record; only the watch can answer
//! alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bc_gitops_core::git::{sync, watching, SyncOptions};
use support::{read, run, status, sync_until_recorded, Upstream};

fn alone() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn watched(url: &str, path: &Path) -> SyncOptions {
    let mut opts = SyncOptions::new(url, path);
    opts.timeout = Duration::from_secs(20);
    opts.watch = true;
    opts
}

fn record(dest: &Path) -> PathBuf {
    dest.join(".git/bc-gitops-snapshot")
}

/// Syncs with the record moved aside: true when the watch answered alone
/// (the record is then put back, still true).
fn answered_by_the_watch(opts: &SyncOptions) -> bool {
    let record = record(&opts.local_path);
    let aside = record.with_extension("aside");
    fs::rename(&record, &aside).unwrap();
    let out = sync(opts).unwrap();
    assert!(!out.changed && out.healed.is_none(), "{out:?}");
    let alone = !record.exists();
    if alone {
        fs::rename(&aside, &record).unwrap();
    } else {
        fs::remove_file(&aside).unwrap();
    }
    alone
}

/// What the fetch and bc_gitops write in `.git` (besides HEAD, index,
/// config and objects) is no change; so many events that the kernel drops
/// some are one.
#[test]
fn writes_elsewhere_in_git_do_not_count_but_lost_events_do() {
    let _alone = alone();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = watched(&up.file_url(), &dest);
    sync_until_recorded(&opts);
    assert!(watching(&dest));

    for name in [
        "FETCH_HEAD",
        "ORIG_HEAD",
        "refs/remotes/x",
        "logs/x",
        "HEAD.lock",
    ] {
        let path = dest.join(".git").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "x").unwrap();
        assert!(answered_by_the_watch(&opts), "{name}");
    }

    // Twice the kernel's queue of events, all in names that do not count
    // (two files in turn: the kernel merges an event with the same one
    // just before it).
    let queued: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut noise: Vec<fs::File> = ["FETCH_HEAD", "ORIG_HEAD"]
        .iter()
        .map(|name| {
            let path = dest.join(".git").join(name);
            fs::OpenOptions::new().append(true).open(path).unwrap()
        })
        .collect();
    for _ in 0..queued {
        for file in &mut noise {
            file.write_all(b"x").unwrap();
        }
    }
    drop(noise);
    assert!(!answered_by_the_watch(&opts));
    assert_eq!(read(&dest, "README.md"), "hello\n");
}

/// A change that the watched directories cannot see (the checkout's parent
/// renamed, and an edited copy put in its place) is still seen.
#[test]
fn a_checkout_swapped_for_an_edited_copy_is_seen() {
    let _alone = alone();
    let up = Upstream::new();
    let parent = up.dir.path().join("parent");
    let dest = parent.join("checkout");
    let opts = watched(&up.file_url(), &dest);
    sync_until_recorded(&opts);
    assert!(answered_by_the_watch(&opts));

    let moved = up.dir.path().join("moved");
    fs::rename(&parent, &moved).unwrap();
    // cp -a keeps every time stamp: only the inodes differ.
    run(Command::new("cp").args(["-a"]).arg(&moved).arg(&parent));
    fs::write(dest.join("README.md"), "HELLO\n").unwrap();

    let out = sync(&opts).unwrap();
    assert!(!out.changed, "{out:?}");
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert_eq!(status(&dest), "");
}

/// A process keeps eight watches: the checkout synced least recently loses
/// its own, and is checked path by path again, as without a watch.
#[test]
fn a_ninth_watched_checkout_drops_the_least_recent_watch() {
    let _alone = alone();
    let up = Upstream::new();
    let all: Vec<SyncOptions> = (0..9)
        .map(|i| watched(&up.file_url(), &up.dir.path().join(format!("c{i}"))))
        .collect();
    for opts in &all {
        sync_until_recorded(opts);
    }
    let watched: Vec<bool> = all.iter().map(|o| watching(&o.local_path)).collect();
    assert_eq!(watched, [[false].as_slice(), &[true; 8]].concat());

    let first = &all[0];
    fs::write(first.local_path.join("README.md"), "HELLO\n").unwrap();
    assert!(!sync(first).unwrap().changed);
    assert_eq!(read(&first.local_path, "README.md"), "hello\n");
    // Synced again, it is watched again, and c1 (now the least recent) is not.
    sync_until_recorded(first);
    assert!(watching(&first.local_path));
    assert!(!watching(&all[1].local_path));
}
