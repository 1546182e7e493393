//! Commit signatures checked by a sync, with commits and tags signed by the
//! real tools (`git commit -S` with ssh-keygen and with gpg), against
//! allowed_signers and armored OpenPGP key files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bc_gitops_core::git::{sync, GitRef, SyncOptions, SyncOutcome};
use bc_gitops_core::verify::{SignatureFormat, SignedObject, Unverified, VerifyKeys};
use support::{git, run, Upstream};
use tempfile::TempDir;

/// Keys made with ssh-keygen and gpg, in a directory of their own.
struct Keys {
    dir: TempDir,
    gnupg: PathBuf,
    /// A GNUPGHOME whose clock says 2020: its key expired long ago.
    old_gnupg: PathBuf,
}

const ALICE: &str = "alice@example.org";
const MALLORY: &str = "mallory@example.org";
const CAROL: &str = "carol@example.org";
const REVOKED: &str = "revoked@example.org";
const OLD: &str = "old@example.org";
/// mallory's ssh key (her gpg key is MALLORY).
const MALLORY_SSH: &str = "mallory";

impl Keys {
    fn new() -> Keys {
        support::require("/usr/bin/gpg", "gnupg");
        let dir = tempfile::tempdir().unwrap();
        for name in ["alice", "mallory"] {
            support::ssh_keygen(&dir.path().join(name), name);
        }
        let gnupg = dir.path().join("gnupg");
        let old_gnupg = dir.path().join("old-gnupg");
        let keys = Keys {
            dir,
            gnupg,
            old_gnupg,
        };
        for home in [&keys.gnupg, &keys.old_gnupg] {
            fs::create_dir(home).unwrap();
            fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        }
        for user in [CAROL, MALLORY, REVOKED] {
            keys.gpg(
                &keys.gnupg,
                &["--quick-gen-key", user, "ed25519", "sign", "never"],
            );
        }
        fs::write(
            keys.old_gnupg.join("gpg.conf"),
            "faked-system-time 20200101T000000\n",
        )
        .unwrap();
        keys.gpg(
            &keys.old_gnupg,
            &["--quick-gen-key", OLD, "ed25519", "sign", "1d"],
        );
        fs::write(
            keys.old_gnupg.join("gpg.conf"),
            "faked-system-time 20200101T120000\n",
        )
        .unwrap();
        keys
    }

    /// Revokes REVOKED: imports the revocation certificate gpg wrote when
    /// it made the key (gpg no longer signs with it after this).
    fn revoke(&self) {
        let fpr = self.fingerprint(&self.gnupg, REVOKED);
        let rev = self
            .gnupg
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev"));
        let text = fs::read_to_string(&rev)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        fs::write(&rev, text).unwrap();
        self.gpg(&self.gnupg, &["--import", rev.to_str().unwrap()]);
    }

    fn gpg(&self, home: &Path, args: &[&str]) -> String {
        run(Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args))
    }

    fn fingerprint(&self, home: &Path, user: &str) -> String {
        let listing = self.gpg(home, &["--with-colons", "--list-keys", user]);
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|rest| rest.trim_end_matches(':').to_string())
            .unwrap()
    }

    fn ssh_key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// allowed_signers listing alice only (with `options`).
    fn allowed_signers(&self, options: &str) -> PathBuf {
        let public = fs::read_to_string(self.ssh_key("alice.pub")).unwrap();
        let path = self
            .dir
            .path()
            .join(format!("allowed_signers{}", options.len()));
        fs::write(&path, format!("# ops\n{ALICE} {options} {public}")).unwrap();
        path
    }

    /// The armored public keys of `users` (from both key rings), one file.
    fn gpg_keys(&self, users: &[&str]) -> PathBuf {
        let mut text = String::new();
        for user in users {
            let home = if *user == OLD {
                &self.old_gnupg
            } else {
                &self.gnupg
            };
            // Text between blocks (a comment, a tool's warning) is ignored.
            text.push_str(&format!("# {user}\n"));
            text.push_str(&self.gpg(home, &["--armor", "--export", user]));
            text.push('\n');
        }
        let path = self
            .dir
            .path()
            .join(format!("gpg_keys-{}", users.join("-")));
        fs::write(&path, text).unwrap();
        path
    }

    fn verify(&self) -> VerifyKeys {
        VerifyKeys {
            allowed_signers: Some(self.allowed_signers("")),
            gpg_keys: Some(self.gpg_keys(&[CAROL, REVOKED, OLD])),
        }
    }

    /// Runs git in `work` with `commit -S` / `tag -s` signing as `signer`
    /// (an ssh key name, or a gpg user id with its key ring).
    fn git_signed(&self, work: &Path, signer: &str, args: &[&str]) -> String {
        let (format, key, home) = match signer {
            "alice" | "mallory" => (
                "ssh",
                self.ssh_key(signer).display().to_string(),
                &self.gnupg,
            ),
            OLD => ("openpgp", OLD.to_string(), &self.old_gnupg),
            user => ("openpgp", user.to_string(), &self.gnupg),
        };
        run(support::git_cmd(work)
            .env("GNUPGHOME", home)
            .args(["-c", &format!("gpg.format={format}")])
            .args(["-c", &format!("user.signingkey={key}")])
            .args(args))
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        for home in [&self.gnupg, &self.old_gnupg] {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", home)
                .args(["--kill", "all"])
                .output();
        }
    }
}

