//! Turns a parsed spec (a term tree, from either file format) into an
//! [`AppSpec`], collecting every problem rather than stopping at the first.

use super::model::*;
use super::sealed;
use crate::term::{Spanned, Term};

/// The longest app name: an atom may hold at most 255 characters.
pub const APP_NAME_MAX_BYTES: usize = 255;

/// `[a-z][a-z0-9_]*`, at most [`APP_NAME_MAX_BYTES`] bytes.
pub fn is_app_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= APP_NAME_MAX_BYTES
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Whether `text` can be an atom on every supported OTP: at most 255
/// characters, all in Latin-1. (OTP 25's NIF API makes atoms from Latin-1
/// only; wider atoms are rejected with a clear error rather than turned
/// into something else.)
pub fn is_atom_text(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= 255 && text.chars().all(|c| u32::from(c) <= 0xFF)
}

/// The first atom in `value` that [`is_atom_text`] refuses, if any.
pub(crate) fn wide_atom(value: &Spanned) -> Option<&Spanned> {
    let mut stack = vec![value];
    while let Some(node) = stack.pop() {
        match &node.term {
            Term::Atom(name) if !name.is_empty() && !is_atom_text(name) => return Some(node),
            Term::List { items, tail } => {
                stack.extend(items.iter());
                stack.extend(tail.iter().map(|t| t.as_ref()));
            }
            Term::Tuple(items) => stack.extend(items.iter()),
            Term::Map(entries) => {
                for (k, v) in entries {
                    stack.push(k);
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    None
}

/// How the spec was written. JSON and YAML have no atoms, so there text
/// stands for names and enum values, and env keys become atoms only once
/// validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Terms,
    Json,
    Yaml,
}

impl Format {
    /// The format of a spec file, by its name's extension.
    pub fn of_file(name: &str) -> Format {
        if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            Format::Yaml
        } else {
            Format::Terms
        }
    }

    /// What a map key is in this format, for messages.
    fn key_kind(self) -> &'static str {
        match self {
            Format::Terms => "an atom key",
            Format::Json | Format::Yaml => "a string key",
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "source",
    "env",
    "health",
    "depends_on",
    "placement",
    "rollout",
    "isolation",
    "vm_config",
];
const SOURCE_KEYS: &[&str] = &["type", "url", "ref", "sha256", "build"];
const HEALTH_KEYS: &[&str] = &["type", "port", "path", "module", "interval", "timeout"];
const ROLLOUT_KEYS: &[&str] = &["max_parallel", "pause"];
const VM_CONFIG_KEYS: &[&str] = &[
    "memory_limit",
    "scheduler_limit",
    "node_prefix",
    "extra_args",
];

/// Collects the diagnostics of one spec file.
pub(super) struct Validator<'a> {
    pub app: &'a str,
    pub file: &'a str,
    pub format: Format,
    pub errors: Vec<SpecError>,
    pub warnings: Vec<SpecWarning>,
}

impl<'a> Validator<'a> {
    pub fn new(app: &'a str, file: &'a str, format: Format) -> Self {
        Validator {
            app,
            file,
            format,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn line(&self, at: &Spanned) -> Option<u32> {
        // JSON values carry no position (line 0).
        (at.line > 0).then_some(at.line)
    }

    pub fn error(&mut self, at: Option<&Spanned>, field: &str, kind: ErrorKind, message: String) {
        let line = at.and_then(|s| self.line(s));
        self.errors.push(Diagnostic {
            app: self.app.to_string(),
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            kind,
            message,
        });
    }

    fn warn(&mut self, at: &Spanned, field: &str, kind: WarningKind, message: String) {
        let line = self.line(at);
        self.warnings.push(Diagnostic {
            app: self.app.to_string(),
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            kind,
            message,
        });
    }

    fn wrong_type(&mut self, at: &Spanned, field: &str, expected: &str) {
        let message = format!("expected {expected}, found {}", at.term.kind_name());
        self.error(Some(at), field, ErrorKind::WrongType, message);
    }

    fn invalid(&mut self, at: &Spanned, field: &str, message: String) {
        self.error(Some(at), field, ErrorKind::InvalidValue, message);
    }

    /// Validates the whole spec. `None` when any error was found (they are
    /// in `self.errors`).
    pub fn app_spec(&mut self, root: &Spanned) -> Option<AppSpec> {
        let fields = self.fields(root, "", TOP_KEYS)?;
        let name = match fields.required(self, root, "name") {
            Some(at) => self.app_name_field(at, "name"),
            None => None,
        };
        if let Some(name) = &name {
            if name != self.app {
                let message = format!(
                    "name {name} does not match its directory {}: they must be equal",
                    self.app
                );
                let at = fields.get("name");
                self.error(at, "name", ErrorKind::NameMismatch, message);
            }
        }
        let version = fields
            .required(self, root, "version")
            .and_then(|at| self.non_empty_text(at, "version"));
        let description = fields
            .get("description")
            .and_then(|at| self.text(at, "description"));
        let source = fields
            .required(self, root, "source")
            .and_then(|at| self.source(at));
        let env = match fields.get("env") {
            Some(at) => self.env(at),
            None => Some(Vec::new()),
        };
        let health = match fields.get("health") {
            Some(at) => self.health(at).map(Some),
            None => Some(None),
        };
        let depends_on = match fields.get("depends_on") {
            Some(at) => self.depends_on(at, name.as_deref()),
            None => Some(Vec::new()),
        };
        let placement = match fields.get("placement") {
            Some(at) => self.placement(at),
            None => Some(Placement::All),
        };
        let rollout = match fields.get("rollout") {
            Some(at) => self.rollout(at).map(Some),
            None => Some(None),
        };
        let isolation = match fields.get("isolation") {
            Some(at) => self.one_of(
                at,
                "isolation",
                &[("embedded", Isolation::Embedded), ("vm", Isolation::Vm)],
            ),
            None => Some(Isolation::Embedded),
        };
        let vm_config = match fields.get("vm_config") {
            Some(at) => self.vm_config(at).map(Some),
            None => Some(None),
        };
        if let (Some(Isolation::Embedded), Some(at)) = (isolation, fields.get("vm_config")) {
            let message = "vm_config is used only with isolation => vm; it is ignored".to_string();
            self.warn(at, "vm_config", WarningKind::UnusedField, message);
        }
        if !self.errors.is_empty() {
            return None;
        }
        let isolation = isolation?;
        Some(AppSpec {
            name: name?,
            version: version?,
            description,
            source: source?,
            env: env?,
            health: health?,
            depends_on: depends_on?,
            placement: placement?,
            rollout: rollout?,
            isolation,
            vm_config: vm_config?.filter(|_| isolation == Isolation::Vm),
            file: self.file.to_string(),
        })
    }

    /// Reads a map's entries by key, warning about keys it does not know.
    fn fields<'t>(&mut self, at: &'t Spanned, prefix: &str, known: &[&str]) -> Option<Fields<'t>> {
        let Term::Map(entries) = &at.term else {
            if prefix.is_empty() {
                let message = format!(
                    "a spec must be a map #{{...}}, found {}",
                    at.term.kind_name()
                );
                self.error(Some(at), "", ErrorKind::NotAMap, message);
            } else {
                self.wrong_type(at, prefix, "a map");
            }
            return None;
        };
        let mut fields = Fields {
            prefix: prefix.to_string(),
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = self.key_text(key) else {
                let field = if prefix.is_empty() { "(key)" } else { prefix };
                let message = format!(
                    "expected {}, found {}",
                    self.format.key_kind(),
                    key.term.kind_name()
                );
                self.error(Some(key), field, ErrorKind::WrongType, message);
                continue;
            };
            let path = join(prefix, name);
            if known.contains(&name) {
                // A later duplicate wins, as in an Erlang map literal.
                fields.entries.retain(|(k, _)| *k != name);
                fields.entries.push((name, value));
            } else {
                let message = format!("unknown key {name} is ignored");
                self.warn(key, &path, WarningKind::UnknownKey, message);
            }
        }
        Some(fields)
    }

    /// The text of a map key: an atom in term files, a string in JSON and
    /// YAML.
    fn key_text<'t>(&self, key: &'t Spanned) -> Option<&'t str> {
        match (&key.term, self.format) {
            (Term::Atom(name), Format::Terms) => Some(name),
            (Term::Binary(bytes), Format::Json | Format::Yaml) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// A name-like value: an atom in term files (text accepted too), a
    /// string in JSON and YAML.
    fn symbol(&mut self, at: &Spanned, field: &str, expected: &str) -> Option<String> {
        if let Term::Atom(name) = &at.term {
            return Some(name.clone());
        }
        match at.term.as_text() {
            Some(text) => Some(text),
            None => {
                self.wrong_type(at, field, expected);
                None
            }
        }
    }

    fn app_name_field(&mut self, at: &Spanned, field: &str) -> Option<String> {
        let name = self.symbol(at, field, "an app name (an atom)")?;
        if is_app_name(&name) {
            Some(name)
        } else {
            let shown: String = name.chars().take(64).collect();
            let message = format!(
                "{shown:?} is not an app name: it must match [a-z][a-z0-9_]* and be at most {APP_NAME_MAX_BYTES} bytes"
            );
            self.invalid(at, field, message);
            None
        }
    }

    fn text(&mut self, at: &Spanned, field: &str) -> Option<String> {
        match at.term.as_text() {
            Some(text) => Some(text),
            None => {
                self.wrong_type(at, field, "a UTF-8 binary or string");
                None
            }
        }
    }

    fn non_empty_text(&mut self, at: &Spanned, field: &str) -> Option<String> {
        let text = self.text(at, field)?;
        if text.trim().is_empty() {
            self.invalid(at, field, "must not be empty".to_string());
            return None;
        }
        Some(text)
    }

    fn one_of<T: Copy>(&mut self, at: &Spanned, field: &str, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let expected = format!("one of {}", names.join(" | "));
        let value = self.symbol(at, field, &expected)?;
        match choices.iter().find(|(n, _)| *n == value) {
            Some((_, choice)) => Some(*choice),
            None => {
                let shown: String = value.chars().take(64).collect();
                self.invalid(at, field, format!("{shown:?} is not {expected}"));
                None
            }
        }
    }

    fn positive_int(&mut self, at: &Spanned, field: &str) -> Option<u64> {
        match at.term {
            Term::Int(n) if n > 0 => u64::try_from(n).ok(),
            Term::Int(n) => {
                self.invalid(at, field, format!("must be positive, found {n}"));
                None
            }
            _ => {
                self.wrong_type(at, field, "a positive integer");
                None
            }
        }
    }

    fn source(&mut self, at: &Spanned) -> Option<SourceSpec> {
        let fields = self.fields(at, "source", SOURCE_KEYS)?;
        let source_type = fields.required(self, at, "type").and_then(|t| {
            self.one_of(
                t,
                "source.type",
                &[
                    ("hex", SourceType::Hex),
                    ("git", SourceType::Git),
                    ("release", SourceType::Release),
                ],
            )
        });
        let url = fields
            .get("url")
            .and_then(|u| self.non_empty_text(u, "source.url"));
        let git_ref = fields.get("ref").and_then(|r| self.git_ref(r));
        let sha256 = fields.get("sha256").and_then(|s| self.sha256(s));
        let build = fields.get("build").and_then(|b| {
            self.one_of(
                b,
                "source.build",
                &[
                    ("rebar3", BuildTool::Rebar3),
                    ("mix", BuildTool::Mix),
                    ("make", BuildTool::Make),
                ],
            )
        });
        let source_type = source_type?;
        let needs_url = matches!(source_type, SourceType::Git | SourceType::Release);
        if needs_url && fields.get("url").is_none() {
            self.missing(at, "source.url", "a git or release source needs url");
        }
        if source_type == SourceType::Release {
            if fields.get("sha256").is_none() {
                self.missing(at, "source.sha256", "a release source needs sha256");
            }
            if let (Some(url), Some(url_at)) = (&url, fields.get("url")) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    let message = "a release url must start with http:// or https://".to_string();
                    self.invalid(url_at, "source.url", message);
                }
            }
        }
        self.unused(
            &fields,
            "url",
            source_type == SourceType::Hex,
            "a hex source",
        );
        self.unused(
            &fields,
            "ref",
            source_type != SourceType::Git,
            "a non-git source",
        );
        self.unused(
            &fields,
            "sha256",
            source_type != SourceType::Release,
            "a non-release source",
        );
        Some(SourceSpec {
            source_type,
            url,
            git_ref,
            sha256,
            build,
        })
    }

    /// A branch, a tag or a full commit SHA, by git's rules for ref names.
    fn git_ref(&mut self, at: &Spanned) -> Option<String> {
        let text = self.non_empty_text(at, "source.ref")?;
        if let Some(why) = bad_ref_name(&text) {
            let message = format!("{text:?} is not a branch, tag or commit: {why}");
            self.invalid(at, "source.ref", message);
            return None;
        }
        let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && (7..40).contains(&text.len()) {
            let message = format!(
                "{text:?} looks like an abbreviated commit; only a full 40-digit SHA is read as a commit"
            );
            self.warn(at, "source.ref", WarningKind::AbbreviatedCommit, message);
        }
        Some(text)
    }

    fn unused(&mut self, fields: &Fields<'_>, key: &str, unused: bool, what: &str) {
        if let (true, Some(at)) = (unused, fields.get(key)) {
            let message = format!("{what} does not use {key}; it is ignored");
            self.warn(at, &join("source", key), WarningKind::UnusedField, message);
        }
    }

    fn missing(&mut self, map: &Spanned, field: &str, message: &str) {
        self.error(
            Some(map),
            field,
            ErrorKind::MissingField,
            message.to_string(),
        );
    }

    fn sha256(&mut self, at: &Spanned) -> Option<String> {
        let text = self.text(at, "source.sha256")?;
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(text.to_ascii_lowercase())
        } else {
            let message = format!(
                "must be 64 hex digits, found {} characters",
                text.chars().count()
            );
            self.invalid(at, "source.sha256", message);
            None
        }
    }

    fn health(&mut self, at: &Spanned) -> Option<HealthSpec> {
        let fields = self.fields(at, "health", HEALTH_KEYS)?;
        let health_type = fields.required(self, at, "type").and_then(|t| {
            self.one_of(
                t,
                "health.type",
                &[
                    ("http", HealthType::Http),
                    ("tcp", HealthType::Tcp),
                    ("custom", HealthType::Custom),
                ],
            )
        });
        let port = fields.get("port").and_then(|p| self.port(p));
        let path = fields.get("path").and_then(|p| {
            let path = self.text(p, "health.path")?;
            if path.starts_with('/') {
                Some(path)
            } else {
                self.invalid(p, "health.path", "must start with /".to_string());
                None
            }
        });
        let module = fields.get("module").and_then(|m| self.module(m));
        let interval_ms = match fields.get("interval") {
            Some(i) => self.positive_int(i, "health.interval"),
            None => Some(DEFAULT_HEALTH_INTERVAL_MS),
        };
        let timeout_ms = match fields.get("timeout") {
            Some(t) => self.positive_int(t, "health.timeout"),
            None => Some(DEFAULT_HEALTH_TIMEOUT_MS),
        };
        let health_type = health_type?;
        match health_type {
            HealthType::Http | HealthType::Tcp if fields.get("port").is_none() => {
                self.missing(at, "health.port", "an http or tcp check needs port");
            }
            HealthType::Custom if fields.get("module").is_none() => {
                self.missing(at, "health.module", "a custom check needs module");
            }
            _ => {}
        }
        Some(HealthSpec {
            health_type,
            port,
            path,
            module,
            interval_ms: interval_ms?,
            timeout_ms: timeout_ms?,
        })
    }

    fn port(&mut self, at: &Spanned) -> Option<u16> {
        match at.term {
            Term::Int(n) => match u16::try_from(n) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    self.invalid(at, "health.port", format!("must be in 1..65535, found {n}"));
                    None
                }
            },
            _ => {
                self.wrong_type(at, "health.port", "an integer in 1..65535");
                None
            }
        }
    }

    fn module(&mut self, at: &Spanned) -> Option<String> {
        let module = self.symbol(at, "health.module", "a module name (an atom)")?;
        if !is_atom_text(&module) {
            let message = "must be 1 to 255 Latin-1 characters".to_string();
            self.invalid(at, "health.module", message);
            return None;
        }
        Some(module)
    }

    fn env(&mut self, at: &Spanned) -> Option<Vec<(String, Spanned)>> {
        let Term::Map(entries) = &at.term else {
            self.wrong_type(at, "env", "a map");
            return None;
        };
        let mut env: Vec<(String, Spanned)> = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (key, value) in entries {
            match self.key_text(key) {
                Some(name) if is_atom_text(name) => {
                    if let Some(bad) = wide_atom(value) {
                        let message = format!(
                            "atom {} has characters above U+00FF, which OTP 25 cannot make from a NIF; use a binary",
                            bad.term
                        );
                        self.invalid(bad, &join("env", name), message);
                        ok = false;
                        continue;
                    }
                    let value = match sealed::env_value(value, self.format) {
                        Ok(None) => value.clone(),
                        Ok(Some(encrypted)) => encrypted,
                        Err((bad, message)) => {
                            self.invalid(bad, &join("env", name), message);
                            ok = false;
                            continue;
                        }
                    };
                    env.retain(|(k, _)| k != name);
                    env.push((name.to_string(), value));
                }
                Some(_) => {
                    let message = "env keys must be 1 to 255 Latin-1 characters".to_string();
                    self.invalid(key, "env", message);
                    ok = false;
                }
                None => {
                    self.wrong_type(key, "env", self.format.key_kind());
                    ok = false;
                }
            }
        }
        ok.then_some(env)
    }

    /// `all`, or a non-empty list of node-name patterns.
    fn placement(&mut self, at: &Spanned) -> Option<Placement> {
        const EXPECTED: &str = "all or a list of node-name patterns";
        if let Term::List { items, tail: None } = &at.term {
            // A charlist is text, not a list of patterns.
            if at.term.as_text().is_none() || items.is_empty() {
                return self.patterns(at, items);
            }
        }
        match self.symbol(at, "placement", EXPECTED)?.as_str() {
            "all" => Some(Placement::All),
            other => {
                let shown: String = other.chars().take(64).collect();
                let message = format!("{shown:?} is not {EXPECTED}; write a pattern in a list");
                self.invalid(at, "placement", message);
                None
            }
        }
    }

    fn patterns(&mut self, at: &Spanned, items: &[Spanned]) -> Option<Placement> {
        if items.is_empty() {
            let message =
                "an empty list places the app nowhere; remove the app instead".to_string();
            self.invalid(at, "placement", message);
            return None;
        }
        let mut patterns = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let field = format!("placement[{i}]");
            let Some(pattern) = self.text(item, &field) else {
                ok = false;
                continue;
            };
            let printable = pattern
                .chars()
                .all(|c| !c.is_control() && !c.is_whitespace());
            if pattern.is_empty() || pattern.len() > PLACEMENT_PATTERN_MAX_BYTES || !printable {
                let message = format!(
                    "a node-name pattern is 1 to {PLACEMENT_PATTERN_MAX_BYTES} bytes without spaces or control characters"
                );
                self.invalid(item, &field, message);
                ok = false;
            } else {
                patterns.push(pattern);
            }
        }
        ok.then_some(Placement::Nodes(patterns))
    }

    fn rollout(&mut self, at: &Spanned) -> Option<Rollout> {
        let fields = self.fields(at, "rollout", ROLLOUT_KEYS)?;
        let max_parallel = match fields.get("max_parallel") {
            Some(m) => Some(self.positive_int(m, "rollout.max_parallel")?),
            None => None,
        };
        let pause_ms = match fields.get("pause") {
            Some(p) => match p.term {
                Term::Int(n) if n >= 0 => u64::try_from(n).ok(),
                Term::Int(n) => {
                    self.invalid(p, "rollout.pause", format!("must be 0 or more, found {n}"));
                    return None;
                }
                _ => {
                    self.wrong_type(p, "rollout.pause", "milliseconds (an integer, 0 or more)");
                    return None;
                }
            },
            None => None,
        };
        Some(Rollout {
            max_parallel,
            pause_ms,
        })
    }

    fn vm_config(&mut self, at: &Spanned) -> Option<VmConfig> {
        let fields = self.fields(at, "vm_config", VM_CONFIG_KEYS)?;
        let memory_limit = match fields.get("memory_limit") {
            Some(m) => Some(self.bounded_int(
                m,
                "vm_config.memory_limit",
                VM_MEMORY_LIMIT_MAX_MB,
                "megabytes",
            )?),
            None => None,
        };
        let scheduler_limit = match fields.get("scheduler_limit") {
            Some(s) => Some(self.bounded_int(
                s,
                "vm_config.scheduler_limit",
                VM_SCHEDULER_LIMIT_MAX,
                "schedulers",
            )?),
            None => None,
        };
        let node_prefix = match fields.get("node_prefix") {
            Some(p) => Some(self.node_prefix(p)?),
            None => None,
        };
        let extra_args = match fields.get("extra_args") {
            Some(a) => Some(self.extra_args(a)?),
            None => None,
        };
        Some(VmConfig {
            memory_limit,
            scheduler_limit,
            node_prefix,
            extra_args,
        })
    }

    /// A positive integer of at most `max`.
    fn bounded_int(&mut self, at: &Spanned, field: &str, max: u64, unit: &str) -> Option<u64> {
        let n = self.positive_int(at, field)?;
        if n > max {
            self.invalid(at, field, format!("at most {max} {unit}, found {n}"));
            return None;
        }
        Some(n)
    }

    /// The start of a node name: letters, digits, `_` and `-`.
    fn node_prefix(&mut self, at: &Spanned) -> Option<String> {
        const FIELD: &str = "vm_config.node_prefix";
        let prefix = self.symbol(at, FIELD, "a binary or string")?;
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if prefix.is_empty()
            || prefix.len() > VM_NODE_PREFIX_MAX_BYTES
            || !prefix.bytes().all(allowed)
        {
            let shown: String = prefix.chars().take(64).collect();
            let message = format!(
                "{shown:?} is not a node name prefix: 1 to {VM_NODE_PREFIX_MAX_BYTES} letters, digits, _ or -"
            );
            self.invalid(at, FIELD, message);
            return None;
        }
        Some(prefix)
    }

    /// A list of `erl` arguments, each one a non-empty string.
    fn extra_args(&mut self, at: &Spanned) -> Option<Vec<String>> {
        const EXPECTED: &str = "a list of strings (one erl argument each)";
        let items = match &at.term {
            // A charlist is one string, not a list of arguments.
            Term::List { items, tail: None } if at.term.as_text().is_none() || items.is_empty() => {
                items
            }
            _ => {
                self.wrong_type(at, "vm_config.extra_args", EXPECTED);
                return None;
            }
        };
        let mut args = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let field = format!("vm_config.extra_args[{i}]");
            match self.text(item, &field) {
                Some(arg) if !arg.is_empty() && !arg.contains('\0') => args.push(arg),
                Some(_) => {
                    let message = "an argument is not empty and holds no NUL".to_string();
                    self.invalid(item, &field, message);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(args)
    }

    fn depends_on(&mut self, at: &Spanned, own_name: Option<&str>) -> Option<Vec<String>> {
        let Term::List { items, tail: None } = &at.term else {
            self.wrong_type(at, "depends_on", "a list of app names");
            return None;
        };
        let mut deps: Vec<String> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let field = format!("depends_on[{i}]");
            let Some(dep) = self.app_name_field(item, &field) else {
                ok = false;
                continue;
            };
            if Some(dep.as_str()) == own_name {
                self.invalid(item, &field, "an app cannot depend on itself".to_string());
                ok = false;
            } else if deps.contains(&dep) {
                let message = format!("{dep} is listed twice");
                self.warn(item, &field, WarningKind::DuplicateDependency, message);
            } else {
                deps.push(dep);
            }
        }
        ok.then_some(deps)
    }
}

