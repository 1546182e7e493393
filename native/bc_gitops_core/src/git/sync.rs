//! Orchestration of one sync: serialize per path, look at what is there,
//! update in place when the clone is healthy, otherwise clone (or re-clone)
//! beside it and swap it in only once complete.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use git2::{Reference, Repository};

use super::error::{corrupt_error, io_error, local_error, GitError};
use super::libgit2_opts;
use super::net::{Fetched, Network};
use super::redact::{redact_url, Redactor};
use super::repo::{self, Slot};
use super::snapshot;
use super::{GitRef, SyncOptions, SyncOutcome, Verification};
use crate::verify::{self, Unverified, VerifyKeys};

pub(crate) fn run(opts: &SyncOptions) -> Result<SyncOutcome, GitError> {
    // First, and before the path lock: holds libgit2's settings still for
    // the whole sync (a CA file added by another sync waits for the end).
    let settings = libgit2_opts::enter(opts.auth.ca_file.as_deref())?;
    validate_ref(&opts.git_ref)?;
    let target = std::path::absolute(&opts.local_path)
        .map_err(|e| io_error(&e, &opts.local_path, "resolving the checkout path"))?;
    let _lock = PathLock::acquire(&target);
    let auth = &opts.auth;
    let secrets = [&auth.token, &auth.username, &auth.ssh_passphrase];
    let redactor = Redactor::new(&opts.url, secrets.into_iter().flatten().map(String::as_str));
    let net = Network::new(
        &opts.url,
        auth,
        opts.timeout,
        settings.timeouts(),
        &redactor,
    )?;
    let job = Job {
        opts,
        target: &target,
        redactor: &redactor,
        net: &net,
    };
    job.recover_interrupted_swap()?;
    let git_dir = target.join(".git");
    let (fetched, before, healed) = match repo::inspect(&target, &opts.url) {
        Slot::Missing | Slot::Empty => {
            let fetched = job.clone_and_install()?;
            snapshot::record(&target, &git_dir, fetched.commit, opts.watch);
            (fetched, None, None)
        }
        Slot::Foreign(reason) => {
            return Err(GitError::NotARepository {
                path: target.clone(),
                reason,
            })
        }
        Slot::Broken(reason) => {
            let before = repo::head_commit_on_disk(&target);
            let (fetched, healed) = job.heal(reason)?;
            (fetched, before, Some(healed))
        }
        Slot::Ours(repository) => {
            let before = repo::head_commit(&repository);
            match job.update(&repository) {
                Ok(Updated::Untouched(fetched)) => (fetched, before, None),
                Ok(Updated::CheckedOut(fetched)) => {
                    snapshot::record(&target, &git_dir, fetched.commit, opts.watch);
                    (fetched, before, None)
                }
                Err(e) if e.is_corrupt() => {
                    drop(repository);
                    let (fetched, healed) = job.heal(e.to_string())?;
                    (fetched, before, Some(healed))
                }
                Err(e) => return Err(e),
            }
        }
    };
    let verified = opts
        .verify
        .as_ref()
        .map(|keys| check_signature(&target, fetched, keys));
    Ok(SyncOutcome {
        commit: fetched.commit.to_string(),
        changed: before != Some(fetched.commit),
        healed,
        verified,
    })
}

/// The signature check of what is checked out now (the checkout stays,
/// for inspection, whatever the verdict).
fn check_signature(target: &Path, fetched: Fetched, keys: &VerifyKeys) -> Verification {
    let started = Instant::now();
    let result = Repository::open(target)
        .map_err(|e| Unverified::BadSignature(format!("cannot open the checkout: {}", e.message())))
        .and_then(|repository| {
            verify::verify(
                &repository,
                fetched.commit,
                fetched.tag,
                keys,
                SystemTime::now(),
            )
        });
    Verification {
        result,
        duration: started.elapsed(),
    }
}

/// What [`Job::update`] did.
enum Updated {
    /// The checkout was exactly this commit already, as recorded by the last
    /// sync (see the `snapshot` module): nothing was checked or written.
    Untouched(Fetched),
    /// The tree was checked and this commit force-checked out.
    CheckedOut(Fetched),
}

