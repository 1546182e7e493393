//! The ALLOWED SIGNERS file of `ssh-keygen(1)`, as git's
//! `gpg.ssh.allowedSignersFile` reads it: one key per line,
//!
//! ```text
//! principals [options] keytype base64-key [comment]
//! ```
//!
//! `principals` is a comma-separated list (quoted with `"` if it holds
//! spaces); options are comma-separated: `namespaces="git,file"` (patterns
//! with `*` and `?`, `!` to exclude), `valid-after="YYYYMMDD[HHMM[SS]][Z]"`,
//! `valid-before="..."` and `cert-authority`. Blank lines and lines starting
//! with `#` are ignored.
//!
//! Differences from `ssh-keygen`, each on the strict side: a time without `Z`
//! is read as UTC (ssh-keygen reads it as local time); a `cert-authority`
//! line trusts no signature (certificates are not supported: list the
//! signing keys themselves); validity is checked at the time of
//! verification, not at the commit's date, which its signer writes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

/// One line of the file.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    pub principals: String,
    pub key: KeyData,
    /// Namespace patterns; `None` allows every namespace.
    pub namespaces: Option<Vec<String>>,
    pub valid_after: Option<SystemTime>,
    pub valid_before: Option<SystemTime>,
    pub cert_authority: bool,
    pub line: usize,
}

impl Signer {
    /// Why this line does not allow a signature in `namespace` at `now`, if
    /// it does not.
    pub(crate) fn refuses(&self, namespace: &str, now: SystemTime) -> Option<String> {
        if self.cert_authority {
            return Some("it is a cert-authority line (certificates are not supported)".into());
        }
        if let Some(patterns) = &self.namespaces {
            if !match_pattern_list(namespace, patterns) {
                return Some(format!("its namespaces do not include \"{namespace}\""));
            }
        }
        if self.valid_after.is_some_and(|t| now < t) {
            return Some("it is not valid yet (valid-after)".into());
        }
        if self.valid_before.is_some_and(|t| now >= t) {
            return Some("it has expired (valid-before)".into());
        }
        None
    }
}

/// Reads the file at `path`. Errors name the file and the line.
pub(crate) fn read(path: &Path) -> Result<Vec<Signer>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read allowed_signers {}: {e}", path.display()))?;
    parse(&text).map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
}

/// Parses the text of an allowed signers file; an error is `(line, why)`.
pub(crate) fn parse(text: &str) -> Result<Vec<Signer>, (usize, String)> {
    let mut signers = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let rest = raw.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        signers.push(parse_line(rest, line).map_err(|why| (line, why))?);
    }
    Ok(signers)
}

fn parse_line(text: &str, line: usize) -> Result<Signer, String> {
    let (principals, rest) = take_field(text)?;
    let principals = principals.replace('"', "");
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let rest = rest.trim_start();
    // The key starts the rest, or follows the options (as ssh-keygen tries).
    let (options, key_text) = match PublicKey::from_openssh(rest) {
        Ok(_) => ("", rest),
        Err(_) => {
            let (options, after) = take_field(rest)?;
            (options, after.trim_start())
        }
    };
    let key =
        PublicKey::from_openssh(key_text).map_err(|e| format!("not a valid public key ({e})"))?;
    let mut signer = Signer {
        principals,
        key: key.key_data().clone(),
        namespaces: None,
        valid_after: None,
        valid_before: None,
        cert_authority: false,
        line,
    };
    for option in split_options(options)? {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(unquote(value)?)),
            None => (option.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", None) => signer.cert_authority = true,
            ("namespaces", Some(v)) => {
                signer.namespaces = Some(v.split(',').map(str::to_string).collect());
            }
            ("valid-after", Some(v)) => signer.valid_after = Some(parse_time(&v)?),
            ("valid-before", Some(v)) => signer.valid_before = Some(parse_time(&v)?),
            _ => return Err(format!("unknown or malformed option \"{option}\"")),
        }
    }
    Ok(signer)
}

