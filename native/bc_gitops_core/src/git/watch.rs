//! An inotify watch on a checkout, so that a sync of an untouched checkout
//! answers in O(1) instead of statting every path of the `snapshot` record.
//!
//! The `snapshot` module arms it: every directory of the worktree and of
//! `.git/objects`, and `.git` itself, gets a watch *before* its stat goes
//! into the record (or is checked against it), so a change made after a
//! stat was taken is always an event. While the queue holds no event that
//! counts, the checkout is still as the record saw it.
//!
//! What counts: any write, attribute change, creation, removal or rename in
//! a watched directory, and in `.git` itself one of `HEAD`, `index`,
//! `config` or `objects`; the rest of `.git` (`FETCH_HEAD`, refs, logs,
//! locks, the record itself) is what a fetch writes, and decides nothing
//! about what the checkout holds. Reads are not watched (the parse opens
//! every spec). A lost event (the queue overflowed), a watch the kernel
//! dropped, or a checkout whose root or `.git` is another directory than
//! the one watched, counts as a change: the record's stat check decides.
//!
//! Resources: one inotify instance per watched checkout (the kernel allows
//! each user 128 by default, shared with all their programs) and one watch
//! per directory. Only syncs that ask for it ([`super::SyncOptions::watch`])
//! arm one, and a process keeps at most [`MAX_ARMED`] (the least recently
//! used goes). When the kernel refuses (a limit reached), or on a system
//! without inotify, nothing is armed and the stat check runs as before.
//! No thread: the queue is read when a sync asks.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use git2::Oid;

/// Watched checkouts per process.
pub(crate) const MAX_ARMED: usize = 8;

/// What the watch of a checkout says.
pub(crate) enum Seen {
    /// Nothing that counts happened since the record of this commit.
    Untouched(Oid),
    /// Something may have changed; the watch is gone.
    Touched,
    /// No watch is armed.
    NotWatched,
}

/// A checkout's identity: its root and its git directory, as `(dev, ino)`.
type Identity = [(u64, u64); 2];

struct Armed {
    git_dir: PathBuf,
    identity: Identity,
    watcher: Watcher,
    commit: Oid,
}

static ARMED: Mutex<Vec<Armed>> = Mutex::new(Vec::new());

fn armed() -> std::sync::MutexGuard<'static, Vec<Armed>> {
    ARMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of a checkout: its git directory however it was named.
fn key(git_dir: &Path) -> PathBuf {
    fs::canonicalize(git_dir).unwrap_or_else(|_| git_dir.to_path_buf())
}

#[cfg(unix)]
fn identity(workdir: &Path, git_dir: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    // A symlinked root or `.git` could be pointed elsewhere without an
    // event in the directories watched: not watched.
    let id = |path: &Path| {
        let meta = fs::symlink_metadata(path).ok()?;
        meta.is_dir().then(|| (meta.dev(), meta.ino()))
    };
    Some([id(workdir)?, id(git_dir)?])
}

#[cfg(not(unix))]
fn identity(_workdir: &Path, _git_dir: &Path) -> Option<Identity> {
    None
}

/// Keeps `watcher` as the watch of the checkout at `workdir`, recorded at
/// `commit`.
pub(crate) fn arm(workdir: &Path, git_dir: &Path, watcher: Watcher, commit: Oid) {
    let Some(identity) = identity(workdir, git_dir) else {
        return;
    };
    let git_dir = key(git_dir);
    let mut armed = armed();
    armed.retain(|a| a.git_dir != git_dir);
    if armed.len() >= MAX_ARMED {
        armed.remove(0);
    }
    armed.push(Armed {
        git_dir,
        identity,
        watcher,
        commit,
    });
}

/// Drops the watch of the checkout whose git directory is `git_dir`.
pub(crate) fn disarm(git_dir: &Path) {
    let git_dir = key(git_dir);
    armed().retain(|a| a.git_dir != git_dir);
}