/// Refuses names that would not be a plain ref (and so could smuggle refspec
/// syntax such as `a:b` or `*`).
fn validate_ref(git_ref: &GitRef) -> Result<(), GitError> {
    let valid = match git_ref {
        GitRef::Branch(name) | GitRef::Named(name) => {
            Reference::is_valid_name(&format!("refs/heads/{name}"))
        }
        GitRef::Tag(name) => Reference::is_valid_name(&format!("refs/tags/{name}")),
        GitRef::Commit(id) => id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()),
    };
    let invalid = !valid
        || matches!(git_ref, GitRef::Branch(n) | GitRef::Tag(n) | GitRef::Named(n) if n.contains('*'));
    if invalid {
        return Err(GitError::InvalidInput(format!("invalid ref: {git_ref}")));
    }
    Ok(())
}

/// One sync of one path.
struct Job<'a> {
    opts: &'a SyncOptions,
    target: &'a Path,
    redactor: &'a Redactor,
    net: &'a Network<'a>,
}

impl Job<'_> {
    /// Fetches and force-checks-out the ref in the existing clone; when the
    /// ref has not moved and the checkout is as the last sync left it, only
    /// the ref listing is done.
    fn update(&self, repository: &Repository) -> Result<Updated, GitError> {
        let local = |e: git2::Error| local_error(&e, self.target, self.redactor);
        let corrupt = |e: git2::Error| corrupt_error(&e, self.target, self.redactor);
        let git_dir = repository.path();
        repo::remove_stale_locks(git_dir);
        // Untouched since a sync that checked it: the objects are the ones
        // that passed that check, so it need not be read again.
        let recorded = snapshot::unchanged(self.target, git_dir, self.opts.watch);
        if recorded.is_none() {
            snapshot::discard(git_dir);
            repo::check_health(repository).map_err(corrupt)?;
        }
        let previous = repo::head_commit(repository);
        let fetched = match self
            .net
            .fetch_target(repository, &self.opts.git_ref, self.target)
        {
            Ok(fetched) => fetched,
            // A fetch that failed on something other than the network may
            // have tripped over a damaged local object the health check does
            // not read (history, other refs): only reading it again locally
            // can tell. The fetch's own error never counts as corruption.
            Err(e @ (GitError::Other(_) | GitError::Io { .. })) => {
                repo::check_objects(repository).map_err(corrupt)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let commit = fetched.commit;
        if recorded == Some(commit) && previous == Some(commit) {
            return Ok(Updated::Untouched(fetched));
        }
        snapshot::discard(git_dir);
        if let Err(e) = repo::force_checkout(repository, commit) {
            // Put the previous commit back rather than leave a half-written
            // worktree (a full disk fails mid-way); best effort.
            if let Some(previous) = previous {
                let _ = repo::force_checkout(repository, previous);
            }
            return Err(local(e));
        }
        Ok(Updated::CheckedOut(fetched))
    }

    /// Re-clones beside the damaged checkout and swaps it in; returns what
    /// was fetched and why it was re-cloned (redacted).
    fn heal(&self, reason: String) -> Result<(Fetched, String), GitError> {
        let reason = self.redactor.redact(&reason);
        let fetched = self.clone_and_install()?;
        snapshot::record(
            self.target,
            &self.target.join(".git"),
            fetched.commit,
            self.opts.watch,
        );
        Ok((fetched, reason))
    }

    /// Clones into a sibling temporary directory, then puts it at the target.
    fn clone_and_install(&self) -> Result<Fetched, GitError> {
        let staging = Staging::create(self.target, "new")?;
        let fetched = self.clone_into(staging.path())?;
        install(staging, self.target)?;
        Ok(fetched)
    }

    fn clone_into(&self, dir: &Path) -> Result<Fetched, GitError> {
        let local = |e: git2::Error| local_error(&e, self.target, self.redactor);
        let repository = repo::init(dir, &redact_url(&self.opts.url)).map_err(local)?;
        let fetched = self
            .net
            .fetch_target(&repository, &self.opts.git_ref, self.target)?;
        repo::force_checkout(&repository, fetched.commit).map_err(local)?;
        Ok(fetched)
    }

    /// A crash between the two renames of a swap leaves the target missing
    /// and the previous checkout in a sibling: put it back. Then remove what
    /// dead processes left.
    fn recover_interrupted_swap(&self) -> Result<(), GitError> {
        let leftovers = Staging::leftovers(self.target);
        if !self.target.exists() {
            if let Some(old) = leftovers.iter().find(|p| Staging::kind(p) == Some("old")) {
                fs::rename(old, self.target)
                    .map_err(|e| io_error(&e, self.target, "restoring the previous checkout"))?;
            }
        }
        for path in leftovers.iter().filter(|p| p.exists()) {
            let _ = fs::remove_dir_all(path);
        }
        Ok(())
    }
}

/// Puts the complete clone at `target`. A missing target or an empty
/// directory is replaced by one rename; an old checkout is first moved aside,
/// then deleted only once the new one is in place (and moved back if that
/// failed).
fn install(staging: Staging, target: &Path) -> Result<(), GitError> {
    if fs::rename(staging.path(), target).is_ok() {
        staging.keep();
        return Ok(());
    }
    let old = Staging::reserve(target, "old");
    fs::rename(target, old.path())
        .map_err(|e| io_error(&e, target, "moving the old checkout aside"))?;
    if let Err(e) = fs::rename(staging.path(), target) {
        let _ = fs::rename(old.path(), target);
        old.keep();
        return Err(io_error(&e, target, "moving the new checkout in place"));
    }
    staging.keep();
    drop(old);
    Ok(())
}

/// A sibling directory `.<name>.bc-gitops-<kind>-<pid>-<n>` of the target,
/// removed on drop unless kept; same file system, so renames are atomic.
struct Staging {
    path: PathBuf,
    keep: bool,
}

const STAGING_TAG: &str = ".bc-gitops-";

impl Staging {
    /// A fresh name, not created.
    fn reserve(target: &Path, kind: &str) -> Staging {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = target.parent().unwrap_or(Path::new("/"));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(
            ".{name}{STAGING_TAG}{kind}-{}-{n}",
            std::process::id()
        ));
        Staging { path, keep: false }
    }

    /// A fresh, created, empty directory (and its parent).
    fn create(target: &Path, kind: &str) -> Result<Staging, GitError> {
        let staging = Staging::reserve(target, kind);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| io_error(&e, parent, "creating the parent directory"))?;
        }
        fs::create_dir(&staging.path)
            .map_err(|e| io_error(&e, &staging.path, "creating a staging directory"))?;
        Ok(staging)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn keep(mut self) {
        self.keep = true;
    }

    /// Staging directories of `target` left by processes that are gone.
    fn leftovers(target: &Path) -> Vec<PathBuf> {
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Vec::new();
        };
        let prefix = format!(".{}{STAGING_TAG}", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(parent) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let rest = file_name.strip_prefix(&prefix)?;
                let pid: u32 = rest.split('-').nth(1)?.parse().ok()?;
                // Ours are stale too: the path lock is held.
                let alive =
                    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
                (!alive).then(|| entry.path())
            })
            .collect()
    }

    /// `new` or `old`, from a staging path's name.
    fn kind(path: &Path) -> Option<&str> {
        let name = path.file_name()?.to_str()?;
        let rest = &name[name.find(STAGING_TAG)? + STAGING_TAG.len()..];
        rest.split('-').next()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep && self.path.exists() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Serializes syncs of one path within the process.
struct PathLock {
    path: PathBuf,
}

fn busy_paths() -> &'static (Mutex<HashSet<PathBuf>>, Condvar) {
    static BUSY: OnceLock<(Mutex<HashSet<PathBuf>>, Condvar)> = OnceLock::new();
    BUSY.get_or_init(|| (Mutex::new(HashSet::new()), Condvar::new()))
}

fn lock_busy() -> MutexGuard<'static, HashSet<PathBuf>> {
    busy_paths()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

impl PathLock {
    fn acquire(path: &Path) -> PathLock {
        let mut busy = lock_busy();
        while busy.contains(path) {
            busy = busy_paths()
                .1
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        busy.insert(path.to_path_buf());
        PathLock {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        lock_busy().remove(&self.path);
        busy_paths().1.notify_all();
    }
}
