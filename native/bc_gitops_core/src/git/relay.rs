//! A per-operation TCP relay on 127.0.0.1 that gives every network operation
//! a deadline which really cancels it.
//!
//! Why: libgit2 blocks in `connect`/`recv` with no timeout by default, and
//! git2 0.21 only exposes its server timeouts through `unsafe` process-global
//! setters (this workspace forbids `unsafe`). Progress callbacks cannot help
//! before the first byte arrives. So libgit2 talks to this relay instead of
//! the server, and at the deadline the relay shuts every socket down:
//! libgit2's blocked call returns at once and the operation fails as timed
//! out.
//!
//! - `git://` and ssh: the URL is rewritten to the relay's address.
//! - https: the relay is an HTTP `CONNECT` proxy, so TLS (and its host name
//!   check) stays end to end with the real server.
//! - http: libgit2 1.9 does not send plain-http requests through a proxy, so
//!   the URL is rewritten too, and the relay puts the real `Host` header back
//!   in each request (name-based virtual hosts keep working).
//!
//! The relay only ever connects to the one host and port of the remote URL.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::url::split_host_port;

/// Relay threads (watchdog, acceptor, per-connection) now running.
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many relay threads are running in the process. Every one is joined
/// before [`super::sync`] returns (only a name lookup still in the system
/// resolver may outlive it; that is not a relay thread: see `Resolver`).
pub(crate) fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

/// Counts one relay thread from before it is spawned until its closure ends
/// (dropped with the closure if the spawn fails).
struct Counted;

