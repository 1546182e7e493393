//! libgit2's process-wide settings, written behind the one `unsafe` block of
//! the workspace.
//!
//! libgit2 keeps its connect and server timeouts and its trusted CA
//! certificates in C globals that every connection reads; git2's setters are
//! `unsafe` because a write must not race those reads. So every sync holds a
//! read lock on [`STATE`] from before its first libgit2 call to after its
//! last ([`enter`]), and a setting is written only under the write lock.
//!
//! - **Timeouts.** libgit2 gives up on a connect after [`Timeouts::connect`]
//!   and on any wait for the server (a read or a write; ssh included) after
//!   [`Timeouts::server`], whatever a sync's own deadline says. Set by
//!   [`configure`] (the NIF does it when it loads), otherwise the first sync
//!   sets the defaults.
//! - **CA certificates.** Additive and process-wide, as libgit2 keeps them:
//!   the first sync that names a `ca_file` adds its certificates to the
//!   system store, and from then on they are trusted for every HTTPS remote
//!   of the process. A file whose content changed is added again (the old
//!   certificates stay trusted until the process ends).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::error::GitError;

/// libgit2's network timeouts, one value for the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for a TCP connection to the server.
    pub connect: Duration,
    /// Longest wait for the server to answer (or take more data) once
    /// connected: a server silent for this long is cut off.
    pub server: Duration,
}

impl Default for Timeouts {
    /// 15 s to connect, 30 s of silence. A git server that is preparing a
    /// pack sends keep-alives every few seconds, so a healthy one is never
    /// silent that long.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            server: Duration::from_secs(30),
        }
    }
}

/// What has been written to libgit2 so far.
struct State {
    timeouts: Option<Timeouts>,
    /// CA files added, with the content they had then.
    ca_files: Vec<(PathBuf, Vec<u8>)>,
}

static STATE: RwLock<State> = RwLock::new(State {
    timeouts: None,
    ca_files: Vec::new(),
});

/// Held by a sync for its whole run: no setting changes meanwhile.
pub(crate) struct Shared {
    state: RwLockReadGuard<'static, State>,
}

impl Shared {
    /// The timeouts libgit2 uses during this sync.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.state.timeouts.unwrap_or_default()
    }
}

/// Sets libgit2's timeouts for the process (waiting for running syncs to
/// end first). The NIF calls it when it loads.
pub fn configure(timeouts: Timeouts) -> Result<(), GitError> {
    let mut state = write();
    set(&mut state, Setting::Timeouts(timeouts))?;
    state.timeouts = Some(timeouts);
    Ok(())
}

/// Called by a sync before it touches libgit2: writes what it needs that is
/// not written yet (the default timeouts, its `ca_file`), then holds the
/// settings still until the returned guard is dropped. An unreadable or
/// certificate-less `ca_file` is [`GitError::InvalidInput`].
pub(crate) fn enter(ca_file: Option<&Path>) -> Result<Shared, GitError> {
    let ca = ca_file
        .map(|path| {
            fs::read(path)
                .map(|content| (path.to_path_buf(), content))
                .map_err(|e| GitError::InvalidInput(format!("ca_file {}: {e}", path.display())))
        })
        .transpose()?;
    let ready = |state: &State| {
        state.timeouts.is_some() && ca.as_ref().is_none_or(|ca| state.ca_files.contains(ca))
    };
    let state = read();
    if ready(&state) {
        return Ok(Shared { state });
    }
    drop(state);
    {
        // Never wait for the write lock while holding the read lock.
        let mut state = write();
        if state.timeouts.is_none() {
            set(&mut state, Setting::Timeouts(Timeouts::default()))?;
            state.timeouts = Some(Timeouts::default());
        }
        if let Some(ca) = ca.as_ref().filter(|ca| !state.ca_files.contains(ca)) {
            set(&mut state, Setting::CaFile(&ca.0))?;
            state.ca_files.push(ca.clone());
        }
    }
    // Settings are only ever added, so what was just written is still there.
    Ok(Shared { state: read() })
}

fn read() -> RwLockReadGuard<'static, State> {
    STATE.read().unwrap_or_else(PoisonError::into_inner)
}

fn write() -> RwLockWriteGuard<'static, State> {
    STATE.write().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Copy)]
enum Setting<'a> {
    Timeouts(Timeouts),
    CaFile(&'a Path),
}

/// Writes one libgit2 setting. Takes the state behind the write lock, which
/// nothing else can lend: proof that no sync is running.
fn set(_exclusive: &mut State, setting: Setting<'_>) -> Result<(), GitError> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    #[allow(unsafe_code)]
    // SAFETY: git2 marks these setters `unsafe` because they write C globals
    // of libgit2 (its timeouts, the certificate store of its one OpenSSL
    // context) with no synchronization, and every libgit2 connection reads
    // them. They run only here, under the write lock of `STATE`; every sync
    // holds its read lock from before its first libgit2 call to after its
    // last (`enter`), and nothing else in the process uses libgit2's
    // network code. So no read of these globals can race the write. The
    // arguments are plain integers and a path git2 turns into a checked C
    // string.
    let result = unsafe {
        match setting {
            Setting::Timeouts(t) => {
                git2::opts::set_server_connect_timeout_in_milliseconds(millis(t.connect))
                    .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(millis(t.server)))
            }
            Setting::CaFile(path) => git2::opts::set_ssl_cert_file(path),
        }
    };
    result.map_err(|e| match setting {
        Setting::CaFile(path) => GitError::InvalidInput(format!(
            "ca_file {}: no PEM certificate could be read from it ({})",
            path.display(),
            e.message()
        )),
        Setting::Timeouts(_) => GitError::Other(format!("setting libgit2's timeouts: {e}")),
    })
}
