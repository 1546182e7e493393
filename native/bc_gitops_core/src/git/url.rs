//! Remote URL parsing: which transport a URL uses, which host and port it
//! reaches, and how to point it at the local deadline relay instead.

use std::fmt;

use super::error::GitError;
use super::redact::redact_url;

/// How a remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A path or `file://` URL: no network, no relay.
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

/// A parsed remote URL, as far as the relay and the host-key check need it.
/// `Debug` masks the user part (it may be `user:password`, or a token).
#[derive(Clone)]
pub(crate) struct RemoteUrl {
    pub transport: Transport,
    /// Host without IPv6 brackets; empty for local remotes.
    pub host: String,
    pub port: u16,
    /// The user part kept for ssh rewrites (`None` if absent).
    user: Option<String>,
    /// Everything after the authority (`ssh://`, `git://`) or after the `:`
    /// (scp-like), passed on verbatim.
    path: String,
    scp: bool,
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
            user: None,
            path: path.to_string(),
            scp: false,
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
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let (user, hostport) = match authority.rfind('@') {
                Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
                None => (None, authority),
            };
            let (host, port) =
                split_host_port(hostport).ok_or_else(|| invalid("bad host or port"))?;
            if host.is_empty() {
                return Err(invalid("no host"));
            }
            return Ok(RemoteUrl {
                transport,
                host,
                port: port.unwrap_or(default_port),
                user: user.map(str::to_string),
                path: path.to_string(),
                scp: false,
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
            let (userhost, path) = (&inner[..close], &inner[close + 2..]);
            let (user, hostport) = match userhost.rfind('@') {
                Some(at) => (Some(&userhost[..at]), &userhost[at + 1..]),
                None => (None, userhost),
            };
            let (host, port) =
                split_host_port(hostport).ok_or_else(|| invalid("bad host or port"))?;
            return Ok(scp_url(user, host, port.unwrap_or(22), path));
        }
        let (userhost, path) = (&url[..colon], &url[colon + 1..]);
        let (user, host) = match userhost.rfind('@') {
            Some(at) => (Some(&userhost[..at]), &userhost[at + 1..]),
            None => (None, userhost),
        };
        if host.is_empty() || path.is_empty() {
            return Err(invalid("scp-like URL needs host:path"));
        }
        Ok(scp_url(user, host.to_string(), 22, path))
    }

    /// The directory of a local remote (a path or `file://` URL).
    pub(crate) fn local_dir(&self) -> Option<&str> {
        (self.transport == Transport::Local).then_some(self.path.as_str())
    }

    /// Whether this remote goes over the network (and so through the relay).
    pub(crate) fn is_network(&self) -> bool {
        self.transport != Transport::Local
    }

    /// The URL libgit2 should use when the relay at `relay_port` stands in
    /// for the real server: `git://`, http and ssh connect to the relay
    /// directly; https keeps its URL and uses the relay as a proxy.
    pub(crate) fn relayed(&self, original: &str, relay_port: u16) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match self.transport {
            Transport::Git => format!("git://127.0.0.1:{relay_port}{}", self.path),
            Transport::Http => format!("http://{user}127.0.0.1:{relay_port}{}", self.path),
            Transport::Ssh if self.scp => format!("[{user}127.0.0.1:{relay_port}]:{}", self.path),
            Transport::Ssh => format!("ssh://{user}127.0.0.1:{relay_port}{}", self.path),
            Transport::Local | Transport::Https => original.to_string(),
        }
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

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("transport", &self.transport)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user.as_ref().map(|_| "***"))
            .field("path", &self.path)
            .field("scp", &self.scp)
            .finish()
    }
}

fn scp_url(user: Option<&str>, host: String, port: u16, path: &str) -> RemoteUrl {
    RemoteUrl {
        transport: Transport::Ssh,
        host,
        port,
        user: user.map(str::to_string),
        path: path.to_string(),
        scp: true,
    }
}

/// Splits `host[:port]` or `[v6]:port`; `None` if the port is not a number.
pub(crate) fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
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
    fn classifies_and_rewrites() {
        let u = RemoteUrl::parse("/srv/x.git").unwrap();
        assert_eq!(u.transport, Transport::Local);
        assert_eq!(
            RemoteUrl::parse("file:///srv/x").unwrap().transport,
            Transport::Local
        );

        let u = RemoteUrl::parse("git://example.org/x.git").unwrap();
        assert_eq!(
            (u.transport, u.host.as_str(), u.port),
            (Transport::Git, "example.org", 9418)
        );
        assert_eq!(u.relayed("", 5), "git://127.0.0.1:5/x.git");

        let u = RemoteUrl::parse("https://u:t@[::1]:8443/x").unwrap();
        assert_eq!(
            (u.transport, u.host.as_str(), u.port),
            (Transport::Https, "::1", 8443)
        );

        let u = RemoteUrl::parse("ssh://git@h:2222/~/x.git").unwrap();
        assert_eq!(u.known_hosts_name(), "[h]:2222");
        assert_eq!(u.relayed("", 7), "ssh://git@127.0.0.1:7/~/x.git");

        let u = RemoteUrl::parse("git@github.com:o/r.git").unwrap();
        assert_eq!((u.transport, u.port), (Transport::Ssh, 22));
        assert_eq!(u.known_hosts_name(), "github.com");
        assert_eq!(u.relayed("", 7), "[git@127.0.0.1:7]:o/r.git");

        let u = RemoteUrl::parse("[root@127.0.0.1:2200]:/srv/x.git").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 2200));
        assert_eq!(u.relayed("", 9), "[root@127.0.0.1:9]:/srv/x.git");

        assert!(RemoteUrl::parse("ftp://h/x").is_err());
    }

    #[test]
    fn debug_masks_the_user_part() {
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
        assert!(RemoteUrl::parse("ssh://h:notaport/x").is_err());
    }
}
