//! Git sync against local remotes (plain path and `file://`): the checkout
//! rules and every local fault (corruption, locks, foreign directories, a full
//! disk, interrupted swaps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use bc_gitops_core::git::{redact_url, sync, watching, Auth, GitError, GitRef, SyncOptions};
use support::{checkout_head, git, noise, read, status, sync_until_recorded, Tmpfs, Upstream};

fn options(url: &str, path: &Path) -> SyncOptions {
    let mut opts = SyncOptions::new(url, path);
    opts.timeout = Duration::from_secs(20);
    opts
}

#[test]
fn clones_then_follows_the_branch() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);

    let first = sync(&opts).unwrap();
    assert_eq!(first.commit, up.head());
    assert!(first.changed);
    assert_eq!(first.healed, None);
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert_eq!(checkout_head(&dest), up.head());

    let again = sync(&opts).unwrap();
    assert_eq!(
        (again.commit.as_str(), again.changed),
        (first.commit.as_str(), false)
    );

    let second = up.commit(&[("apps/a.config", b"{app, a}.\n")], "add a");
    let next = sync(&opts).unwrap();
    assert_eq!(
        (next.commit.as_str(), next.changed),
        (second.as_str(), true)
    );
    assert_eq!(read(&dest, "apps/a.config"), "{app, a}.\n");
    assert_eq!(status(&dest), "");
}

#[test]
fn plain_path_remote_works() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let out = sync(&options(up.bare.to_str().unwrap(), &dest)).unwrap();
    assert_eq!(out.commit, up.head());
}

#[test]
fn local_edits_and_stray_files_are_overwritten() {
    support::isolate();
    let up = Upstream::new();
    up.commit(&[(".gitignore", b"*.log\n")], "ignore logs");
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    sync(&opts).unwrap();

    fs::write(dest.join("README.md"), "edited locally\n").unwrap();
    fs::write(dest.join("stray.txt"), "untracked\n").unwrap();
    fs::create_dir_all(dest.join("junk/deep")).unwrap();
    fs::write(dest.join("junk/deep/x"), "untracked\n").unwrap();
    fs::write(dest.join("debug.log"), "ignored\n").unwrap();

    let out = sync(&opts).unwrap();
    assert!(!out.changed);
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert!(!dest.join("stray.txt").exists());
    assert!(!dest.join("junk/deep/x").exists());
    assert!(!dest.join("debug.log").exists());
    assert_eq!(status(&dest), "");
}

#[test]
fn an_untouched_checkout_is_trusted_and_any_change_is_still_undone() {
    untouched_is_trusted_and_changes_undone(false);
}

/// The same with the checkout watched: each change is made right after a
/// sync that the watch answered alone, and the next sync still undoes it.
#[test]
fn a_watched_checkout_is_trusted_and_any_change_is_still_undone() {
    untouched_is_trusted_and_changes_undone(true);
}