/// The first whitespace-delimited field (a `"`-quoted run may hold
/// spaces), as written, and the rest.
fn take_field(text: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Ok((&text[..i], &text[i..])),
            _ => {}
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    Ok((text, ""))
}

/// Splits `a,b="x,y",c` at the commas outside quotes.
fn split_options(options: &str) -> Result<Vec<String>, String> {
    if options.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in options.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quote in options".into());
    }
    out.push(current);
    Ok(out)
}

fn unquote(value: &str) -> Result<String, String> {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| format!("option value {value} must be quoted"))
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, with an optional `Z`;
/// read as UTC either way.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("bad time \"{text}\" (YYYYMMDD[HHMM[SS]][Z])");
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> u64 {
        digits.get(range).and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute, second) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || year < 1970
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// OpenSSH's `match_pattern_list`: true when `name` matches a pattern and
/// no `!pattern`.
fn match_pattern_list(name: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
        }
    }
    matched
}

/// `*` matches any run, `?` one character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFsKgZR/IMIeXnYY6WnsRan2AS0GrtHKDVOMmqYupoYw";

    fn at(text: &str) -> SystemTime {
        parse_time(text).unwrap()
    }

    #[test]
    fn lines_with_and_without_options() {
        let text = format!(
            "# comment\n\nalice@example.com {KEY} laptop\n\
             bob@x,ops@x namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20300101120000Z\" {KEY}\n\
             ca@example.com cert-authority {KEY}\n"
        );
        let signers = parse(&text).unwrap();
        assert_eq!(signers.len(), 3);
        assert_eq!(signers[0].principals, "alice@example.com");
        assert_eq!(signers[0].line, 3);
        assert!(signers[0].refuses("git", at("20250101")).is_none());
        assert_eq!(signers[1].principals, "bob@x,ops@x");
        let bob = &signers[1];
        assert_eq!(bob.namespaces.as_deref().unwrap(), ["git", "file"]);
        assert!(bob.refuses("git", at("20250101")).is_none());
        assert!(bob
            .refuses("mail", at("20250101"))
            .unwrap()
            .contains("namespaces"));
        assert!(bob
            .refuses("git", at("20231231"))
            .unwrap()
            .contains("not valid yet"));
        assert!(bob
            .refuses("git", at("20300101120000"))
            .unwrap()
            .contains("expired"));
        assert!(signers[2]
            .refuses("git", at("20250101"))
            .unwrap()
            .contains("cert-authority"));
    }

    #[test]
    fn quoted_principals() {
        let signers = parse(&format!("\"a b@x, c@y\" {KEY}")).unwrap();
        assert_eq!(signers[0].principals, "a b@x, c@y");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse(&format!("ok@x {KEY}\nbad@x frobnicate {KEY}\n")).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("frobnicate"), "{}", err.1);
        assert_eq!(parse("x@y ssh-ed25519 notbase64").unwrap_err().0, 1);
        let err = parse(&format!("x@y valid-after=\"2024\" {KEY}")).unwrap_err();
        assert!(err.1.contains("bad time"), "{}", err.1);
        assert!(parse(&format!("x@y namespaces=git {KEY}")).is_err());
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(at("19700101"), UNIX_EPOCH);
        assert_eq!(
            at("20240229123456Z"),
            UNIX_EPOCH + Duration::from_secs(1_709_210_096)
        );
        assert_eq!(
            at("200001011200"),
            UNIX_EPOCH + Duration::from_secs(946_728_000)
        );
        assert!(parse_time("20241301").is_err());
    }

    #[test]
    fn namespace_patterns() {
        let list = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(match_pattern_list("git", &list(&["g*"])));
        assert!(match_pattern_list("git", &list(&["file", "g?t"])));
        assert!(!match_pattern_list("git", &list(&["*", "!git"])));
        assert!(!match_pattern_list("git", &list(&["file"])));
    }
}
