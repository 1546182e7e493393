//! Keeps credentials out of every message the git module produces: URLs lose
//! their user-info, and configured secrets are masked wherever libgit2 (or a
//! server) echoed them back.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a masked credential is replaced with.
const MASK: &str = "***";

/// Returns `url` with its credentials masked: `https://user:token@host/x`
/// becomes `https://***@host/x`.
///
/// A password always goes, and so does a bare user name in an http(s) URL
/// (it is often a token there); the user of an `ssh://`, `git://` or scp-like
/// `git@host:path` URL is an account name, not a secret, and is kept because
/// it helps to read the error.
pub fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(pos) => {
            let (scheme, rest) = url.split_at(pos + 3);
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let scheme_name = scheme.trim_end_matches("://").to_ascii_lowercase();
                    let keeps_user = !userinfo.contains(':')
                        && !scheme_name.starts_with("http")
                        && !scheme_name.is_empty();
                    if keeps_user {
                        url.to_string()
                    } else {
                        format!("{scheme}{MASK}{}{tail}", &authority[at..])
                    }
                }
                None => url.to_string(),
            }
        }
        // scp-like `user@host:path`: only a password (never valid there, but
        // possible in a typo) would be a secret.
        None => match (url.find('@'), url.find(':')) {
            (Some(at), Some(colon)) if colon < at => format!("{MASK}{}", &url[at..]),
            _ => url.to_string(),
        },
    }
}

/// Masks the URLs and the configured secrets in free text (error messages).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so that a secret containing another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secrets (empty ones are ignored) and the
    /// credentials embedded in `url`.
    pub(crate) fn new<'a>(url: &str, secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut all: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            if !s.is_empty() {
                all.push(s.to_string());
                let encoded = percent_encode(s);
                if encoded != s {
                    all.push(encoded);
                }
            }
        };
        for secret in secrets {
            add(secret);
        }
        if let Some((user, password)) = url_userinfo(url) {
            let is_http = url.to_ascii_lowercase().starts_with("http");
            if let Some(password) = password {
                add(&percent_decode(password));
                add(password);
            }
            if is_http {
                add(&percent_decode(user));
                add(user);
            }
        } else if let Some(password) = scp_password(url) {
            add(&percent_decode(password));
            add(password);
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Redactor { secrets: all }
    }

    /// `text` with every URL's credentials and every secret masked.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = redact_urls_in_text(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

/// Applies [`redact_url`] to every `scheme://...` token inside `text`.
fn redact_urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        // The scheme is the run of URL-scheme characters before "://".
        let start = rest[..pos]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let end = rest[pos..]
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '>' || c == '<')
            .map_or(rest.len(), |i| pos + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The `(user, password)` of a `scheme://user[:password]@host` URL.
fn url_userinfo(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    })
}

/// The password of a scp-like `user:password@host:path` or
/// `[user:password@host:port]:path` remote (never valid there, but possible
/// in a typo, and then a secret all the same).
fn scp_password(url: &str) -> Option<&str> {
    if url.contains("://") {
        return None;
    }
    let rest = url.strip_prefix('[').unwrap_or(url);
    let userinfo = &rest[..rest.find('@')?];
    if userinfo.contains('/') {
        return None;
    }
    userinfo.split_once(':').map(|(_, password)| password)
}

/// Every byte but the unreserved characters of RFC 3986, as a URL may carry
/// the secret.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// `%XX` escapes decoded, as in a URL's user-info or a `file://` path; a
/// malformed escape is kept as written (as libgit2 does), bytes that are not
/// UTF-8 become U+FFFD.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://user:token@host/x"),
            "https://***@host/x"
        );
        assert_eq!(redact_url("https://token@host/x"), "https://***@host/x");
        assert_eq!(redact_url("https://host/x"), "https://host/x");
        assert_eq!(redact_url("ssh://git@host:22/x"), "ssh://git@host:22/x");
        assert_eq!(redact_url("ssh://git:pw@host/x"), "ssh://***@host/x");
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(redact_url("/srv/repo.git"), "/srv/repo.git");
        assert_eq!(
            redact_url("https://a@b@host/x?q=1"),
            "https://***@host/x?q=1"
        );
    }

    #[test]
    fn percent_escapes_round_trip() {
        assert_eq!(percent_encode("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(percent_decode("/srv/my%20repo.git"), "/srv/my repo.git");
        // A malformed escape is kept as written, as libgit2 does.
        assert_eq!(percent_decode("100%zz%2"), "100%zz%2");
    }

    #[test]
    fn text_loses_urls_and_secrets() {
        let r = Redactor::new("https://bob:s%2Fcret@host/x", ["tok3n", "", "alice"]);
        let text = "failed for 'https://bob:s%2Fcret@host/x': tok3n alice s/cret";
        let out = r.redact(text);
        assert_eq!(out, "failed for 'https://***@host/x': *** *** ***");

        let r = Redactor::new("[bob:hunter2@host:22]:x.git", []);
        assert_eq!(
            r.redact("[bob:hunter2@host:22]:x.git"),
            "[bob:***@host:22]:x.git"
        );
    }
}