/// Commits `files` signed by `signer` (None: unsigned) and pushes.
fn commit(up: &Upstream, keys: &Keys, signer: Option<&str>, files: &[(&str, &[u8])]) -> String {
    for (name, content) in files {
        fs::write(up.work.join(name), content).unwrap();
    }
    git(&up.work, &["add", "-A"]);
    let args = ["commit", "-q", "--allow-empty", "-m", "change"];
    match signer {
        Some(signer) => keys.git_signed(&up.work, signer, &[&args[..], &["-S"]].concat()),
        None => git(&up.work, &args),
    };
    git(&up.work, &["push", "-q", "--force", "origin", "HEAD"]);
    up.head()
}

fn checked(up: &Upstream, dest: &Path, verify: VerifyKeys, git_ref: GitRef) -> SyncOutcome {
    let mut opts = SyncOptions::new(up.file_url(), dest);
    opts.timeout = Duration::from_secs(20);
    opts.git_ref = git_ref;
    opts.verify = Some(verify);
    sync(&opts).unwrap()
}

fn verdict(outcome: &SyncOutcome) -> &Result<bc_gitops_core::verify::Signer, Unverified> {
    &outcome.verified.as_ref().unwrap().result
}

fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

#[test]
fn ssh_and_openpgp_signed_commits_pass_and_name_their_signer() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let signed = commit(&up, &keys, Some("alice"), &[("a", b"1")]);
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert_eq!(outcome.commit, signed);
    let signer = verdict(&outcome).as_ref().unwrap();
    assert_eq!(signer.format, SignatureFormat::Ssh);
    assert_eq!(signer.object, SignedObject::Commit);
    assert_eq!(signer.principal, ALICE);
    assert!(signer.key.starts_with("SHA256:"), "{}", signer.key);

    let signed = commit(&up, &keys, Some(CAROL), &[("a", b"2")]);
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert_eq!(outcome.commit, signed);
    let signer = verdict(&outcome).as_ref().unwrap();
    assert_eq!(signer.format, SignatureFormat::OpenPgp);
    assert_eq!(signer.principal, CAROL);
    assert_eq!(signer.key, keys.fingerprint(&keys.gnupg, CAROL));

    // Without a verify option there is no verdict at all.
    let mut opts = SyncOptions::new(up.file_url(), &dest);
    opts.timeout = Duration::from_secs(20);
    assert_eq!(sync(&opts).unwrap().verified, None);
}

#[test]
fn unsigned_unknown_and_untrusted_keys_fail_but_stay_checked_out() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    commit(&up, &keys, Some("alice"), &[("a", b"1")]);
    assert!(verdict(&checked(&up, &dest, keys.verify(), main_branch())).is_ok());

    // An unsigned commit on top of a signed one.
    let unsigned = commit(&up, &keys, None, &[("a", b"2")]);
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert_eq!(outcome.commit, unsigned);
    assert!(matches!(verdict(&outcome), Err(Unverified::Unsigned(_))));
    // The checkout is that commit, for inspection.
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"2");

    let cases = [
        (MALLORY_SSH, "unknown_key", "not in allowed_signers"),
        (MALLORY, "unknown_key", "not in gpg_keys"),
        (REVOKED, "revoked_key", "revoked"),
        (OLD, "expired_key", "expired"),
    ];
    for (signer, expected, says) in cases {
        let id = commit(&up, &keys, Some(signer), &[("a", signer.as_bytes())]);
        if signer == REVOKED {
            keys.revoke();
        }
        let outcome = checked(&up, &dest, keys.verify(), main_branch());
        assert_eq!(outcome.commit, id);
        let why = verdict(&outcome).as_ref().unwrap_err();
        assert_eq!(why.kind(), expected, "{signer}: {why:?}");
        assert!(why.to_string().contains(says), "{signer}: {why}");
    }

    // OpenPGP signature with only allowed_signers configured, and the other
    // way round.
    let only_ssh = VerifyKeys {
        allowed_signers: Some(keys.allowed_signers("")),
        gpg_keys: None,
    };
    commit(&up, &keys, Some(CAROL), &[("a", b"3")]);
    let why = verdict(&checked(&up, &dest, only_ssh, main_branch()))
        .clone()
        .unwrap_err();
    assert!(why.to_string().contains("no gpg_keys file"), "{why}");
}

