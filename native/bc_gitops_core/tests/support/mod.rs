//! Real servers and repositories on 127.0.0.1 for the git sync tests: an
//! upstream repository driven with the git CLI, and git daemon, lighttpd +
//! git http-backend, sshd and a silent TCP listener, each a child process (or
//! thread) stopped on drop. A missing binary fails the test with a message
//! saying what to install; nothing is skipped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Makes the test process independent of the machine's git and ssh setup:
/// `HOME` and `XDG_CONFIG_HOME` point at an empty directory (libgit2 reads
/// its global config there, once, when it initializes, so this must run
/// before any libgit2 call), the git CLI children ignore the system and
/// global config, and no ssh-agent is reached. Every test calls it first;
/// the first call does the work while the others wait. libgit2 still reads
/// `/etc/gitconfig`: ignoring it needs `git2::opts::set_search_path`, which
/// is `unsafe`.
pub fn isolate() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let home = std::env::temp_dir().join(format!("bc-gitops-test-home-{}", std::process::id()));
        let _ = fs::remove_dir_all(&home);
        fs::create_dir_all(home.join(".config")).unwrap();
        std::env::set_var("HOME", &home);
        std::env::set_var("XDG_CONFIG_HOME", home.join(".config"));
        std::env::set_var("GIT_CONFIG_NOSYSTEM", "1");
        std::env::set_var("GIT_CONFIG_GLOBAL", "/dev/null");
        std::env::remove_var("SSH_AUTH_SOCK");
    });
}

/// Syncs until the sync has recorded the checkout as exact (it does not
/// when a file is as new as its record: see the `snapshot` module).
pub fn sync_until_recorded(opts: &bc_gitops_core::git::SyncOptions) {
    let record = opts.local_path.join(".git/bc-gitops-snapshot");
    for _ in 0..100 {
        bc_gitops_core::git::sync(opts).unwrap();
        if record.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no sync recorded the checkout");
}

/// Runs `work` on its own thread and fails the test if it has not finished
/// within `limit` (a hang guard, not a speed check); re-raises its panic.
pub fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sent nothing and did not panic"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: not done within {limit:?}"),
    }
}

/// Fails the test unless `path` exists, naming the Debian package.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (scripts/setup.sh)"
    );
}

/// Runs a command to completion, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh ed25519 key pair at `path` (and `path.pub`), no passphrase,
/// made by ssh-keygen.
pub fn ssh_keygen(path: &Path, comment: &str) {
    require("/usr/bin/ssh-keygen", "openssh-client");
    run(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        path.to_str().unwrap(),
    ]));
}

/// A git CLI command isolated from the machine's git configuration.
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ]);
    cmd
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    run(git_cmd(dir).args(args))
}

