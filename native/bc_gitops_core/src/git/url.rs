//! Remote URL parsing: which transport a URL uses and which host and port it
//! reaches (for the SSH host-key check and the credentials' host), or which
//! directory a local remote is.

use super::error::GitError;
use super::redact::redact_url;

/// How a remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A path or `file://` URL: no network.
    Local,
    /// `git://` (git daemon).
    Git,
    /// Smart HTTP.
    Http,
    /// Smart HTTP over TLS.
    Https,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
}

/// A parsed remote URL, as far as the checks need it. It keeps no user
/// part, which may be `user:password` or a token.
#[derive(Debug, Clone)]
pub(crate) struct RemoteUrl {
    pub transport: Transport,
    /// Host without IPv6 brackets; empty for local remotes.
    pub host: String,
    pub port: u16,
    /// The directory of a local remote, as written (not decoded).
    local_path: Option<String>,
}

impl RemoteUrl {
    /// Parses `url`; errors name the URL redacted.
    pub(crate) fn parse(url: &str) -> Result<RemoteUrl, GitError> {
        let invalid =
            |why: &str| GitError::InvalidInput(format!("remote URL {}: {why}", redact_url(url)));
        if url.is_empty() {
            return Err(invalid("empty"));
        }
        let local = |path: &str| RemoteUrl {
            transport: Transport::Local,
            host: String::new(),
            port: 0,
            local_path: Some(path.to_string()),
        };
        if let Some(pos) = url.find("://") {
            let scheme = url[..pos].to_ascii_lowercase();
            let (transport, default_port) = match scheme.as_str() {
                "file" => return Ok(local(&url[pos + 3..])),
                "git" => (Transport::Git, 9418),
                "http" => (Transport::Http, 80),
                "https" => (Transport::Https, 443),
                "ssh" | "git+ssh" | "ssh+git" => (Transport::Ssh, 22),
                _ => {
                    return Err(invalid(
                        "unsupported scheme (use file, git, http, https or ssh)",
                    ))
                }
            };
            let rest = &url[pos + 3..];
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) =
                split_host_port(hostport).ok_or_else(|| invalid("bad host or port"))?;
            if host.is_empty() {
                return Err(invalid("no host"));
            }
            return Ok(RemoteUrl {
                transport,
                host,
                port: port.unwrap_or(default_port),
                local_path: None,
            });
        }
        // Neither a URL nor scp-like: a local path. scp-like needs a ':' before
        // any '/', as git itself decides.
        let colon = match url.find(':') {
            Some(c) if !url[..c].contains('/') => c,
            _ => return Ok(local(url)),
        };
        // `[user@host:port]:path`, the scp form that carries a port.
        if let Some(inner) = url.strip_prefix('[') {
            let close = inner
                .find("]:")
                .ok_or_else(|| invalid("bad [host:port] form"))?;
            let userhost = &inner[..close];
            let hostport = userhost.rsplit_once('@').map_or(userhost, |(_, h)| h);
            let (host, port) =
                split_host_port(hostport).ok_or_else(|| invalid("bad host or port"))?;
            return Ok(ssh(host, port.unwrap_or(22)));
        }
        let (userhost, path) = (&url[..colon], &url[colon + 1..]);
        let host = userhost.rsplit_once('@').map_or(userhost, |(_, h)| h);
        if host.is_empty() || path.is_empty() {
            return Err(invalid("scp-like URL needs host:path"));
        }
        Ok(ssh(host.to_string(), 22))
    }

    /// The directory of a local remote (a path or `file://` URL).
    pub(crate) fn local_dir(&self) -> Option<&str> {
        self.local_path.as_deref()
    }

    /// The name this host has in a known_hosts file: `host`, or `[host]:port`
    /// off port 22.
    pub(crate) fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// An scp-like ssh remote.
fn ssh(host: String, port: u16) -> RemoteUrl {
    RemoteUrl {
        transport: Transport::Ssh,
        host,
        port,
        local_path: None,
    }
}

/// Splits `host[:port]` or `[v6]:port`; `None` if the port is not a number.
fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let host = v6[..close].to_string();
        let rest = &v6[close + 1..];
        if rest.is_empty() || rest == ":" {
            return Some((host, None));
        }
        let port = rest.strip_prefix(':')?.parse().ok()?;
        return Some((host, Some(port)));
    }
    match hostport.rsplit_once(':') {
        Some((host, "")) => Some((host.to_string(), None)),
        Some((host, port)) => Some((host.to_string(), Some(port.parse().ok()?))),
        None => Some((hostport.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classifies() {
        let u = RemoteUrl::parse("/srv/x.git").unwrap();
        assert_eq!(
            (u.transport, u.local_dir()),
            (Transport::Local, Some("/srv/x.git"))
        );
        let u = RemoteUrl::parse("file:///srv/my%20x").unwrap();
        assert_eq!(
            (u.transport, u.local_dir()),
            (Transport::Local, Some("/srv/my%20x"))
        );

        let u = RemoteUrl::parse("git://example.org/x.git").unwrap();
        assert_eq!(
            (u.transport, u.host.as_str(), u.port),
            (Transport::Git, "example.org", 9418)
        );

        let u = RemoteUrl::parse("https://u:t@[::1]:8443/x").unwrap();
        assert_eq!(
            (u.transport, u.host.as_str(), u.port),
            (Transport::Https, "::1", 8443)
        );

        let u = RemoteUrl::parse("ssh://git@h:2222/~/x.git").unwrap();
        assert_eq!(u.known_hosts_name(), "[h]:2222");

        let u = RemoteUrl::parse("git@github.com:o/r.git").unwrap();
        assert_eq!((u.transport, u.port), (Transport::Ssh, 22));
        assert_eq!(u.known_hosts_name(), "github.com");

        let u = RemoteUrl::parse("[root@127.0.0.1:2200]:/srv/x.git").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 2200));

        assert!(RemoteUrl::parse("ftp://h/x").is_err());
        assert!(RemoteUrl::parse("ssh://h:notaport/x").is_err());
    }

    #[test]
    fn debug_holds_no_user_part() {
        for url in [
            "https://bob:hunter2@example.org/x.git",
            "http://hunter2@example.org/x.git",
            "ssh://bob:hunter2@example.org:2222/x.git",
            "[bob:hunter2@example.org:2222]:x.git",
        ] {
            let parsed = RemoteUrl::parse(url).unwrap();
            let debug = format!("{parsed:?} {parsed:#?}");
            assert!(!debug.contains("hunter2"), "{url}: {debug}");
            assert!(debug.contains("example.org"), "{url}: {debug}");
        }
    }
}