impl Counted {
    fn new() -> Counted {
        LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Spawns a counted relay thread.
fn spawn<F>(name: &str, work: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let counted = Counted::new();
    thread::Builder::new().name(name.into()).spawn(move || {
        let _counted = counted;
        work();
    })
}

/// How the client (libgit2) reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every connection goes straight to the remote host (`git://`, ssh).
    Direct,
    /// Like `Direct`, putting the real `Host` header back in requests (http).
    HttpHost,
    /// Connections open with `CONNECT host:port` (https); only the remote
    /// host is allowed.
    Connect,
}

/// A running relay; dropping it closes every connection and stops it.
pub(crate) struct Relay {
    port: u16,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    host: String,
    port: u16,
    mode: Mode,
    /// (header line libgit2 sends, header line the server must get).
    host_rewrite: Option<(Vec<u8>, Vec<u8>)>,
    deadline: Instant,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    stopped: bool,
    timed_out: bool,
    /// Clones of every open socket, so that stopping can shut them down.
    sockets: Vec<TcpStream>,
    upstream_error: Option<String>,
}

/// How long the accept loop sleeps when no client is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// How often a wait for the name resolver checks for a stop.
const RESOLVE_POLL: Duration = Duration::from_millis(10);
/// How long a possible start of the `Host` line is held back waiting for
/// the rest (libgit2 writes a request head in one go).
const HOLD_BACK: Duration = Duration::from_millis(20);
/// The longest proxy request head we accept.
const MAX_HEAD: usize = 64 * 1024;

impl Relay {
    /// Starts a relay to `host:port` that cuts everything at `deadline`.
    pub(crate) fn start(host: &str, port: u16, mode: Mode, deadline: Instant) -> io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let local_port = listener.local_addr()?.port();
        // libgit2 names the relay in `Host`; the server must see its own name.
        let host_rewrite = (mode == Mode::HttpHost).then(|| {
            let real = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let real = if port == 80 {
                real
            } else {
                format!("{real}:{port}")
            };
            (
                format!("\r\nHost: 127.0.0.1:{local_port}\r\n").into_bytes(),
                format!("\r\nHost: {real}\r\n").into_bytes(),
            )
        });
        let shared = Arc::new(Shared {
            host: host.to_string(),
            port,
            mode,
            host_rewrite,
            deadline,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let mut relay = Relay {
            port: local_port,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let watcher = Arc::clone(&shared);
        relay
            .threads
            .push(spawn("git-relay-watchdog", move || watcher.watch())?);
        let acceptor = Arc::clone(&shared);
        relay.threads.push(spawn("git-relay-accept", move || {
            acceptor.accept_loop(&listener)
        })?);
        Ok(relay)
    }

    /// The port on 127.0.0.1 that libgit2 must connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection now and accepts no more: nothing further
    /// reaches the server.
    pub(crate) fn cut(&self) {
        self.shared.stop(false);
    }

    /// Whether the deadline passed and the relay cut the connections.
    pub(crate) fn timed_out(&self) -> bool {
        self.shared.lock().timed_out
    }

    /// Why the real server could not be reached, if it could not.
    pub(crate) fn upstream_error(&self) -> Option<String> {
        self.shared.lock().upstream_error.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop(false);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Stops accepting and shuts every socket down.
    fn stop(&self, timed_out: bool) {
        let mut state = self.lock();
        state.timed_out |= timed_out && !state.stopped;
        state.stopped = true;
        for socket in state.sockets.drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.wake.notify_all();
    }

    /// Waits for the deadline (or a stop) and cuts everything at the deadline.
    fn watch(&self) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let left = self.remaining();
            if left.is_zero() {
                drop(state);
                self.stop(true);
                return;
            }
            state = match self.wake.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Keeps a clone of `socket` for shutdown; false once stopped.
    fn register(&self, socket: &TcpStream) -> bool {
        let mut state = self.lock();
        if state.stopped {
            return false;
        }
        match socket.try_clone() {
            Ok(clone) => {
                state.sockets.push(clone);
                true
            }
            Err(_) => false,
        }
    }

    fn record_upstream_error(&self, message: String) {
        let mut state = self.lock();
        if state.upstream_error.is_none() && !state.stopped {
            state.upstream_error = Some(message);
        }
    }

    /// Accepts until stopped, then joins every connection thread (whose
    /// sockets the stop has shut down, so they end promptly).
    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let mut connections: Vec<JoinHandle<()>> = Vec::new();
        loop {
            if self.lock().stopped {
                break;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    if client.set_nonblocking(false).is_err() || !self.register(&client) {
                        continue;
                    }
                    let shared = Arc::clone(self);
                    match spawn("git-relay-conn", move || shared.serve(client)) {
                        Ok(handle) => connections.push(handle),
                        Err(_) => {
                            self.record_upstream_error("relay could not start a thread".into())
                        }
                    }
                }
                Err(_) => thread::sleep(ACCEPT_POLL),
            }
        }
        for connection in connections {
            let _ = connection.join();
        }
    }

    fn serve(&self, mut client: TcpStream) {
        let upstream = match self.mode {
            Mode::Direct | Mode::HttpHost => self.connect_upstream(),
            Mode::Connect => self.connect_handshake(&mut client),
        };
        if let Some(server) = upstream {
            pump(client, server, self.host_rewrite.clone());
        } else {
            let _ = client.shutdown(Shutdown::Both);
        }
    }

    /// The server's addresses: an IP literal as is; a name through the
    /// system resolver, on a thread of its own waited for only until the
    /// deadline or a stop (`getaddrinfo` cannot be cancelled).
    fn resolve(&self) -> Option<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Some(vec![SocketAddr::new(ip, self.port)]);
        }
        let answer = Arc::new((Mutex::new(None), Condvar::new()));
        let slot = Arc::clone(&answer);
        let (host, port) = (self.host.clone(), self.port);
        let spawned = thread::Builder::new()
            .name("git-relay-resolve".into())
            .spawn(move || {
                let found = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>);
                let (lock, ready) = &*slot;
                *lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(found);
                ready.notify_all();
            });
        if let Err(e) = spawned {
            self.record_upstream_error(format!("could not resolve {}: {e}", self.host));
            return None;
        }
        let (lock, ready) = &*answer;
        let mut found = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(result) = found.take() {
                return match result {
                    Ok(addrs) => Some(addrs),
                    Err(e) => {
                        self.record_upstream_error(format!("could not resolve {}: {e}", self.host));
                        None
                    }
                };
            }
            let left = self.remaining();
            if left.is_zero() || self.lock().stopped {
                return None;
            }
            // Short waits: a stop does not signal this condition variable.
            found = match ready.wait_timeout(found, left.min(RESOLVE_POLL)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Connects to the real server within the time left.
    fn connect_upstream(&self) -> Option<TcpStream> {
        let target = format!("{}:{}", self.host, self.port);
        let addrs = self.resolve()?;
        let mut last = None;
        for addr in addrs {
            let left = self.remaining();
            if left.is_zero() || self.lock().stopped {
                return None;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(server) => {
                    return self.register(&server).then_some(server);
                }
                Err(e) => last = Some(e),
            }
        }
        let why = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
        self.record_upstream_error(format!("could not connect to {target}: {why}"));
        None
    }

    /// Reads the `CONNECT` request, checks it targets our host, connects and
    /// acknowledges it.
    fn connect_handshake(&self, client: &mut TcpStream) -> Option<TcpStream> {
        let _ = client.set_read_timeout(Some(self.remaining().max(Duration::from_millis(1))));
        let head = read_head(client)?;
        let _ = client.set_read_timeout(None);
        let line_end = head.iter().position(|&b| b == b'\r')?;
        let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
        let mut words = line.split(' ');
        let (method, authority) = (words.next()?, words.next()?);
        let target = split_host_port(authority).filter(|_| method.eq_ignore_ascii_case("CONNECT"));
        let allowed = target.as_ref().is_some_and(|(host, port)| {
            host.eq_ignore_ascii_case(&self.host) && *port == Some(self.port)
        });
        if !allowed {
            self.record_upstream_error(format!(
                "the connection went to {authority}; only {}:{} is followed (redirects to another host are not)",
                self.host, self.port
            ));
            let _ = client.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return None;
        }
        let Some(mut server) = self.connect_upstream() else {
            let _ = client.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return None;
        };
        let body_start = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(head.len(), |p| p + 4);
        let sent = client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .and_then(|()| server.write_all(&head[body_start..]));
        sent.ok().map(|()| server)
    }
}

/// Reads until the end of an HTTP request head (and whatever followed it in
/// the same reads).
fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        let n = client.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

/// Copies both ways until each side has finished, passing half-closes on;
/// the client's bytes get `rewrite` (from, to) applied.
fn pump(client: TcpStream, server: TcpStream, rewrite: Option<(Vec<u8>, Vec<u8>)>) {
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upload = spawn("git-relay-up", move || {
        match rewrite {
            Some((from, to)) => {
                let _ = copy_replacing(&client_read, &server_write, &from, &to);
            }
            None => {
                let _ = io::copy(&mut &client_read, &mut &server_write);
            }
        }
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut &server, &mut &client);
    let _ = client.shutdown(Shutdown::Write);
    if let Ok(upload) = upload {
        let _ = upload.join();
    }
}

/// Copies `from` to `to`, replacing every occurrence of `pattern` (which may
/// straddle reads) with `replacement`. A tail that could start a match is
/// held back only until the next read, or for `HOLD_BACK` if none comes.
fn copy_replacing(
    mut from: &TcpStream,
    mut to: &TcpStream,
    pattern: &[u8],
    replacement: &[u8],
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        from.set_read_timeout((!pending.is_empty()).then_some(HOLD_BACK))?;
        match from.read(&mut chunk) {
            Ok(0) => return to.write_all(&pending),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                to.write_all(&pending)?;
                pending.clear();
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        while let Some(at) = pending.windows(pattern.len()).position(|w| w == pattern) {
            to.write_all(&pending[..at])?;
            to.write_all(replacement)?;
            pending.drain(..at + pattern.len());
        }
        let held = (1..pattern.len().min(pending.len() + 1))
            .rev()
            .find(|&k| pending.ends_with(&pattern[..k]))
            .unwrap_or(0);
        let flush = pending.len() - held;
        to.write_all(&pending[..flush])?;
        pending.drain(..flush);
    }
}