/// An upstream bare repository with a working clone that commits and pushes.
pub struct Upstream {
    pub dir: TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Upstream {
    /// `upstream.git` with one commit on `main` (README.md).
    pub fn new() -> Upstream {
        isolate();
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("upstream.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        git(dir.path(), &["init", "-q", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let up = Upstream { dir, bare, work };
        up.commit(&[("README.md", b"hello\n")], "first");
        up
    }

    /// Writes `files`, commits on the current branch, pushes it; returns the id.
    pub fn commit(&self, files: &[(&str, &[u8])], message: &str) -> String {
        for (name, content) in files {
            let path = self.work.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "--force", "origin", "HEAD"]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Switches the working clone to a (new) branch.
    pub fn switch(&self, branch: &str) {
        git(&self.work, &["checkout", "-q", "-B", branch]);
    }

    /// Tags HEAD (annotated if `message` is given) and pushes the tag.
    pub fn tag(&self, name: &str, message: Option<&str>) {
        match message {
            Some(m) => git(&self.work, &["tag", "-f", "-a", name, "-m", m]),
            None => git(&self.work, &["tag", "-f", name]),
        };
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--force",
                "origin",
                &format!("refs/tags/{name}"),
            ],
        );
    }

    /// Rewrites history: drops the last commit, commits something else, and
    /// force-pushes.
    pub fn rewrite_last(&self, files: &[(&str, &[u8])]) -> String {
        Upstream::rewrite_last_in(&self.work, files)
    }

    /// `rewrite_last` on the working clone at `work` (for hooks that cannot
    /// borrow the `Upstream`).
    pub fn rewrite_last_in(work: &Path, files: &[(&str, &[u8])]) -> String {
        git(work, &["reset", "-q", "--hard", "HEAD~1"]);
        for (name, content) in files {
            fs::write(work.join(name), content).unwrap();
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "--allow-empty", "-m", "rewritten"]);
        git(work, &["push", "-q", "--force", "origin", "HEAD"]);
        git(work, &["rev-parse", "HEAD"])
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// A port nobody listened on a moment ago: only a candidate, since anyone
/// may take it before the server does (`Server::start` retries then).
fn candidate_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port on 127.0.0.1 that refuses connections for as long as this lives:
/// it is held by a connected socket (bound, never listening), so no one can
/// start listening on it meanwhile.
pub struct ClosedPort {
    pub port: u16,
    _held: (TcpStream, TcpStream),
}

pub fn closed_port() -> ClosedPort {
    isolate();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(listener);
    let port = client.local_addr().unwrap().port();
    let probe = TcpStream::connect(("127.0.0.1", port));
    assert!(probe.is_err(), "port {port} should refuse connections");
    ClosedPort {
        port,
        _held: (client, accepted),
    }
}

/// Whether process `pid` itself has a TCP socket listening on `port` (read
/// from /proc: a connect could reach someone else's listener).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|table| {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                && fields[3] == "0A"
                && inodes.contains(fields[9])
        })
    })
}

/// A child server process, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub name: &'static str,
    pub log: Option<PathBuf>,
}

