//! Specs as the records of `include/bc_gitops.hrl`, built by position.
//!
//! The field order here must match the .hrl; test/bc_gitops_nif_tests.erl
//! reads every field back by record syntax to prove that it does.

use crate::encode::{atom, atoms, opt_text, term, text};
use bc_gitops_core::spec::{
    AppSpec, BuildTool, Diagnostic, HealthSpec, HealthType, Placement, Rollout, SourceSpec,
    SourceType,
};
use rustler::types::tuple::make_tuple;
use rustler::{Encoder, Env, Term};

/// `#app_spec{}`.
pub fn app_spec<'a>(env: Env<'a>, spec: &AppSpec) -> Term<'a> {
    let mut env_map = Term::map_new(env);
    for (key, value) in &spec.env {
        if let Ok(next) = env_map.map_put(atom(env, key), term(env, value)) {
            env_map = next;
        }
    }
    let depends_on: Vec<Term<'a>> = spec.depends_on.iter().map(|d| atom(env, d)).collect();
    let health = match &spec.health {
        Some(h) => health_spec(env, h),
        None => atoms::undefined().encode(env),
    };
    make_tuple(
        env,
        &[
            atoms::app_spec().encode(env),
            atom(env, &spec.name),
            text(env, &spec.version),
            opt_text(env, spec.description.as_deref()),
            source_spec(env, &spec.source),
            env_map,
            health,
            depends_on.encode(env),
            placement(env, &spec.placement),
            rollout(env, spec.rollout.as_ref()),
        ],
    )
}

/// `all`, or the list of patterns as binaries.
fn placement<'a>(env: Env<'a>, placement: &Placement) -> Term<'a> {
    match placement {
        Placement::All => atom(env, "all"),
        Placement::Nodes(patterns) => {
            let items: Vec<Term<'a>> = patterns.iter().map(|p| text(env, p)).collect();
            items.encode(env)
        }
    }
}

/// `undefined`, or a map of the keys the spec gives.
fn rollout<'a>(env: Env<'a>, rollout: Option<&Rollout>) -> Term<'a> {
    let Some(r) = rollout else {
        return atoms::undefined().encode(env);
    };
    let mut pairs = Vec::with_capacity(2);
    if let Some(n) = r.max_parallel {
        pairs.push((atom(env, "max_parallel"), n.encode(env)));
    }
    if let Some(ms) = r.pause_ms {
        pairs.push((atom(env, "pause"), ms.encode(env)));
    }
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| atoms::error().encode(env))
}

fn source_spec<'a>(env: Env<'a>, source: &SourceSpec) -> Term<'a> {
    let source_type = match source.source_type {
        SourceType::Hex => "hex",
        SourceType::Git => "git",
        SourceType::Release => "release",
    };
    let build = match source.build {
        Some(BuildTool::Rebar3) => atom(env, "rebar3"),
        Some(BuildTool::Mix) => atom(env, "mix"),
        Some(BuildTool::Make) => atom(env, "make"),
        None => atoms::undefined().encode(env),
    };
    make_tuple(
        env,
        &[
            atoms::source_spec().encode(env),
            atom(env, source_type),
            opt_text(env, source.url.as_deref()),
            opt_text(env, source.git_ref.as_deref()),
            opt_text(env, source.sha256.as_deref()),
            build,
        ],
    )
}

fn health_spec<'a>(env: Env<'a>, health: &HealthSpec) -> Term<'a> {
    let health_type = match health.health_type {
        HealthType::Http => "http",
        HealthType::Tcp => "tcp",
        HealthType::Custom => "custom",
    };
    let port = match health.port {
        Some(p) => p.encode(env),
        None => atoms::undefined().encode(env),
    };
    let module = match &health.module {
        Some(m) => atom(env, m),
        None => atoms::undefined().encode(env),
    };
    make_tuple(
        env,
        &[
            atoms::health_spec().encode(env),
            atom(env, health_type),
            port,
            opt_text(env, health.path.as_deref()),
            module,
            health.interval_ms.encode(env),
            health.timeout_ms.encode(env),
        ],
    )
}

/// A spec error or warning as a map. `app` stays a binary: the directory
/// name is not trusted, so it never becomes an atom.
pub fn diagnostic<'a, K>(env: Env<'a>, d: &Diagnostic<K>, kind: &str) -> Term<'a> {
    let line = match d.line {
        Some(l) => l.encode(env),
        None => atoms::undefined().encode(env),
    };
    let pairs = [
        (atom(env, "app"), text(env, &d.app)),
        (atom(env, "file"), text(env, &d.file)),
        (atom(env, "line"), line),
        (atom(env, "field"), text(env, &d.field)),
        (atom(env, "kind"), atom(env, kind)),
        (atom(env, "message"), text(env, &d.message)),
    ];
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| atoms::error().encode(env))
}
