//! The local side of a sync: what is at the target path, whether a clone is
//! ours and healthy, and forcing its worktree to a commit.

use std::fs;
use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// The git config key that marks a checkout as made (and owned) by us.
const MARKER: &str = "bcgitops.managed";

/// What was found at the target path.
pub(crate) enum Slot {
    /// Nothing there: clone.
    Missing,
    /// An empty directory: clone into it.
    Empty,
    /// A checkout we own (marked, or adopted: same origin URL).
    Ours(Repository),
    /// Our checkout, but so damaged that it does not open.
    Broken(String),
    /// Something else, which we must not touch.
    Foreign(String),
}

/// Looks at `path` without changing anything.
pub(crate) fn inspect(path: &Path, url: &str) -> Slot {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Slot::Missing,
        Err(e) => return Slot::Foreign(format!("cannot be read: {e}")),
    };
    if !meta.is_dir() {
        return Slot::Foreign("it is a file, not a directory".into());
    }
    let mut entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return Slot::Foreign(format!("cannot be listed: {e}")),
    };
    if entries.next().is_none() {
        return Slot::Empty;
    }
    let git_dir = path.join(".git");
    if !git_dir.is_dir() {
        return Slot::Foreign("it is a non-empty directory without a git repository; delete it or choose another path".into());
    }
    match Repository::open(path) {
        Ok(repo) if repo.workdir().is_some_and(|w| same_dir(w, path)) => {
            if is_marked(&repo) {
                return Slot::Ours(repo);
            }
            let origin = repo
                .find_remote("origin")
                .ok()
                .and_then(|r| r.url().ok().map(str::to_string));
            if origin.as_deref() == Some(url) && mark(&repo).is_ok() {
                return Slot::Ours(repo);
            }
            Slot::Foreign(
                "it is a git repository not made by bc_gitops, whose origin is another URL".into(),
            )
        }
        Ok(_) => Slot::Foreign("it is inside another git repository".into()),
        // The repository does not open: ours (and healable) only if its
        // config still carries our marker.
        Err(e) => {
            match git2::Config::open(&git_dir.join("config")).and_then(|c| c.get_bool(MARKER)) {
                Ok(true) => Slot::Broken(format!("the local clone does not open: {}", e.message())),
                _ => Slot::Foreign(format!(
                    "it holds a damaged git repository not made by bc_gitops: {}",
                    e.message()
                )),
            }
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Only the repository's own config counts: a global setting must not make
/// every repository ours.
fn is_marked(repo: &Repository) -> bool {
    repo.config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .and_then(|c| c.get_bool(MARKER))
        .unwrap_or(false)
}

/// Marks `repo` as ours.
pub(crate) fn mark(repo: &Repository) -> Result<(), git2::Error> {
    repo.config()?
        .open_level(git2::ConfigLevel::Local)?
        .set_bool(MARKER, true)
}

/// A fresh, marked repository at `path`, with `origin` recorded (redacted:
/// no token is written to disk) for people who look at it.
pub(crate) fn init(path: &Path, display_url: &str) -> Result<Repository, git2::Error> {
    let repo = Repository::init(path)?;
    mark(&repo)?;
    repo.remote("origin", display_url)?;
    Ok(repo)
}

/// Removes lock files a crashed git operation left behind. Safe because the
/// checkout is ours alone and calls for one path are serialized.
pub(crate) fn remove_stale_locks(git_dir: &Path) {
    for name in [
        "index.lock",
        "HEAD.lock",
        "config.lock",
        "packed-refs.lock",
        "shallow.lock",
        "ORIG_HEAD.lock",
    ] {
        let _ = fs::remove_file(git_dir.join(name));
    }
    remove_locks_under(&git_dir.join("refs"), 0);
}

fn remove_locks_under(dir: &Path, depth: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && depth < 16 {
            remove_locks_under(&path, depth + 1);
        } else if path.extension().is_some_and(|e| e == "lock") {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The commit HEAD points at, read from the references only (no object
/// needed), if any.
pub(crate) fn head_commit(repo: &Repository) -> Option<Oid> {
    repo.head().ok().and_then(|h| h.target())
}

/// The commit id in `<path>/.git/HEAD` when HEAD is detached, for a clone
/// too damaged to open.
pub(crate) fn head_commit_on_disk(path: &Path) -> Option<Oid> {
    let text = fs::read_to_string(path.join(".git").join("HEAD")).ok()?;
    Oid::from_str(text.trim()).ok()
}

/// Checks that the index, HEAD's commit and every object of its tree can be
/// read, so that a damaged clone is found (and healed) before it is trusted.
/// Unborn HEAD (fresh repository) passes.
pub(crate) fn check_health(repo: &Repository) -> Result<(), git2::Error> {
    let mut index = repo.index()?;
    index.read(true)?;
    let Some(head) = head_commit(repo) else {
        return Ok(());
    };
    let commit = repo.find_commit(head)?;
    let tree = commit.tree()?;
    let odb = repo.odb()?;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        let readable = match entry.kind() {
            Some(ObjectType::Tree) => repo.find_tree(entry.id()).map(|_| ()),
            Some(ObjectType::Blob) => odb.read_header(entry.id()).map(|_| ()),
            // Submodule commits live in another repository.
            _ => Ok(()),
        };
        match readable {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                TreeWalkResult::Abort
            }
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads every object of the local object database in full: the deeper
/// check, run only when a fetch failed for a reason that is not the network,
/// to tell a local object the fetch tripped over (which heals) from a bad
/// transfer (which does not).
pub(crate) fn check_objects(repo: &Repository) -> Result<(), git2::Error> {
    let odb = repo.odb()?;
    let mut failure = None;
    let walked = odb.foreach(|oid| match odb.read(*oid) {
        Ok(_) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    });
    match failure {
        Some(e) => Err(e),
        // `foreach` reports the stop we asked for as an error: only a
        // failure of the listing itself counts.
        None => walked,
    }
}

/// Makes the worktree, the index and HEAD exactly `commit`: modified files
/// are overwritten, untracked and ignored ones removed; HEAD is detached.
pub(crate) fn force_checkout(repo: &Repository, commit: Oid) -> Result<(), git2::Error> {
    let object = repo.find_commit(commit)?.into_object();
    let mut checkout = CheckoutBuilder::new();
    checkout.force().remove_untracked(true).remove_ignored(true);
    repo.checkout_tree(&object, Some(&mut checkout))?;
    repo.set_head_detached(commit)
}