fn untouched_is_trusted_and_changes_undone(watch: bool) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    support::isolate();
    let up = Upstream::new();
    up.commit(
        &[(".gitignore", b"*.log\n"), ("apps/a/app.config", b"{a}.\n")],
        "more",
    );
    let dest = up.dir.path().join("checkout");
    let mut opts = options(&up.file_url(), &dest);
    opts.watch = watch;
    sync(&opts).unwrap();

    // Nothing touched: the next sync writes nothing.
    sync_until_recorded(&opts);
    assert_eq!(watching(&dest), watch);
    let ctime = |name: &str| fs::metadata(dest.join(name)).unwrap().ctime_nsec();
    let before = (ctime("README.md"), ctime(".git/index"));
    let out = sync(&opts).unwrap();
    assert!(!out.changed);
    assert_eq!(before, (ctime("README.md"), ctime(".git/index")));
    assert!(dest.join(".git/bc-gitops-snapshot").exists());
    // What the sync wrote in .git (FETCH_HEAD, refs) is no change.
    assert_eq!(watching(&dest), watch);

    type Change = fn(&Path);
    let changes: [(&str, Change); 8] = [
        ("same-size edit", |d| {
            fs::write(d.join("README.md"), "HELLO\n").unwrap()
        }),
        ("edit in a subdirectory", |d| {
            fs::write(d.join("apps/a/app.config"), "{b}.\n").unwrap()
        }),
        ("stray file in a subdirectory", |d| {
            fs::write(d.join("apps/a/stray"), "x").unwrap()
        }),
        ("new directory", |d| {
            fs::create_dir_all(d.join("apps/b/deep")).unwrap()
        }),
        ("ignored file", |d| {
            fs::write(d.join("apps/debug.log"), "x").unwrap()
        }),
        ("removed file", |d| {
            fs::remove_file(d.join("README.md")).unwrap()
        }),
        ("removed directory", |d| {
            fs::remove_dir_all(d.join("apps")).unwrap()
        }),
        ("mode change", |d| {
            let file = d.join("README.md");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap()
        }),
    ];
    let record = dest.join(".git/bc-gitops-snapshot");
    for (what, change) in changes {
        sync_until_recorded(&opts);
        if watch {
            // Without its record, only the watch can answer that nothing
            // changed: a stat check would fail and check out again, which
            // writes a new record.
            fs::remove_file(&record).unwrap();
        }
        assert!(!sync(&opts).unwrap().changed);
        assert_eq!(!record.exists(), watch, "{what}");
        assert_eq!(watching(&dest), watch, "{what}");
        change(&dest);
        let out = sync(&opts).unwrap();
        assert!(!out.changed && out.healed.is_none(), "{what}: {out:?}");
        assert_eq!(read(&dest, "README.md"), "hello\n", "{what}");
        assert_eq!(read(&dest, "apps/a/app.config"), "{a}.\n", "{what}");
        assert_eq!(status(&dest), "", "{what}");
    }

    // Damaged objects are found and healed as before.
    sync_until_recorded(&opts);
    for entry in fs::read_dir(dest.join(".git/objects/pack")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(100).unwrap();
        }
    }
    let out = sync(&opts).unwrap();
    assert!(out.healed.is_some(), "{out:?}");
    assert_eq!(status(&dest), "");
}

#[test]
fn force_pushed_history_is_followed() {
    support::isolate();
    let up = Upstream::new();
    up.commit(&[("v.txt", b"1\n")], "v1");
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    sync(&opts).unwrap();

    let rewritten = up.rewrite_last(&[("v.txt", b"rewritten\n")]);
    let out = sync(&opts).unwrap();
    assert_eq!(
        (out.commit.as_str(), out.changed),
        (rewritten.as_str(), true)
    );
    assert_eq!(read(&dest, "v.txt"), "rewritten\n");
    assert_eq!(status(&dest), "");
}

#[test]
fn tags_commits_and_named_refs() {
    support::isolate();
    let up = Upstream::new();
    let v1 = up.commit(&[("v.txt", b"1\n")], "v1");
    up.tag("v1.0.0", Some("release 1"));
    up.tag("light", None);
    up.switch("develop");
    let dev = up.commit(&[("v.txt", b"dev\n")], "dev");
    let root = up.dir.path();

    let mut opts = options(&up.file_url(), &root.join("tag"));
    opts.git_ref = GitRef::Tag("v1.0.0".into());
    assert_eq!(sync(&opts).unwrap().commit, v1);

    opts.local_path = root.join("light");
    opts.git_ref = GitRef::parse("light");
    assert_eq!(sync(&opts).unwrap().commit, v1);

    opts.local_path = root.join("branch");
    opts.git_ref = GitRef::parse("develop");
    assert_eq!(sync(&opts).unwrap().commit, dev);
    assert_eq!(read(&opts.local_path, "v.txt"), "dev\n");

    opts.local_path = root.join("commit");
    opts.git_ref = GitRef::parse(&v1.to_uppercase());
    assert_eq!(opts.git_ref, GitRef::Commit(v1.clone()));
    let out = sync(&opts).unwrap();
    assert_eq!((out.commit.as_str(), out.changed), (v1.as_str(), true));
    assert_eq!(read(&opts.local_path, "v.txt"), "1\n");

    // A moved tag is followed.
    up.tag("v1.0.0", Some("moved"));
    opts.local_path = root.join("tag");
    opts.git_ref = GitRef::Tag("v1.0.0".into());
    let moved = sync(&opts).unwrap();
    assert_eq!((moved.commit.as_str(), moved.changed), (dev.as_str(), true));
}

