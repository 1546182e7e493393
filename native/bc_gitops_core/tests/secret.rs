//! Encrypted env values: made with Debian's `age` CLI (X25519 and ssh
//! recipients), checked without decrypting, decrypted with identity files,
//! read as terms; and the forms specs give them in (term and JSON files).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bc_gitops_core::secret::{check_armored, plaintext_term, Identities, SecretError};
use bc_gitops_core::spec::{parse_dir, ErrorKind};
use bc_gitops_core::term::Term;
use support::run;
use tempfile::TempDir;

/// An age identity file and its recipient, made by age-keygen.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    support::require("/usr/bin/age-keygen", "age");
    let path = dir.join(name);
    run(Command::new("age-keygen").args(["-o", path.to_str().unwrap()]));
    let recipient = run(Command::new("age-keygen").args(["-y", path.to_str().unwrap()]));
    (path, recipient)
}

/// `age -a` with `args`, `plain` on stdin.
fn age(args: &[&str], plain: &[u8]) -> String {
    support::require("/usr/bin/age", "age");
    let mut child = Command::new("age")
        .arg("-a")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(plain).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn setup() -> (TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = keygen(dir.path(), "node.key");
    (dir, identity, recipient)
}

#[test]
fn decrypts_with_x25519_and_ssh_identities() {
    let (dir, identity, recipient) = setup();
    let armored = age(&["-r", &recipient], b"hunter2");
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    check_armored(armored.as_bytes()).unwrap();
    let ids = Identities::load(&identity).unwrap();
    assert_eq!(&ids.decrypt(armored.as_bytes()).unwrap()[..], b"hunter2");
    // The same plaintext encrypted again: another ciphertext, same plaintext.
    let again = age(&["-r", &recipient], b"hunter2");
    assert_ne!(armored, again);
    assert_eq!(&ids.decrypt(again.as_bytes()).unwrap()[..], b"hunter2");

    let key = dir.path().join("id_ed25519");
    support::ssh_keygen(&key, "node");
    let pub_key = format!("{}.pub", key.display());
    let armored = age(&["-R", &pub_key], b"over ssh");
    let ids = Identities::load(&key).unwrap();
    assert_eq!(&ids.decrypt(armored.as_bytes()).unwrap()[..], b"over ssh");
}

#[test]
fn errors_name_the_identity_file_never_the_value() {
    let (dir, identity, recipient) = setup();
    let (other, other_recipient) = keygen(dir.path(), "other.key");
    let secret = b"canary-7f3a9";
    let armored = age(&["-r", &other_recipient], secret);
    let ids = Identities::load(&identity).unwrap();
    let err = ids.decrypt(armored.as_bytes()).unwrap_err();
    assert!(
        matches!(err, SecretError::NoMatchingIdentity { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(identity.to_str().unwrap()),
        "{err}"
    );

    let missing = dir.path().join("missing.key");
    let err = Identities::load(&missing).unwrap_err();
    assert!(matches!(err, SecretError::Identity { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.key"), "{err}");

    // A ciphertext altered inside its payload: the identity matches, the
    // payload does not authenticate.
    let armored = age(&["-r", &recipient], secret);
    let mut lines: Vec<String> = armored.lines().map(String::from).collect();
    let last = lines.len() - 2;
    let flipped: String = lines[last]
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 2 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    lines[last] = flipped;
    let altered = lines.join("\n") + "\n";
    check_armored(altered.as_bytes()).unwrap();
    let err = ids.decrypt(altered.as_bytes()).unwrap_err();
    assert!(matches!(err, SecretError::Corrupt { .. }), "{err:?}");

    // No message holds the plaintext.
    let other_ids = Identities::load(&other).unwrap();
    let errors = [
        ids.decrypt(b"junk").unwrap_err(),
        other_ids.decrypt(altered.as_bytes()).unwrap_err(),
        err,
    ];
    for e in errors {
        assert!(!format!("{e} {e:?}").contains("canary"), "{e}");
    }
}

#[test]
fn well_formedness_without_decrypting() {
    let (_dir, _identity, recipient) = setup();
    let armored = age(&["-r", &recipient], b"x");
    check_armored(armored.as_bytes()).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hunter2".to_vec(), "does not start"),
        (
            armored.replace("-----END AGE", "-----END AGX").into_bytes(),
            "armor",
        ),
        (armored.replacen('\n', "\n!!", 1).into_bytes(), "armor"),
        (vec![b'x'; 70 * 1024], "64 KiB"),
    ];
    for (value, says) in cases {
        let err = check_armored(&value).unwrap_err();
        assert!(matches!(err, SecretError::Malformed(_)), "{err:?}");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    // Encrypted to a passphrase: refused, there is no one to type it.
    let scrypt = age_passphrase(b"x");
    let err = check_armored(scrypt.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("passphrase"), "{err}");
}

/// `age -p` reads the passphrase from the terminal only; an scrypt file is
/// made by the crate's own encryptor instead (same format).
fn age_passphrase(plain: &[u8]) -> String {
    let encryptor = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(
        "correct horse".to_string(),
    ));
    let mut out = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
    let mut writer = encryptor.wrap_output(armor).unwrap();
    writer.write_all(plain).unwrap();
    writer.finish().unwrap().finish().unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn plaintexts_read_as_one_term_or_else_bytes() {
    let term = |text: &[u8]| plaintext_term(text).term;
    assert_eq!(term(b"8080."), Term::Int(8080));
    assert_eq!(term(b"<<\"pw\">>.\n"), Term::Binary(b"pw".to_vec()));
    assert!(matches!(
        term(b"[{user, \"u\"}, {pool, 4}]."),
        Term::List { .. }
    ));
    assert_eq!(term(b"hunter2"), Term::Binary(b"hunter2".to_vec()));
    assert_eq!(term(b"hunter2\n"), Term::Binary(b"hunter2\n".to_vec()));
    assert_eq!(term(b"a. b."), Term::Binary(b"a. b.".to_vec()));
    assert_eq!(term(b"{unclosed."), Term::Binary(b"{unclosed.".to_vec()));
    // An atom no NIF can make on OTP 25: the bytes instead.
    assert_eq!(
        term("'\u{1F600}'.".as_bytes()),
        Term::Binary("'\u{1F600}'.".as_bytes().to_vec())
    );
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

#[test]
fn specs_keep_encrypted_values_encrypted_and_checked() {
    let (dir, _identity, recipient) = setup();
    let armored = age(&["-r", &recipient], b"hunter2");
    let root = dir.path().join("repo");
    let term_spec = format!(
        "#{{name => t, version => <<\"1\">>, source => #{{type => hex}},\n env => #{{password => {{age, <<\"{armored}\">>}}, plain => {{age, 42}}}}}}.\n"
    );
    write(&root, "apps/t/app.config", &term_spec);
    let json = serde_json::json!({
        "name": "j", "version": "1", "source": {"type": "hex"},
        "env": {"password": {"$age": armored}, "port": 1}
    });
    write(&root, "apps/j/app.json", &json.to_string());
    let bad = format!(
        "#{{name => bad, version => <<\"1\">>, source => #{{type => hex}},\n env => #{{a => {{age, <<\"-----BEGIN AGE ENCRYPTED FILE-----\\nnope\">>}},\n b => [{{age, <<\"{armored}\">>}}]}}}}.\n"
    );
    write(&root, "apps/bad/app.config", &bad);
    write(
        &root,
        "apps/badjson/app.json",
        r#"{"name": "badjson", "version": "1", "source": {"type": "hex"}, "env": {"k": {"$age": 1}}}"#,
    );
    let out = parse_dir(&root, "apps").unwrap();
    let names: Vec<&str> = out.specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["j", "t"]);
    let expected = Term::Tuple(vec![
        bc_gitops_core::term::Spanned::new(0, Term::Atom("age".into())),
        bc_gitops_core::term::Spanned::new(0, Term::Binary(armored.clone().into_bytes())),
    ]);
    for spec in &out.specs {
        let (_, value) = spec.env.iter().find(|(k, _)| k == "password").unwrap();
        assert_eq!(value.term, expected, "{}", spec.name);
    }
    // {age, 42} is a plain value, as it always was.
    let t = &out.specs[1];
    let (_, plain) = t.env.iter().find(|(k, _)| k == "plain").unwrap();
    assert!(matches!(&plain.term, Term::Tuple(items) if items[1].term == Term::Int(42)));

    let errors: Vec<(&str, Option<u32>, &str, ErrorKind)> = out
        .errors
        .iter()
        .map(|e| (e.app.as_str(), e.line, e.field.as_str(), e.kind))
        .collect();
    assert_eq!(
        errors,
        [
            ("bad", Some(2), "env.a", ErrorKind::InvalidValue),
            ("bad", Some(3), "env.b", ErrorKind::InvalidValue),
            ("badjson", None, "env.k", ErrorKind::InvalidValue),
        ]
    );
    assert!(
        out.errors[0].message.contains("armor"),
        "{}",
        out.errors[0].message
    );
    assert!(
        out.errors[1].message.contains("whole value"),
        "{}",
        out.errors[1].message
    );
    assert!(
        out.errors[2].message.contains("must be a string"),
        "{}",
        out.errors[2].message
    );
}
