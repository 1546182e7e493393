//! Git sync over smart HTTP and HTTPS against lighttpd running
//! `git http-backend`: plain, TLS with a self-signed or CA-signed
//! certificate (refused without `ca_file`, accepted with it), and basic auth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use bc_gitops_core::git::{sync, Auth, GitError, SyncOptions};
use support::{
    ca_and_leaf, ca_and_leaf_for, https_self_signed, isolate, lighttpd, read, self_signed, status,
    HttpSetup, Upstream,
};

fn options(url: String, dest: &Path, auth: Auth) -> SyncOptions {
    let mut opts = SyncOptions::new(url, dest);
    opts.timeout = Duration::from_secs(20);
    opts.auth = auth;
    opts
}

#[test]
fn http_clone_update_and_force_push() {
    isolate();
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let server = lighttpd(up.dir.path(), conf.path(), &HttpSetup::default());
    let dest = up.dir.path().join("checkout");
    let url = format!("http://localhost:{}/git/upstream.git", server.port);
    let opts = options(url, &dest, Auth::default());

    assert_eq!(sync(&opts).unwrap().commit, up.head());
    let next = up.commit(&[("b.txt", b"b\n")], "b");
    let out = sync(&opts).unwrap();
    assert_eq!((out.commit.as_str(), out.changed), (next.as_str(), true));
    let rewritten = up.rewrite_last(&[("b.txt", b"rewritten\n")]);
    assert_eq!(sync(&opts).unwrap().commit, rewritten);
    assert_eq!(read(&dest, "b.txt"), "rewritten\n");
    assert_eq!(status(&dest), "");

    // A repository the server does not have.
    let missing = format!("http://localhost:{}/git/missing.git", server.port);
    let result = sync(&options(missing, &up.dir.path().join("m"), Auth::default()));
    assert!(
        matches!(result, Err(GitError::Unreachable { .. })),
        "{result:?}"
    );
}

#[test]
fn https_self_signed_needs_the_ca_file() {
    isolate();
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let (server, cert) = https_self_signed(up.dir.path(), conf.path());
    let url = format!("https://localhost:{}/git/upstream.git", server.port);

    let untrusted = up.dir.path().join("untrusted");
    let result = sync(&options(url.clone(), &untrusted, Auth::default()));
    assert!(
        matches!(result, Err(GitError::Certificate { .. })),
        "{result:?}"
    );
    assert!(!untrusted.exists());

    // Another certificate is not a substitute.
    let (other, _) = self_signed(conf.path(), "other");
    let auth = Auth {
        ca_file: Some(other),
        ..Auth::default()
    };
    let result = sync(&options(url.clone(), &untrusted, auth));
    assert!(
        matches!(result, Err(GitError::Certificate { .. })),
        "{result:?}"
    );

    let auth = Auth {
        ca_file: Some(cert),
        ..Auth::default()
    };
    let dest = up.dir.path().join("trusted");
    assert_eq!(sync(&options(url, &dest, auth)).unwrap().commit, up.head());
}

#[test]
fn https_ca_signed_leaf() {
    isolate();
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let (ca, leaf, leaf_key) = ca_and_leaf(conf.path());
    let server = lighttpd(
        up.dir.path(),
        conf.path(),
        &HttpSetup {
            tls: Some((&leaf, &leaf_key)),
            ..HttpSetup::default()
        },
    );

    let url = format!("https://localhost:{}/git/upstream.git", server.port);
    let result = sync(&options(
        url.clone(),
        &up.dir.path().join("no-ca"),
        Auth::default(),
    ));
    assert!(
        matches!(result, Err(GitError::Certificate { .. })),
        "{result:?}"
    );

    let auth = Auth {
        ca_file: Some(ca.clone()),
        ..Auth::default()
    };
    let dest = up.dir.path().join("with-ca");
    assert_eq!(sync(&options(url, &dest, auth)).unwrap().commit, up.head());
}

#[test]
fn https_name_mismatch_is_a_certificate_error() {
    isolate();
    // A leaf the trusted CA signed, but for another name than the one used:
    // the server is reached (same address and port) and refused.
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let (ca, leaf, leaf_key) = ca_and_leaf_for(conf.path(), "DNS:other.example.org");
    let server = lighttpd(
        up.dir.path(),
        conf.path(),
        &HttpSetup {
            tls: Some((&leaf, &leaf_key)),
            ..HttpSetup::default()
        },
    );
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/git/upstream.git", server.port);
        let auth = Auth {
            ca_file: Some(ca.clone()),
            ..Auth::default()
        };
        let dest = up.dir.path().join(format!("mismatch-{host}"));
        let result = sync(&options(url, &dest, auth));
        assert!(
            matches!(result, Err(GitError::Certificate { .. })),
            "{host}: {result:?}"
        );
        assert!(!dest.exists());
    }
}

#[test]
fn basic_auth_with_token() {
    isolate();
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(conf.path(), "server");
    let setup = HttpSetup {
        tls: Some((&cert, &key)),
        basic_auth: Some(("alice", "right-token-123")),
        ..HttpSetup::default()
    };
    let server = lighttpd(up.dir.path(), conf.path(), &setup);
    let url = format!("https://localhost:{}/git/upstream.git", server.port);
    let auth = |token: Option<&str>| Auth {
        username: Some("alice".into()),
        token: token.map(str::to_string),
        ca_file: Some(cert.clone()),
        ..Auth::default()
    };

    let dest = up.dir.path().join("checkout");
    match sync(&options(url.clone(), &dest, auth(Some("wrong-token-456")))) {
        Err(e @ GitError::Auth { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("wrong-token-456") && !text.contains("alice"),
                "{text}"
            );
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!dest.exists());

    let result = sync(&options(
        url.clone(),
        &dest,
        Auth {
            ca_file: Some(cert.clone()),
            ..Auth::default()
        },
    ));
    assert!(matches!(result, Err(GitError::Auth { .. })), "{result:?}");

    assert_eq!(
        sync(&options(url, &dest, auth(Some("right-token-123"))))
            .unwrap()
            .commit,
        up.head()
    );

    // Credentials in the URL work too, and never show in errors.
    let in_url = format!(
        "https://alice:right-token-123@localhost:{}/git/missing.git",
        server.port
    );
    let err = sync(&options(in_url, &up.dir.path().join("m"), auth(None))).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("right-token-123"), "{text}");
}

#[test]
fn plain_http_keeps_the_host_header() {
    isolate();
    // git is served to the name `localhost` only, as a name-based virtual host.
    let up = Upstream::new();
    let conf = tempfile::tempdir().unwrap();
    let setup = HttpSetup {
        only_host: Some("localhost"),
        ..HttpSetup::default()
    };
    let server = lighttpd(up.dir.path(), conf.path(), &setup);

    let by_ip = format!("http://127.0.0.1:{}/git/upstream.git", server.port);
    let result = sync(&options(
        by_ip,
        &up.dir.path().join("by-ip"),
        Auth::default(),
    ));
    assert!(
        matches!(result, Err(GitError::Unreachable { .. })),
        "{result:?}"
    );

    let by_name = format!("http://localhost:{}/git/upstream.git", server.port);
    let dest = up.dir.path().join("by-name");
    assert_eq!(
        sync(&options(by_name, &dest, Auth::default()))
            .unwrap()
            .commit,
        up.head()
    );
}