#[test]
fn missing_refs_are_clear_errors_and_keep_the_checkout() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let mut opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;

    for git_ref in [
        GitRef::Branch("nope".into()),
        GitRef::Tag("v9".into()),
        GitRef::Named("nothing".into()),
        GitRef::Commit("0123456789abcdef0123456789abcdef01234567".into()),
    ] {
        opts.git_ref = git_ref.clone();
        match sync(&opts) {
            Err(GitError::RefNotFound { what, .. }) => assert_eq!(what, git_ref.to_string()),
            other => panic!("{git_ref}: expected RefNotFound, got {other:?}"),
        }
        assert_eq!(checkout_head(&dest), good);
        assert_eq!(read(&dest, "README.md"), "hello\n");
    }
    // A missing ref on a first clone leaves nothing behind.
    let fresh = up.dir.path().join("fresh");
    opts.local_path = fresh.clone();
    opts.git_ref = GitRef::Branch("nope".into());
    assert!(matches!(sync(&opts), Err(GitError::RefNotFound { .. })));
    assert!(!fresh.exists());
    assert_eq!(leftovers(up.dir.path()), Vec::<String>::new());
}

#[test]
fn invalid_refs_are_refused() {
    support::isolate();
    let up = Upstream::new();
    let mut opts = options(&up.file_url(), &up.dir.path().join("c"));
    for bad in ["a:b", "a*", "..", "x y", ""] {
        opts.git_ref = GitRef::Branch(bad.into());
        assert!(
            matches!(sync(&opts), Err(GitError::InvalidInput(_))),
            "{bad}"
        );
    }
}

#[test]
fn unreachable_local_remote() {
    support::isolate();
    let dir = tempfile::tempdir().unwrap();
    let opts = options("/nonexistent/repo.git", &dir.path().join("c"));
    match sync(&opts) {
        Err(GitError::Unreachable { message, .. }) => {
            assert_eq!(message, "no such directory: /nonexistent/repo.git")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let opts = options("file:///nonexistent/my%20repo.git", &dir.path().join("c"));
    match sync(&opts) {
        Err(GitError::Unreachable { message, .. }) => {
            assert_eq!(message, "no such directory: /nonexistent/my repo.git")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn percent_escaped_file_url_reaches_its_repository() {
    support::isolate();
    let up = Upstream::new();
    let spaced = up.dir.path().join("my repo.git");
    fs::rename(&up.bare, &spaced).unwrap();
    let url = format!("file://{}", spaced.display()).replace(' ', "%20");
    let dest = up.dir.path().join("checkout");
    assert!(sync(&options(&url, &dest)).is_ok());
}

#[test]
fn deleted_objects_are_healed_by_a_reclone() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;

    let objects = dest.join(".git/objects");
    for entry in fs::read_dir(&objects).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        }
    }
    let out = sync(&opts).unwrap();
    assert_eq!(out.commit, good);
    assert!(!out.changed);
    assert!(out.healed.is_some(), "{out:?}");
    assert_eq!(status(&dest), "");
    assert_eq!(leftovers(up.dir.path()), Vec::<String>::new());
}

#[test]
fn a_failed_fetch_is_reported_not_healed() {
    support::isolate();
    // The remote serves a damaged object: the transfer fails, the local
    // clone is fine and must be neither called corrupt nor re-cloned.
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;
    fs::write(dest.join(".git/keep-me"), "marker").unwrap();

    up.commit(&[("new.bin", &noise(4_000, 7))], "new");
    let blob = git(&up.work, &["rev-parse", "HEAD:new.bin"]);
    let loose = up.bare.join("objects").join(&blob[..2]).join(&blob[2..]);
    assert!(loose.exists(), "the push left no loose object to damage");
    fs::remove_file(&loose).unwrap();
    fs::write(&loose, b"this is not zlib data").unwrap();

    for _ in 0..2 {
        let result = sync(&opts);
        assert!(
            matches!(
                result,
                Err(GitError::Other(_) | GitError::Unreachable { .. })
            ),
            "{result:?}"
        );
        assert_eq!(checkout_head(&dest), good);
        assert!(dest.join(".git/keep-me").exists(), "the clone was replaced");
        assert_eq!(leftovers(up.dir.path()), Vec::<String>::new());
    }
}

#[test]
fn truncated_packfile_is_healed() {
    support::isolate();
    let up = Upstream::new();
    for i in 0..5 {
        up.commit(&[(&format!("f{i}.bin"), &noise(20_000, i))], "more");
    }
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    sync(&opts).unwrap();
    let pack_dir = dest.join(".git/objects/pack");
    let mut truncated = 0;
    for entry in fs::read_dir(&pack_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let len = fs::metadata(&path).unwrap().len();
            let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len / 2).unwrap();
            truncated += 1;
        }
    }
    assert!(truncated > 0, "the clone has no packfile");
    let next = up.commit(&[("after.txt", b"x\n")], "after");
    let out = sync(&opts).unwrap();
    assert_eq!(out.commit, next);
    assert!(out.healed.is_some(), "{out:?}");
    assert_eq!(status(&dest), "");
}