impl Server {
    /// Starts the server `make` builds for a port, and waits until that very
    /// process listens on it. A server that exits first (most often: the
    /// port was taken meanwhile) is started again on another port.
    pub fn start(
        name: &'static str,
        log: Option<PathBuf>,
        mut make: impl FnMut(u16) -> Command,
    ) -> Server {
        isolate();
        let mut failures = Vec::new();
        for _attempt in 0..10 {
            let port = candidate_port();
            let mut cmd = make(port);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}; is it installed?"));
            let mut server = Server {
                child,
                port,
                name,
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if listens(server.child.id(), port) {
                    return server;
                }
                if let Some(status) = server.child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = server.child.stderr.take() {
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    let log = server
                        .log
                        .as_ref()
                        .and_then(|l| fs::read_to_string(l).ok())
                        .unwrap_or_default();
                    failures.push(format!(
                        "port {port}: exited with {status}: {stderr}\n{log}"
                    ));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} did not listen on port {port} within 30 s"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{name} never started: {}", failures.join("\n"));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git daemon` exporting every repository under `base`. Started as the
/// `git-daemon` binary itself: `git daemon` would fork it, and killing the
/// wrapper would leave the daemon running.
pub fn git_daemon(base: &Path) -> Server {
    let exec_path = run(git_cmd(base).arg("--exec-path"));
    let daemon = Path::new(&exec_path).join("git-daemon");
    assert!(daemon.exists(), "{} is missing (git)", daemon.display());
    Server::start("git daemon", None, |port| {
        let mut cmd = Command::new(&daemon);
        cmd.current_dir(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "--export-all",
                &format!("--base-path={}", base.display()),
                &format!("--port={port}"),
                "--listen=127.0.0.1",
                &base.display().to_string(),
            ]);
        cmd
    })
}

/// How a lighttpd instance serves git.
#[derive(Default)]
pub struct HttpSetup<'a> {
    /// (certificate chain PEM, private key PEM) for HTTPS.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// (user, password) required through basic auth.
    pub basic_auth: Option<(&'a str, &'a str)>,
    /// Serve git only to requests whose `Host` header starts with this
    /// (a name-based virtual host).
    pub only_host: Option<&'a str>,
}

/// lighttpd running `git http-backend` as CGI under `/git/`, for the
/// repositories under `root`; its config and logs live in `dir`.
pub fn lighttpd(root: &Path, dir: &Path, setup: &HttpSetup<'_>) -> Server {
    require("/usr/sbin/lighttpd", "lighttpd");
    let exec_path = run(git_cmd(root).arg("--exec-path"));
    let backend = Path::new(&exec_path).join("git-http-backend");
    assert!(backend.exists(), "{} is missing (git)", backend.display());
    let docroot = dir.join("www");
    fs::create_dir_all(&docroot).unwrap();
    let log = dir.join("lighttpd-error.log");
    let mut modules = vec!["mod_alias", "mod_setenv", "mod_cgi"];
    let mut extra = String::new();
    if let Some((cert, key)) = setup.tls {
        require("/usr/lib/lighttpd/mod_openssl.so", "lighttpd-mod-openssl");
        modules.push("mod_openssl");
        extra.push_str(&format!(
            "ssl.engine = \"enable\"\nssl.pemfile = \"{}\"\nssl.privkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some((user, password)) = setup.basic_auth {
        modules.push("mod_auth");
        modules.push("mod_authn_file");
        let users = dir.join("users");
        fs::write(&users, format!("{user}:{password}\n")).unwrap();
        extra.push_str(&format!(
            "auth.backend = \"plain\"\nauth.backend.plain.userfile = \"{}\"\n\
             auth.require = ( \"/git/\" => ( \"method\" => \"basic\", \"realm\" => \"git\", \"require\" => \"valid-user\" ) )\n",
            users.display()
        ));
    }
    let modules = modules
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config_path = dir.join("lighttpd.conf");
    let start = |port: u16| {
        let config = format!(
        "server.modules = ( {modules} )\n\
         server.document-root = \"{docroot}\"\n\
         server.bind = \"127.0.0.1\"\n\
         server.port = {port}\n\
         server.errorlog = \"{log}\"\n\
         alias.url = ( \"/git\" => \"{backend}\" )\n\
         $HTTP[\"host\"] =~ \"^{host}\" {{\n\
         $HTTP[\"url\"] =~ \"^/git\" {{\n\
           cgi.assign = ( \"\" => \"\" )\n\
           setenv.add-environment = ( \"GIT_PROJECT_ROOT\" => \"{root}\", \"GIT_HTTP_EXPORT_ALL\" => \"1\", \"GIT_CONFIG_NOSYSTEM\" => \"1\", \"GIT_CONFIG_GLOBAL\" => \"/dev/null\" )\n\
         }}\n\
         }}\n{extra}",
        host = setup.only_host.unwrap_or(""),
        docroot = docroot.display(),
        log = log.display(),
        backend = backend.display(),
        root = root.display(),
    );
        fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new("/usr/sbin/lighttpd");
        cmd.arg("-D").arg("-f").arg(&config_path);
        cmd
    };
    Server::start("lighttpd", Some(log.clone()), start)
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert, key).
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// lighttpd serving the repositories under `root` over HTTPS with a fresh
/// self-signed certificate for `localhost` (made in `dir`): (server, cert).
pub fn https_self_signed(root: &Path, dir: &Path) -> (Server, PathBuf) {
    let (cert, key) = self_signed(dir, "server");
    let setup = HttpSetup {
        tls: Some((&cert, &key)),
        ..HttpSetup::default()
    };
    (lighttpd(root, dir, &setup), cert)
}

/// A CA and a leaf for `localhost` signed by it: (ca cert, leaf cert, leaf key).
pub fn ca_and_leaf(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    ca_and_leaf_for(dir, "DNS:localhost,IP:127.0.0.1")
}

/// A CA and a leaf with subjectAltName `san` (e.g. `DNS:other.example`)
/// signed by it: (ca cert, leaf cert, leaf key).
pub fn ca_and_leaf_for(dir: &Path, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, _ca_key) = self_signed(dir, "ca");
    let ca_key = dir.join("ca.key");
    let (csr, leaf, leaf_key) = (
        dir.join("leaf.csr"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&leaf_key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("leaf.ext");
    fs::write(
        &ext,
        format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&leaf));
    (ca, leaf, leaf_key)
}

/// sshd on 127.0.0.1 with its own host key, accepting the keys in
/// `authorized_keys` for the current user.
pub struct Sshd {
    pub server: Server,
    pub user: String,
    /// `ssh-ed25519 AAAA...` of the host key.
    pub host_key: String,
}

/// An ed25519 key pair made by ssh-keygen: the private key path.
pub fn ssh_key(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    require("/usr/bin/ssh-keygen", "openssh-client");
    let key = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&key));
    key
}

pub fn sshd(dir: &Path, authorized: &[&Path]) -> Sshd {
    require("/usr/sbin/sshd", "openssh-server");
    fs::create_dir_all("/run/sshd").unwrap();
    let host_key = ssh_key(dir, "host_key", "");
    let mut keys = String::new();
    for key in authorized {
        keys.push_str(&fs::read_to_string(key.with_extension("pub")).unwrap());
    }
    let authorized_keys = dir.join("authorized_keys");
    fs::write(&authorized_keys, keys).unwrap();
    let user = run(Command::new("id").arg("-un"));
    let config_path = dir.join("sshd_config");
    let start = |port: u16| {
        let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {keys}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         AllowUsers {user}\nLogLevel ERROR\n",
        host = host_key.display(),
        dir = dir.display(),
        keys = authorized_keys.display(),
    );
        fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(&config_path);
        cmd
    };
    let server = Server::start("sshd", None, start);
    let public = fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let host_key = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Sshd {
        server,
        user,
        host_key,
    }
}

/// A TCP listener that accepts connections and never says anything; it
/// reads (and drops) what clients send, and records each connection's end
/// (EOF or reset) as the server sees it.
pub struct Silent {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        isolate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (flag, accepts, ends) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&closed),
        );
        let thread = thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true).unwrap();
                    open.push(stream);
                    accepts.fetch_add(1, Ordering::SeqCst);
                }
                open.retain_mut(|stream| loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break false,
                    }
                });
                ends.store(
                    accepts.load(Ordering::SeqCst) - open.len(),
                    Ordering::SeqCst,
                );
                thread::sleep(Duration::from_millis(5));
            }
        });
        Silent {
            port,
            accepted,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (at most `limit`, a hang guard) until every accepted connection
    /// has been closed by the client side; false if some stayed open.
    pub fn all_closed_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            // Read `closed` first: it never exceeds the `accepted` seen after.
            let closed = self.closed.load(Ordering::SeqCst);
            if closed == self.accepted() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP forwarder in front of `upstream_port` that calls `before(n)` as it
/// accepts its `n`th connection (from 0), before connecting upstream: a hook
/// to change the server between two connections of one sync.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream_port: u16, before: impl FnMut(usize) + Send + 'static) -> Proxy {
        isolate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let before = Mutex::new(before);
        let thread = thread::spawn(move || {
            let mut n = 0;
            let mut pumps = Vec::new();
            let mut sockets = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                (before.lock().unwrap())(n);
                n += 1;
                let server = TcpStream::connect(("127.0.0.1", upstream_port)).unwrap();
                sockets.push(client.try_clone().unwrap());
                sockets.push(server.try_clone().unwrap());
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    pumps.push(thread::spawn(move || {
                        let _ = io::copy(&mut &from, &mut &to);
                        let _ = to.shutdown(Shutdown::Write);
                    }));
                }
            }
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
            for pump in pumps {
                let _ = pump.join();
            }
        });
        Proxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A small tmpfs mounted for the test, unmounted on drop (needs root).
pub struct Tmpfs {
    pub dir: TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the disk-full test needs root and mount): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// `n` bytes that do not compress.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads a checked-out file.
pub fn read(path: &Path, name: &str) -> String {
    fs::read_to_string(path.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The HEAD commit of a checkout, via the git CLI (an independent check).
pub fn checkout_head(path: &Path) -> String {
    git(path, &["rev-parse", "HEAD"])
}

/// `git status --porcelain --ignored` of a checkout: empty when exact.
pub fn status(path: &Path) -> String {
    git(
        path,
        &[
            "status",
            "--porcelain",
            "--ignored",
            "--untracked-files=all",
        ],
    )
}