#[test]
fn ssh_key_options_are_enforced() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    commit(&up, &keys, Some("alice"), &[("a", b"1")]);
    let with = |options: &str| VerifyKeys {
        allowed_signers: Some(keys.allowed_signers(options)),
        gpg_keys: None,
    };
    let ok = checked(&up, &dest, with("namespaces=\"git\""), main_branch());
    assert!(verdict(&ok).is_ok());
    let expired = checked(&up, &dest, with("valid-before=\"20200101\""), main_branch());
    assert!(matches!(verdict(&expired), Err(Unverified::ExpiredKey(_))));
    let elsewhere = checked(&up, &dest, with("namespaces=\"file\""), main_branch());
    let why = verdict(&elsewhere).clone().unwrap_err();
    assert!(why.to_string().contains("namespaces"), "{why}");
    let broken = VerifyKeys {
        allowed_signers: Some(keys.dir.path().join("missing")),
        gpg_keys: None,
    };
    let why = verdict(&checked(&up, &dest, broken, main_branch()))
        .clone()
        .unwrap_err();
    assert!(matches!(why, Unverified::Keys(_)), "{why:?}");
    assert!(why.to_string().contains("missing"), "{why}");
}

#[test]
fn a_commit_edited_after_signing_fails() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    for signer in ["alice", CAROL] {
        commit(&up, &keys, Some(signer), &[("a", signer.as_bytes())]);
        // The same commit object, signature and all, with another message:
        // written with git hash-object, as a forger would.
        let raw = git(&up.work, &["cat-file", "commit", "HEAD"]);
        let forged = raw.replace("\n\nchange", "\n\nchange (approved)") + "\n";
        assert_ne!(raw, forged);
        let path = up.dir.path().join("forged");
        fs::write(&path, forged).unwrap();
        let id = git(
            &up.work,
            &["hash-object", "-t", "commit", "-w", path.to_str().unwrap()],
        );
        git(&up.work, &["reset", "-q", "--hard", &id]);
        git(&up.work, &["push", "-q", "--force", "origin", "HEAD:main"]);
        let outcome = checked(&up, &dest, keys.verify(), main_branch());
        assert_eq!(outcome.commit, id);
        let why = verdict(&outcome).clone().unwrap_err();
        assert!(
            matches!(why, Unverified::BadSignature(_)),
            "{signer}: {why:?}"
        );
        assert!(why.to_string().contains("does not match"), "{why}");
    }
}

#[test]
fn force_pushed_history_is_judged_by_its_new_head() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    commit(&up, &keys, Some("alice"), &[("a", b"1")]);
    commit(&up, &keys, Some("alice"), &[("a", b"2")]);
    assert!(verdict(&checked(&up, &dest, keys.verify(), main_branch())).is_ok());
    // History rewritten: the signed head replaced by an unsigned commit.
    let rewritten = up.rewrite_last(&[("a", b"forced")]);
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert_eq!(outcome.commit, rewritten);
    assert!(matches!(verdict(&outcome), Err(Unverified::Unsigned(_))));
    // Rewritten again, signed: trusted again.
    git(&up.work, &["reset", "-q", "--hard", "HEAD~1"]);
    let signed = commit(&up, &keys, Some(CAROL), &[("a", b"3")]);
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert_eq!(outcome.commit, signed);
    assert!(verdict(&outcome).is_ok());
}

#[test]
fn a_signed_annotated_tag_counts_for_an_unsigned_commit() {
    let keys = Keys::new();
    let up = Upstream::new();
    let dest = up.dir.path().join("checkout");
    let unsigned = commit(&up, &keys, None, &[("a", b"1")]);
    for (name, signer) in [("v1", "alice"), ("v2", CAROL)] {
        keys.git_signed(&up.work, signer, &["tag", "-s", "-m", "release", name]);
        git(
            &up.work,
            &["push", "-q", "origin", &format!("refs/tags/{name}")],
        );
        let outcome = checked(&up, &dest, keys.verify(), GitRef::Named(name.into()));
        assert_eq!(outcome.commit, unsigned);
        let signer = verdict(&outcome).as_ref().unwrap();
        assert_eq!(signer.object, SignedObject::Tag, "{name}");
    }
    // The branch, at the same commit, is not signed.
    let outcome = checked(&up, &dest, keys.verify(), main_branch());
    assert!(matches!(verdict(&outcome), Err(Unverified::Unsigned(_))));
    // An unsigned annotated tag: both reasons are given.
    up.tag("v3", Some("not signed"));
    let outcome = checked(&up, &dest, keys.verify(), GitRef::Tag("v3".into()));
    let why = verdict(&outcome).clone().unwrap_err();
    assert!(
        why.to_string()
            .contains("the annotated tag: the tag is not signed"),
        "{why}"
    );
    // A tag moved to a new tag object on the same commit is fetched again.
    keys.git_signed(
        &up.work,
        "mallory",
        &["tag", "-f", "-s", "-m", "moved", "v1"],
    );
    git(
        &up.work,
        &["push", "-q", "--force", "origin", "refs/tags/v1"],
    );
    let outcome = checked(&up, &dest, keys.verify(), GitRef::Tag("v1".into()));
    let why = verdict(&outcome).clone().unwrap_err();
    assert!(why.to_string().contains("not in allowed_signers"), "{why}");
}
