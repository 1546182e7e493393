//! Finding spec files under `<repo>/<apps_dir>/<app>/` and reading each one.

use super::json::parse_json;
use super::model::*;
use super::tree::ReadError;
use super::validate::{Format, Validator};
use super::yaml::parse_yaml;
use crate::term_parse::{parse_terms_bytes, utf8_error_line};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// A spec larger than this is refused unread: specs are small, and a huge
/// file is a mistake or an attack.
pub const SPEC_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// The names a spec file may have, in the order diagnostics list them. An
/// app directory holds exactly one of them.
pub const SPEC_FILES: [&str; 4] = ["app.config", "app.json", "app.yaml", "app.yml"];

/// Why a whole apps directory could not be read. Per-app problems are never
/// this: they go into [`ParseOutput::errors`].
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("apps_dir {0:?} must be a relative path inside the repository")]
    AppsDirOutside(String),
    #[error("apps_dir {0:?} does not exist in the repository")]
    AppsDirMissing(String),
    #[error("apps_dir {0:?} is not a directory")]
    AppsDirNotDir(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Reads every app spec under `root/apps_dir`.
pub fn parse_dir(root: &Path, apps_dir: &str) -> Result<ParseOutput, DirError> {
    let dir = apps_dir_path(root, apps_dir)?;
    let io_err = |source| DirError::Io {
        path: apps_dir.to_string(),
        source,
    };
    let mut entries: Vec<AppDir> = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(io_err)?;
        // A link to a directory looks like an app and is refused later; a
        // link to a file (or a dangling one) is ignored like a plain file.
        let link_to_dir = file_type.is_symlink() && entry.path().is_dir();
        if file_type.is_dir() || link_to_dir {
            entries.push(AppDir {
                name,
                path: entry.path(),
                link: link_to_dir,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let rel_dir = apps_dir.trim_matches('/');
    let read_all = |chunk: &[AppDir]| {
        let mut out = ParseOutput::default();
        for app in chunk {
            read_app(&mut out, app, &relative(rel_dir, &app.name));
        }
        out
    };
    // The files are independent: read them on every core, each thread a
    // contiguous run of apps, joined back in order.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
        .min(entries.len() / APPS_PER_THREAD)
        .max(1);
    let mut out = if threads == 1 {
        read_all(&entries)
    } else {
        let size = entries.len().div_ceil(threads);
        let parts: Vec<ParseOutput> = std::thread::scope(|scope| {
            let mut chunks = entries.chunks(size);
            let first = chunks.next().unwrap_or_default();
            let handles: Vec<_> = chunks.map(|c| scope.spawn(move || read_all(c))).collect();
            let mut parts = vec![read_all(first)];
            for handle in handles {
                // A reader that panicked is a bug: let it surface as one
                // (rustler turns a panic into an exception).
                parts.push(
                    handle
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e)),
                );
            }
            parts
        });
        let mut out = ParseOutput::default();
        for part in parts {
            out.specs.extend(part.specs);
            out.errors.extend(part.errors);
            out.warnings.extend(part.warnings);
        }
        out
    };
    out.specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// At most this many reader threads, each with at least this many apps:
/// below that, starting a thread costs more than it saves.
const MAX_THREADS: usize = 8;
const APPS_PER_THREAD: usize = 64;

/// One directory under `apps_dir`.
struct AppDir {
    name: String,
    path: PathBuf,
    /// A symbolic link (to a directory), as the directory listing says.
    link: bool,
}

/// Resolves `apps_dir`, refusing anything that leaves the repository.
fn apps_dir_path(root: &Path, apps_dir: &str) -> Result<PathBuf, DirError> {
    let rel = Path::new(apps_dir);
    let escapes = rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes || apps_dir.is_empty() {
        return Err(DirError::AppsDirOutside(apps_dir.to_string()));
    }
    let dir = root.join(rel);
    let meta = match fs::metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirError::AppsDirMissing(apps_dir.to_string()))
        }
        Err(source) => {
            return Err(DirError::Io {
                path: apps_dir.to_string(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(DirError::AppsDirNotDir(apps_dir.to_string()));
    }
    // A symlinked apps_dir must still point inside the repository.
    let io_err = |source| DirError::Io {
        path: apps_dir.to_string(),
        source,
    };
    let real_root = fs::canonicalize(root).map_err(io_err)?;
    let real_dir = fs::canonicalize(&dir).map_err(io_err)?;
    if !real_dir.starts_with(&real_root) {
        return Err(DirError::AppsDirOutside(apps_dir.to_string()));
    }
    Ok(real_dir)
}

fn relative(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Reads one app directory into `out`: a spec, or errors, or a warning.
fn read_app(out: &mut ParseOutput, dir: &AppDir, rel: &str) {
    let app = dir.name.as_str();
    let error = |kind, message| diagnostic(app, rel, kind, message);
    if dir.link {
        let message = "app directories must not be symbolic links".to_string();
        out.errors.push(error(ErrorKind::Symlink, message));
        return;
    }
    let mut found = SPEC_FILES.iter().filter_map(|&file| {
        let path = dir.path.join(file);
        fs::symlink_metadata(&path)
            .ok()
            .map(|meta| (file, path, meta))
    });
    let Some((file, path, meta)) = found.next() else {
        let message = format!("no {}: directory ignored", listed(&SPEC_FILES, "or"));
        let warning = diagnostic(app, rel, WarningKind::NoSpecFile, message);
        out.warnings.push(warning);
        return;
    };
    let others: Vec<&str> = found.map(|(file, ..)| file).collect();
    if !others.is_empty() {
        let all: Vec<&str> = std::iter::once(file).chain(others).collect();
        let message = format!("{} exist: keep one", listed(&all, "and"));
        out.errors.push(error(ErrorKind::DuplicateSpec, message));
        return;
    }
    let format = Format::of_file(file);
    let rel_file = format!("{rel}/{file}");
    match read_file(app, &path, &rel_file, format, Ok(meta)) {
        FileResult::Spec(spec, warnings) => {
            out.specs.push(*spec);
            out.warnings.extend(warnings);
        }
        FileResult::Invalid(errors, warnings) => {
            out.errors.extend(errors);
            out.warnings.extend(warnings);
        }
    }
}

/// `a, b and c`, with `and` or `or`.
fn listed(names: &[&str], conjunction: &str) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

/// A diagnostic about a whole app directory or file (no line, no field).
fn diagnostic<K>(app: &str, file: &str, kind: K, message: String) -> Diagnostic<K> {
    Diagnostic {
        app: app.to_string(),
        file: file.to_string(),
        line: None,
        field: String::new(),
        kind,
        message,
    }
}

/// What reading one spec file gives.
#[derive(Debug)]
pub enum FileResult {
    Spec(Box<AppSpec>, Vec<SpecWarning>),
    Invalid(Vec<SpecError>, Vec<SpecWarning>),
}

/// Reads and validates one spec file. `app` is the directory name the spec
/// must carry; `rel_file` is how the file is named in diagnostics, and its
/// extension says the format: `.json`, `.yaml` or `.yml`, else Erlang terms.
pub fn parse_file(app: &str, path: &Path, rel_file: &str) -> FileResult {
    let format = Format::of_file(rel_file);
    read_file(app, path, rel_file, format, fs::symlink_metadata(path))
}

/// [`parse_file`], given the file's `lstat`.
fn read_file(
    app: &str,
    path: &Path,
    rel_file: &str,
    format: Format,
    meta: io::Result<fs::Metadata>,
) -> FileResult {
    let mut v = Validator::new(app, rel_file, format);
    if let Some(root) = read_root(&mut v, path, meta) {
        if let Some(spec) = v.app_spec(&root) {
            return FileResult::Spec(Box::new(spec), v.warnings);
        }
    }
    FileResult::Invalid(v.errors, v.warnings)
}

/// Reads the file's single top-level term, or records why not. `meta` is
/// the file's `lstat`.
fn read_root(
    v: &mut Validator<'_>,
    path: &Path,
    meta: io::Result<fs::Metadata>,
) -> Option<crate::term::Spanned> {
    let whole_file = |v: &mut Validator<'_>, kind, line: Option<u32>, message: String| {
        v.error(None, "", kind, message);
        if let Some(last) = v.errors.last_mut() {
            last.line = line;
        }
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) => {
            whole_file(v, ErrorKind::Io, None, format!("cannot read: {e}"));
            return None;
        }
    };
    if meta.file_type().is_symlink() {
        let message = "spec files must not be symbolic links".to_string();
        whole_file(v, ErrorKind::Symlink, None, message);
        return None;
    }
    if meta.len() > SPEC_FILE_MAX_BYTES {
        let message = format!(
            "{} bytes is over the {SPEC_FILE_MAX_BYTES}-byte limit",
            meta.len()
        );
        whole_file(v, ErrorKind::TooLarge, None, message);
        return None;
    }
    // The size is known: one read fills the buffer, one more sees the end.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let read = fs::File::open(path).and_then(|mut file| {
        let mut bytes = Vec::with_capacity(capacity);
        file.read_to_end(&mut bytes).map(|_| bytes)
    });
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) => {
            whole_file(v, ErrorKind::Io, None, format!("cannot read: {e}"));
            return None;
        }
    };
    let read = match v.format {
        Format::Terms => read_terms(&bytes),
        Format::Json => utf8(&bytes).and_then(parse_json),
        Format::Yaml => utf8(&bytes).and_then(parse_yaml),
    };
    match read {
        Ok(root) => Some(root),
        Err(e) => {
            whole_file(v, e.kind, e.line, e.message);
            None
        }
    }
}

/// The single term of a term file, read as `file:consult/1` reads it: a
/// `coding: latin-1` comment makes any byte a character; otherwise the
/// parser wants UTF-8.
fn read_terms(bytes: &[u8]) -> Result<crate::term::Spanned, ReadError> {
    let mut terms =
        parse_terms_bytes(bytes).map_err(|e| ReadError::syntax(Some(e.line), e.message))?;
    if terms.len() == 1 {
        if let Some(term) = terms.pop() {
            return Ok(term);
        }
    }
    Err(ReadError {
        kind: ErrorKind::NotAMap,
        line: terms.get(1).map(|t| t.line),
        message: format!(
            "a spec file holds exactly one term (a map #{{...}} ending in '.'), found {}",
            terms.len()
        ),
    })
}

/// The text of a JSON or YAML file, which must be UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str, ReadError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = utf8_error_line(bytes, &e);
        ReadError::syntax(Some(line), "the file is not valid UTF-8")
    })
}