/// Reads the watch of the checkout at `workdir`; a touched watch is
/// dropped.
pub(crate) fn seen(workdir: &Path, git_dir: &Path) -> Seen {
    let key = key(git_dir);
    let mut armed = armed();
    let Some(at) = armed.iter().position(|a| a.git_dir == key) else {
        return Seen::NotWatched;
    };
    let mut entry = armed.remove(at);
    if entry.watcher.touched() || identity(workdir, git_dir) != Some(entry.identity) {
        return Seen::Touched;
    }
    let commit = entry.commit;
    // The most recently used goes last: the first is dropped for a new one.
    armed.push(entry);
    Seen::Untouched(commit)
}

/// Whether a watch is armed for the checkout whose git directory is
/// `git_dir`.
pub(crate) fn is_armed(git_dir: &Path) -> bool {
    let git_dir = key(git_dir);
    armed().iter().any(|a| a.git_dir == git_dir)
}

#[cfg(target_os = "linux")]
pub(crate) use linux::Watcher;

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsStr;
    use std::io::ErrorKind;
    use std::path::Path;

    use inotify::{Event, Inotify, WatchDescriptor, WatchMask};

    /// The names of `.git` whose change is a change of the checkout.
    const GIT_DIR_NAMES: [&str; 4] = ["HEAD", "index", "config", "objects"];

    /// Every kind of change, and no read.
    fn changes() -> WatchMask {
        WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MODIFY
            | WatchMask::MOVE_SELF
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::ONLYDIR
    }

    /// One inotify instance watching the directories of one checkout.
    pub(crate) struct Watcher {
        inotify: Inotify,
        git_dir: Option<WatchDescriptor>,
    }

    impl Watcher {
        /// A new instance; `None` when the kernel refuses one.
        pub(crate) fn new() -> Option<Watcher> {
            Some(Watcher {
                inotify: Inotify::init().ok()?,
                git_dir: None,
            })
        }

        /// Watches a directory whose every change counts. A path found as
        /// a directory in a walk is not followed if it has become a link
        /// since; the root is (and must then be a directory itself).
        pub(crate) fn watch_dir(&mut self, path: &Path, follow: bool) -> bool {
            let mask = if follow {
                changes()
            } else {
                changes() | WatchMask::DONT_FOLLOW
            };
            self.inotify.watches().add(path, mask).is_ok()
        }

        /// Watches `.git`, where only some names count.
        pub(crate) fn watch_git_dir(&mut self, path: &Path) -> bool {
            match self.inotify.watches().add(path, changes()) {
                Ok(wd) => {
                    self.git_dir = Some(wd);
                    true
                }
                Err(_) => false,
            }
        }

        /// Whether any event queued since the watch was set counts as a
        /// change; reads the whole queue.
        pub(crate) fn touched(&mut self) -> bool {
            let mut buffer = [0u8; 4096];
            loop {
                match self.inotify.read_events(&mut buffer) {
                    Ok(events) => {
                        let mut read = false;
                        for event in events {
                            read = true;
                            if self.counts(&event) {
                                return true;
                            }
                        }
                        if !read {
                            return false;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        }

        /// An overflow has no watch descriptor of ours, so it counts.
        fn counts(&self, event: &Event<&OsStr>) -> bool {
            if self.git_dir.as_ref() != Some(&event.wd) {
                return true;
            }
            event
                .name
                .is_none_or(|name| GIT_DIR_NAMES.iter().any(|n| OsStr::new(n) == name))
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) use elsewhere::Watcher;

/// No inotify: nothing is ever watched.
#[cfg(not(target_os = "linux"))]
mod elsewhere {
    use std::path::Path;

    enum Never {}

    pub(crate) struct Watcher(Never);

    impl Watcher {
        pub(crate) fn new() -> Option<Watcher> {
            None
        }

        pub(crate) fn watch_dir(&mut self, _path: &Path, _follow: bool) -> bool {
            match self.0 {}
        }

        pub(crate) fn watch_git_dir(&mut self, _path: &Path) -> bool {
            match self.0 {}
        }

        pub(crate) fn touched(&mut self) -> bool {
            match self.0 {}
        }
    }
}