#[test]
fn stale_index_lock_is_removed() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    sync(&opts).unwrap();
    fs::write(dest.join(".git/index.lock"), "").unwrap();
    fs::write(dest.join(".git/HEAD.lock"), "").unwrap();
    fs::write(dest.join("README.md"), "edited\n").unwrap();
    let next = up.commit(&[("b.txt", b"b\n")], "b");
    let out = sync(&opts).unwrap();
    assert_eq!(
        (out.commit.as_str(), out.healed.as_deref()),
        (next.as_str(), None)
    );
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert!(!dest.join(".git/index.lock").exists());
}

#[test]
fn broken_head_is_healed() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;
    fs::write(dest.join(".git/HEAD"), "garbage").unwrap();
    fs::write(dest.join(".git/index"), "garbage").unwrap();
    let out = sync(&opts).unwrap();
    assert_eq!((out.commit.as_str(), out.changed), (good.as_str(), true));
    assert!(out.healed.is_some());
    assert_eq!(status(&dest), "");
}

#[test]
fn failed_heal_keeps_the_last_checkout() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    sync(&opts).unwrap();
    fs::remove_dir_all(dest.join(".git/objects")).unwrap();
    fs::create_dir(dest.join(".git/objects")).unwrap();
    let moved = up.dir.path().join("moved.git");
    fs::rename(&up.bare, &moved).unwrap();

    assert!(matches!(sync(&opts), Err(GitError::Unreachable { .. })));
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert_eq!(leftovers(up.dir.path()), Vec::<String>::new());

    fs::rename(&moved, &up.bare).unwrap();
    assert!(sync(&opts).unwrap().healed.is_some());
}

#[test]
fn non_repository_directories_are_left_alone() {
    support::isolate();
    let up = Upstream::new();
    let root = up.dir.path();

    // Non-empty, no repository: refused, untouched.
    let user_data = root.join("user");
    fs::create_dir(&user_data).unwrap();
    fs::write(user_data.join("precious.txt"), "mine").unwrap();
    match sync(&options(&up.file_url(), &user_data)) {
        Err(GitError::NotARepository { path, .. }) => assert_eq!(path, user_data),
        other => panic!("expected NotARepository, got {other:?}"),
    }
    assert_eq!(read(&user_data, "precious.txt"), "mine");

    // A file: refused.
    let file = root.join("file");
    fs::write(&file, "x").unwrap();
    assert!(matches!(
        sync(&options(&up.file_url(), &file)),
        Err(GitError::NotARepository { .. })
    ));

    // A repository of something else: refused, untouched.
    let other = root.join("other");
    git(root, &["init", "-q", other.to_str().unwrap()]);
    git(
        &other,
        &["remote", "add", "origin", "https://example.org/else.git"],
    );
    fs::write(other.join("work.txt"), "wip").unwrap();
    assert!(matches!(
        sync(&options(&up.file_url(), &other)),
        Err(GitError::NotARepository { .. })
    ));
    assert_eq!(read(&other, "work.txt"), "wip");

    // An empty directory: cloned into.
    let empty = root.join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(
        sync(&options(&up.file_url(), &empty)).unwrap().commit,
        up.head()
    );

    // A clone of the same URL made by someone else: adopted.
    let adopted = root.join("adopted");
    git(
        root,
        &["clone", "-q", &up.file_url(), adopted.to_str().unwrap()],
    );
    fs::write(adopted.join("README.md"), "local edit").unwrap();
    let out = sync(&options(&up.file_url(), &adopted)).unwrap();
    assert!(!out.changed);
    assert_eq!(read(&adopted, "README.md"), "hello\n");
}

