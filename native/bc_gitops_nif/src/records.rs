//! The records of `include/bc_gitops.hrl`, by rustler's `NifRecord` derive:
//! a struct's fields are the record's fields, in order.
//!
//! The field order here must match the .hrl: test/bc_gitops_nif_tests.erl
//! reads every field of the records built here back by record syntax, and
//! test/bc_gitops_plan_tests.erl sets by record syntax every field that
//! plan/3 reads.

use crate::encode::{atom, term, text};
use bc_gitops_core::spec::{
    AppSpec, BuildTool, Diagnostic, HealthType, Isolation, Placement, Rollout, SourceType, VmConfig,
};
use rustler::{
    Atom, Decoder, Encoder, Env, ErlOption, Error, NifMap, NifRecord, NifResult, NifUnitEnum, Term,
};

/// `#app_spec{}`, as `parse_dir/2` builds it.
#[derive(NifRecord)]
#[rustler(encode)]
#[tag = "app_spec"]
pub struct AppSpecOut<'a, 's> {
    name: Term<'a>,
    version: &'s str,
    description: ErlOption<&'s str>,
    source: SourceSpecOut<'s>,
    env: Term<'a>,
    health: ErlOption<HealthSpecOut<'a, 's>>,
    depends_on: Vec<Term<'a>>,
    /// `all`, or the node-name patterns as binaries.
    placement: Term<'a>,
    rollout: ErlOption<Term<'a>>,
    isolation: IsolationKind,
    vm_config: ErlOption<Term<'a>>,
}

#[derive(NifRecord)]
#[rustler(encode)]
#[tag = "source_spec"]
struct SourceSpecOut<'s> {
    source_type: SourceKind,
    url: ErlOption<&'s str>,
    git_ref: ErlOption<&'s str>,
    sha256: ErlOption<&'s str>,
    build: ErlOption<BuildKind>,
}

#[derive(NifRecord)]
#[rustler(encode)]
#[tag = "health_spec"]
struct HealthSpecOut<'a, 's> {
    health_type: HealthKind,
    port: ErlOption<u16>,
    path: ErlOption<&'s str>,
    module: ErlOption<Term<'a>>,
    interval: u64,
    timeout: u64,
}

/// An atom-valued field: a `NifUnitEnum` copy of a core enum (core knows
/// nothing of rustler), and the conversion.
macro_rules! unit_enum {
    ($name:ident from $core:ident { $($variant:ident),* }) => {
        #[derive(Clone, Copy, NifUnitEnum)]
        enum $name { $($variant),* }

        impl From<$core> for $name {
            fn from(value: $core) -> Self {
                match value { $($core::$variant => $name::$variant),* }
            }
        }
    };
}

unit_enum!(SourceKind from SourceType { Hex, Git, Release });
unit_enum!(BuildKind from BuildTool { Rebar3, Mix, Make });
unit_enum!(HealthKind from HealthType { Http, Tcp, Custom });
unit_enum!(IsolationKind from Isolation { Embedded, Vm });

impl<'a, 's> AppSpecOut<'a, 's> {
    pub fn new(env: Env<'a>, spec: &'s AppSpec) -> Self {
        let mut env_map = Term::map_new(env);
        for (key, value) in &spec.env {
            if let Ok(next) = env_map.map_put(atom(env, key), term(env, value)) {
                env_map = next;
            }
        }
        let source = &spec.source;
        AppSpecOut {
            name: atom(env, &spec.name),
            version: &spec.version,
            description: spec.description.as_deref().into(),
            source: SourceSpecOut {
                source_type: source.source_type.into(),
                url: source.url.as_deref().into(),
                git_ref: source.git_ref.as_deref().into(),
                sha256: source.sha256.as_deref().into(),
                build: source.build.map(BuildKind::from).into(),
            },
            env: env_map,
            health: spec
                .health
                .as_ref()
                .map(|h| HealthSpecOut {
                    health_type: h.health_type.into(),
                    port: h.port.into(),
                    path: h.path.as_deref().into(),
                    module: h.module.as_deref().map(|m| atom(env, m)).into(),
                    interval: h.interval_ms,
                    timeout: h.timeout_ms,
                })
                .into(),
            depends_on: spec.depends_on.iter().map(|d| atom(env, d)).collect(),
            placement: match &spec.placement {
                Placement::All => atom(env, "all"),
                Placement::Nodes(patterns) => patterns.encode(env),
            },
            rollout: spec.rollout.map(|r| rollout(env, r)).into(),
            isolation: spec.isolation.into(),
            vm_config: spec.vm_config.as_ref().map(|c| vm_config(env, c)).into(),
        }
    }
}