/// Why `name` cannot be a git ref name (git check-ref-format's rules), if
/// it cannot.
fn bad_ref_name(name: &str) -> Option<&'static str> {
    let bad_char = |c: char| c.is_control() || c == ' ' || "~^:?*[\\".contains(c);
    if name.chars().any(bad_char) {
        Some("it holds a space, a control character or one of ~ ^ : ? * [ \\")
    } else if name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("it holds '..', '@{' or '//'")
    } else if name.starts_with(['-', '/', '.']) || name.ends_with(['/', '.']) {
        Some("it starts with '-', '/' or '.', or ends with '/' or '.'")
    } else if name.ends_with(".lock") || name == "@" || name.contains("/.") {
        Some("it ends with .lock, is '@', or has a component starting with '.'")
    } else {
        None
    }
}

/// The known entries of one map, by key.
struct Fields<'t> {
    prefix: String,
    entries: Vec<(&'t str, &'t Spanned)>,
}

impl<'t> Fields<'t> {
    fn get(&self, key: &str) -> Option<&'t Spanned> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// The field, or a `missing_field` error located at the map.
    fn required(&self, v: &mut Validator<'_>, map: &Spanned, key: &str) -> Option<&'t Spanned> {
        let found = self.get(key);
        if found.is_none() {
            v.missing(map, &join(&self.prefix, key), &format!("{key} is required"));
        }
        found
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}