#[test]
fn interrupted_swap_is_recovered() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;
    // As if a process (long gone: pid 999999999) died between the renames.
    let old = up.dir.path().join(".checkout.bc-gitops-old-999999999-0");
    let new = up.dir.path().join(".checkout.bc-gitops-new-999999999-0");
    fs::rename(&dest, &old).unwrap();
    fs::create_dir(&new).unwrap();
    let out = sync(&opts).unwrap();
    assert_eq!(
        (out.commit.as_str(), out.changed, out.healed.as_deref()),
        (good.as_str(), false, None)
    );
    assert_eq!(leftovers(up.dir.path()), Vec::<String>::new());
}

#[test]
fn concurrent_syncs_of_one_path_are_serialized() {
    support::isolate();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| sync(&opts))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let changed = results
        .iter()
        .filter(|r| r.as_ref().unwrap().changed)
        .count();
    assert_eq!(changed, 1, "{results:?}");
    assert_eq!(status(&dest), "");
}

#[test]
fn full_disk_is_reported_and_keeps_the_checkout() {
    support::isolate();
    let up = Upstream::new();
    let disk = Tmpfs::mount("1m");
    let dest = disk.path().join("checkout");
    let opts = options(&up.file_url(), &dest);
    let good = sync(&opts).unwrap().commit;

    up.commit(&[("big.bin", &noise(3 << 20, 7))], "too big");
    match sync(&opts) {
        Err(GitError::DiskFull { .. }) => {}
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert_eq!(checkout_head(&dest), good);
    assert_eq!(read(&dest, "README.md"), "hello\n");
    assert_eq!(status(&dest), "");

    // A first clone that does not fit: error, and nothing left behind.
    let fresh = disk.path().join("fresh");
    let result = sync(&options(&up.file_url(), &fresh));
    assert!(
        matches!(result, Err(GitError::DiskFull { .. })),
        "{result:?}"
    );
    assert!(!fresh.exists());
    assert_eq!(leftovers(disk.path()), Vec::<String>::new());
}

#[test]
fn secrets_never_show() {
    support::isolate();
    assert_eq!(
        redact_url("https://user:token@host/x"),
        "https://***@host/x"
    );
    let mut opts = SyncOptions::new("https://bob:hunter2@127.0.0.1:1/x.git", "/tmp/never");
    opts.auth = Auth {
        username: Some("alice".into()),
        token: Some("s3cr3t-token".into()),
        ssh_passphrase: Some("pass-phrase".into()),
        ..Auth::default()
    };
    // The user of an http(s) URL may be a token; an ssh or git user is an
    // account name, kept on purpose (see `redact_url`).
    let secrets = ["hunter2", "alice", "s3cr3t-token", "pass-phrase"];
    let mut shown = vec![
        format!("{opts:?}"),
        format!("{opts:#?}"),
        format!("{:?}", opts.auth),
        format!("{:#?}", opts.auth),
    ];
    assert!(shown.iter().all(|text| !text.contains("bob")), "{shown:?}");
    // Every error a sync with these secrets gives, for each URL form.
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "https://bob:hunter2@127.0.0.1:1/x.git",
        "http://hunter2@127.0.0.1:1/x.git",
        "ssh://bob:hunter2@127.0.0.1:1/x.git",
        "[bob:hunter2@127.0.0.1:1]:x.git",
        "git://bob:hunter2@127.0.0.1:1/x.git",
        "ftp://bob:hunter2@127.0.0.1:1/x.git",
    ] {
        let mut failing = opts.clone();
        failing.url = url.to_string();
        failing.local_path = dir.path().join("c");
        failing.timeout = Duration::from_secs(30);
        shown.push(format!("{failing:?}"));
        let err = sync(&failing).unwrap_err();
        shown.push(format!("{err:?} {err:#?} {err}"));
    }
    let outcome = bc_gitops_core::git::SyncOutcome {
        commit: "0".repeat(40),
        changed: true,
        healed: Some(redact_url("https://bob:hunter2@h/x")),
        verified: None,
    };
    shown.push(format!("{outcome:?}"));
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

/// Staging directories left next to checkouts.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bc-gitops-"))
        .collect()
}