/// A map of the keys the spec gives (the runtime has defaults for the
/// others); `extra_args` as binaries.
fn vm_config<'a>(env: Env<'a>, c: &VmConfig) -> Term<'a> {
    let pairs: Vec<(Term<'a>, Term<'a>)> = [
        ("memory_limit", c.memory_limit.map(|m| m.encode(env))),
        ("scheduler_limit", c.scheduler_limit.map(|s| s.encode(env))),
        (
            "node_prefix",
            c.node_prefix.as_deref().map(|p| text(env, p)),
        ),
        (
            "extra_args",
            c.extra_args.as_ref().map(|args| {
                let args: Vec<Term<'a>> = args.iter().map(|a| text(env, a)).collect();
                args.encode(env)
            }),
        ),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((atom(env, key), value?)))
    .collect();
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| Term::map_new(env))
}

/// A map of the keys the spec gives: absent ones take the cluster's
/// defaults.
fn rollout(env: Env<'_>, r: Rollout) -> Term<'_> {
    let pairs: Vec<_> = [("max_parallel", r.max_parallel), ("pause", r.pause_ms)]
        .into_iter()
        .filter_map(|(key, value)| Some((atom(env, key), value?.encode(env))))
        .collect();
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| Term::map_new(env))
}

/// A spec error or warning as a map. `app` stays a binary: the directory
/// name is not trusted, so it never becomes an atom.
#[derive(NifMap)]
#[rustler(encode)]
pub struct DiagnosticOut<'a, 's> {
    app: &'s str,
    file: &'s str,
    line: ErlOption<u32>,
    field: &'s str,
    kind: Term<'a>,
    message: &'s str,
}

impl<'a, 's> DiagnosticOut<'a, 's> {
    pub fn new<K>(env: Env<'a>, d: &'s Diagnostic<K>, kind: &str) -> Self {
        DiagnosticOut {
            app: &d.app,
            file: &d.file,
            line: d.line.into(),
            field: &d.field,
            kind: atom(env, kind),
            message: &d.message,
        }
    }
}

/// `#app_spec{}`, the fields that plan/3 reads.
#[derive(NifRecord)]
#[rustler(decode)]
#[tag = "app_spec"]
pub struct AppSpecIn<'a> {
    pub name: AtomText,
    pub version: String,
    _description: Term<'a>,
    _source: Term<'a>,
    pub env: Term<'a>,
    _health: Term<'a>,
    pub depends_on: AtomTexts,
    _placement: Term<'a>,
    _rollout: Term<'a>,
    pub isolation: Term<'a>,
    pub vm_config: Term<'a>,
}

/// `#app_state{}`, the fields that plan/3 reads (all but the guest node).
#[derive(NifRecord)]
#[rustler(decode)]
#[tag = "app_state"]
pub struct AppStateIn<'a> {
    pub name: AtomText,
    pub version: TextOrEmpty,
    pub status: Atom,
    _path: Term<'a>,
    _pid: Term<'a>,
    _started_at: Term<'a>,
    _health: Term<'a>,
    pub env: Term<'a>,
    pub depends_on: AtomTexts,
    /// `undefined` when the runtime does not say where the app runs.
    pub isolation: Term<'a>,
    pub vm_config: Term<'a>,
    _node: Term<'a>,
}

/// An atom, decoded as its text.
pub struct AtomText(pub String);

impl<'a> Decoder<'a> for AtomText {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        term.atom_to_string().map(AtomText)
    }
}

/// A list of atoms, decoded as their texts.
pub struct AtomTexts(pub Vec<String>);

impl<'a> Decoder<'a> for AtomTexts {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let atoms: Vec<Term<'a>> = term.decode()?;
        let texts = atoms.iter().map(|a| a.atom_to_string());
        texts.collect::<NifResult<_>>().map(AtomTexts)
    }
}

/// A UTF-8 binary as text; anything else (`undefined` from a runtime that
/// does not know the version) as "", which no spec equals, so that the app
/// is upgraded.
pub struct TextOrEmpty(pub String);

impl<'a> Decoder<'a> for TextOrEmpty {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        Ok(TextOrEmpty(term.decode::<String>().unwrap_or_default()))
    }
}

/// Decodes a record, or raises `{bad_record, Tag, Index}` (Index from 0).
pub fn decode<'a, T: Decoder<'a>>(term: Term<'a>, tag: Atom, index: usize) -> NifResult<T> {
    term.decode()
        .map_err(|_| Error::RaiseTerm(Box::new((crate::encode::atoms::bad_record(), tag, index))))
}
