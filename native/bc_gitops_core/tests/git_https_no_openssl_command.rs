//! HTTPS sync runs no `openssl` command: an `openssl` placed first on PATH
//! that only records its runs is never run, while certificates are still
//! verified (refused without `ca_file`, accepted with it). One test in its
//! own binary, because it changes PATH and libgit2's trusted certificates,
//! both process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bc_gitops_core::git::{sync, Auth, GitError, SyncOptions};
use support::{https_self_signed, isolate, Upstream};

#[test]
fn https_sync_runs_no_openssl_command() {
    isolate();
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    // The certificate is made with the real openssl command, before PATH
    // changes.
    let (server, cert) = https_self_signed(up.dir.path(), conf.path());

    let bin = conf.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let ran = conf.path().join("openssl-ran");
    let fake = bin.join("openssl");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", ran.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));

    let url = format!("https://localhost:{}/git/upstream.git", server.port);
    let options = |dest: &str, ca_file| {
        let mut opts = SyncOptions::new(url.clone(), up.dir.path().join(dest));
        opts.timeout = Duration::from_secs(20);
        opts.auth = Auth {
            ca_file,
            ..Auth::default()
        };
        opts
    };
    let result = sync(&options("untrusted", None));
    assert!(
        matches!(result, Err(GitError::Certificate { .. })),
        "{result:?}"
    );
    let out = sync(&options("trusted", Some(cert))).unwrap();
    assert_eq!(out.commit, up.head());
    assert!(
        !ran.exists(),
        "openssl was run: {:?}",
        fs::read_to_string(&ran)
    );
}
