//! The typed spec model. It maps one to one onto the records of
//! `include/bc_gitops.hrl`.

use crate::term::Spanned;

/// Where an application's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    Hex,
    Git,
    Release,
}

/// A build tool that overrides detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildTool {
    Rebar3,
    Mix,
    Make,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthType {
    Http,
    Tcp,
    Custom,
}

/// `#source_spec{}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    pub source_type: SourceType,
    pub url: Option<String>,
    pub git_ref: Option<String>,
    /// Lowercase hex.
    pub sha256: Option<String>,
    pub build: Option<BuildTool>,
}

/// `#health_spec{}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub health_type: HealthType,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub module: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// Default interval between two health checks, in milliseconds.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;
/// Default time a health check may take, in milliseconds.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5_000;

/// Where an app runs in a cluster: every member, or the members whose
/// node name matches one of the patterns (`*` matches any run of
/// characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    All,
    Nodes(Vec<String>),
}

/// How a cluster rolls a change of the app out: batches of at most
/// `max_parallel` members (the cluster's default when absent), and `pause_ms`
/// to wait after each batch (0 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    pub max_parallel: Option<u64>,
    pub pause_ms: Option<u64>,
}

/// Where an app runs: in the node that runs bc_gitops, or in a BEAM node
/// of its own (a guest) that bc_gitops starts and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    Embedded,
    Vm,
}

/// The guest of an `isolation => vm` app. Absent keys take the runtime's
/// defaults (no memory limit, the emulator's schedulers, the app's name as
/// the prefix, no extra arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmConfig {
    /// Megabytes (MiB).
    pub memory_limit: Option<u64>,
    /// Schedulers online (`+S N:N`).
    pub scheduler_limit: Option<u64>,
    /// The start of the guest's node name.
    pub node_prefix: Option<String>,
    /// `erl` arguments, appended after bc_gitops's own.
    pub extra_args: Option<Vec<String>>,
}

/// The largest `memory_limit`, in MiB (16 TiB): more is a typo, and the
/// byte count must fit the OS limit.
pub const VM_MEMORY_LIMIT_MAX_MB: u64 = 16 * 1024 * 1024;
/// The most schedulers a BEAM node can run.
pub const VM_SCHEDULER_LIMIT_MAX: u64 = 1024;
/// The longest `node_prefix`: the node name adds a unique suffix and the
/// host to it, and must stay within an atom's 255 characters.
pub const VM_NODE_PREFIX_MAX_BYTES: usize = 64;

/// The longest node-name pattern: a node name is an atom of at most 255
/// characters.
pub const PLACEMENT_PATTERN_MAX_BYTES: usize = 255;

/// `#app_spec{}`, plus where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub source: SourceSpec,
    /// Application env: atom keys (by text, already validated) and values
    /// exactly as `file:consult/1` would give them. Later duplicates have
    /// already been dropped, as an Erlang map literal drops them.
    pub env: Vec<(String, Spanned)>,
    pub health: Option<HealthSpec>,
    pub depends_on: Vec<String>,
    pub placement: Placement,
    pub rollout: Option<Rollout>,
    pub isolation: Isolation,
    /// Only with `isolation => vm` (else dropped, with a warning).
    pub vm_config: Option<VmConfig>,
    /// The spec file, relative to the repository root.
    pub file: String,
}

/// What went wrong with a spec; a fixed set, so that callers can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The file is larger than [`super::SPEC_FILE_MAX_BYTES`].
    TooLarge,
    /// The file is not valid Erlang term syntax, JSON or YAML, or uses what
    /// a reader refuses: nesting over 100 levels; in YAML, an alias, a tag
    /// outside the core schema, `.inf` or `.nan`.
    Syntax,
    /// The file holds something other than exactly one map (one term, one
    /// YAML document).
    NotAMap,
    /// A required field is absent.
    MissingField,
    /// A field has a value of the wrong type.
    WrongType,
    /// A field has a value of the right type that breaks a rule.
    InvalidValue,
    /// `name` differs from the spec's directory name.
    NameMismatch,
    /// A directory holds more than one of `app.config`, `app.json`,
    /// `app.yaml` and `app.yml`.
    DuplicateSpec,
    /// A spec file or app directory is a symbolic link.
    Symlink,
}

impl ErrorKind {
    /// The name the Erlang side sees (as an atom).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Syntax => "syntax",
            ErrorKind::NotAMap => "not_a_map",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::NameMismatch => "name_mismatch",
            ErrorKind::DuplicateSpec => "duplicate_spec",
            ErrorKind::Symlink => "symlink",
        }
    }
}

/// Something worth telling the user that does not stop the spec loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// A key this version does not know: ignored, so that specs written for
    /// newer versions still load.
    UnknownKey,
    /// An app directory without `app.config`, `app.json`, `app.yaml` or
    /// `app.yml`.
    NoSpecFile,
    /// A dependency listed twice.
    DuplicateDependency,
    /// A field that the spec's source type does not use.
    UnusedField,
    /// `source.ref` looks like an abbreviated commit SHA, which is read as
    /// a branch or tag name.
    AbbreviatedCommit,
}

impl WarningKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::UnknownKey => "unknown_key",
            WarningKind::NoSpecFile => "no_spec_file",
            WarningKind::DuplicateDependency => "duplicate_dependency",
            WarningKind::UnusedField => "unused_field",
            WarningKind::AbbreviatedCommit => "abbreviated_commit",
        }
    }
}

/// A problem found in one app's spec, located as precisely as possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic<K> {
    /// The app directory's name (not trusted to be a valid app name).
    pub app: String,
    /// The spec file (or directory), relative to the repository root.
    pub file: String,
    /// 1-based line, when known: term and YAML files give one for every
    /// field, JSON only for a syntax error.
    pub line: Option<u32>,
    /// Dotted path of the field, e.g. `source.sha256`; empty for the file as
    /// a whole.
    pub field: String,
    pub kind: K,
    pub message: String,
}

pub type SpecError = Diagnostic<ErrorKind>;
pub type SpecWarning = Diagnostic<WarningKind>;

impl<K> std::fmt::Display for Diagnostic<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything read from an apps directory.
#[derive(Debug, Default)]
pub struct ParseOutput {
    /// Valid specs, sorted by name.
    pub specs: Vec<AppSpec>,
    /// Sorted by app, then file, then line.
    pub errors: Vec<SpecError>,
    pub warnings: Vec<SpecWarning>,
}

impl ParseOutput {
    /// Names of the app directories whose spec is invalid.
    pub fn invalid_apps(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.errors.iter().map(|e| e.app.as_str()).collect();
        names.dedup();
        names
    }
}
