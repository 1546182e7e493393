//! `plan/3`: decodes `#app_spec{}` and `#app_state{}` records (by position,
//! see records.rs), runs the core planner and encodes its actions.
//!
//! Env maps are compared as Erlang terms (exact equality), so the planner
//! sees exactly the difference `=:=` would see.

use crate::encode::{atom, atoms};
use bc_gitops_core::plan::{
    plan as core_plan, Action, BlockReason, CurrentApp, CurrentStatus, DesiredApp,
};
use rustler::types::tuple::{get_tuple, make_tuple};
use rustler::{Atom, Binary, Encoder, Env, Error, NifResult, Term};
use std::collections::HashMap;
use std::sync::Arc;

/// A record field by its position in the .hrl (1 is the first field).
const SPEC_NAME: usize = 1;
const SPEC_VERSION: usize = 2;
const SPEC_ENV: usize = 5;
const SPEC_DEPENDS_ON: usize = 7;
/// Field counts (tuple size minus the tag).
const SPEC_ARITY: usize = 9;
const STATE_NAME: usize = 1;
const STATE_VERSION: usize = 2;
const STATE_STATUS: usize = 3;
const STATE_ENV: usize = 8;
const STATE_DEPENDS_ON: usize = 9;
const STATE_ARITY: usize = 9;

/// The owned fields of one record that the planner borrows.
struct Fields<'a> {
    name: String,
    version: String,
    env: Term<'a>,
    depends_on: Vec<String>,
    status: CurrentStatus,
}

/// Wraps a term so that the planner compares it with `=:=`.
#[derive(Clone, Copy)]
struct Exact<'a>(Term<'a>);

impl PartialEq for Exact<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq(&other.0)
    }
}

pub fn plan<'a>(
    env: Env<'a>,
    desired: &[Term<'a>],
    current: &[Term<'a>],
    invalid: &[String],
) -> NifResult<Term<'a>> {
    let want = desired
        .iter()
        .enumerate()
        .map(|(i, t)| record(*t, "app_spec", SPEC_ARITY, i, spec_fields))
        .collect::<NifResult<Vec<_>>>()?;
    let have = current
        .iter()
        .enumerate()
        .map(|(i, t)| record(*t, "app_state", STATE_ARITY, i, state_fields))
        .collect::<NifResult<Vec<_>>>()?;
    let desired_apps: Vec<DesiredApp<'_, Exact<'a>>> = want
        .iter()
        .map(|f| DesiredApp {
            name: &f.name,
            version: &f.version,
            depends_on: &f.depends_on,
            env: Exact(f.env),
        })
        .collect();
    let current_apps: Vec<CurrentApp<'_, Exact<'a>>> = have
        .iter()
        .map(|f| CurrentApp {
            name: &f.name,
            version: &f.version,
            env: Exact(f.env),
            status: f.status,
            depends_on: &f.depends_on,
        })
        .collect();
    let invalid: Vec<&str> = invalid.iter().map(String::as_str).collect();
    let planned = core_plan(&desired_apps, &current_apps, &invalid);

    let mut actions = Vec::with_capacity(planned.actions.len());
    for action in &planned.actions {
        actions.push(encode_action(env, action, desired)?);
    }
    // The members of one cycle are shared by each member's reason: encode
    // that list once, not once per member (k² terms for a k-app cycle).
    let mut cycles: HashMap<*const [String], Term<'a>> = HashMap::new();
    let blocked: Vec<Term<'a>> = planned
        .blocked
        .iter()
        .map(|b| {
            let reason = encode_reason(env, &b.reason, &mut cycles);
            make_tuple(env, &[atom(env, &b.name), reason])
        })
        .collect();
    Ok(make_tuple(
        env,
        &[
            atoms::ok().encode(env),
            actions.encode(env),
            blocked.encode(env),
        ],
    ))
}

/// Reads one record, or raises `{bad_record, Tag, Index}` (Index from 0).
fn record<'a>(
    term: Term<'a>,
    tag: &str,
    arity: usize,
    index: usize,
    fields: fn(&[Term<'a>]) -> Option<Fields<'a>>,
) -> NifResult<Fields<'a>> {
    let parsed = get_tuple(term).ok().and_then(|items| {
        let tagged = items.first().and_then(|t| t.atom_to_string().ok()) == Some(tag.to_string());
        (tagged && items.len() == arity + 1)
            .then(|| fields(&items))
            .flatten()
    });
    parsed.ok_or_else(|| {
        let tag = Atom::from_str(term.get_env(), tag).unwrap_or(atoms::error());
        Error::RaiseTerm(Box::new((atoms::bad_record(), tag, index)))
    })
}

fn spec_fields<'a>(items: &[Term<'a>]) -> Option<Fields<'a>> {
    Some(Fields {
        name: items.get(SPEC_NAME)?.atom_to_string().ok()?,
        version: text(*items.get(SPEC_VERSION)?)?,
        env: *items.get(SPEC_ENV)?,
        depends_on: atom_list(*items.get(SPEC_DEPENDS_ON)?)?,
        status: CurrentStatus::Other,
    })
}

fn state_fields<'a>(items: &[Term<'a>]) -> Option<Fields<'a>> {
    let status = match items.get(STATE_STATUS)?.atom_to_string().ok()?.as_str() {
        "running" => CurrentStatus::Running,
        "stopped" => CurrentStatus::Stopped,
        "failed" => CurrentStatus::Failed,
        _ => CurrentStatus::Other,
    };
    Some(Fields {
        name: items.get(STATE_NAME)?.atom_to_string().ok()?,
        // A runtime that does not know the version (undefined) reports
        // something no spec can equal, so the app is upgraded.
        version: text(*items.get(STATE_VERSION)?).unwrap_or_default(),
        env: *items.get(STATE_ENV)?,
        depends_on: atom_list(*items.get(STATE_DEPENDS_ON)?)?,
        status,
    })
}

fn text(term: Term<'_>) -> Option<String> {
    let bin: Binary = term.decode().ok()?;
    String::from_utf8(bin.as_slice().to_vec()).ok()
}

fn atom_list(term: Term<'_>) -> Option<Vec<String>> {
    let items: Vec<Term> = term.decode().ok()?;
    items.iter().map(|t| t.atom_to_string().ok()).collect()
}

fn encode_action<'a>(env: Env<'a>, action: &Action, desired: &[Term<'a>]) -> NifResult<Term<'a>> {
    let spec = |index: usize| desired.get(index).copied().ok_or(Error::BadArg);
    Ok(match action {
        Action::Remove { name } => make_tuple(env, &[atom(env, "remove"), atom(env, name)]),
        Action::Deploy { desired } => make_tuple(env, &[atom(env, "deploy"), spec(*desired)?]),
        Action::Redeploy { desired, status } => make_tuple(
            env,
            &[
                atom(env, "redeploy"),
                spec(*desired)?,
                status_atom(env, *status),
            ],
        ),
        Action::Upgrade {
            desired,
            from_version,
        } => make_tuple(
            env,
            &[
                atom(env, "upgrade"),
                spec(*desired)?,
                crate::encode::text(env, from_version),
            ],
        ),
        Action::Reconfigure { desired } => {
            make_tuple(env, &[atom(env, "reconfigure"), spec(*desired)?])
        }
    })
}

fn status_atom(env: Env<'_>, status: CurrentStatus) -> Term<'_> {
    atom(
        env,
        match status {
            CurrentStatus::Running => "running",
            CurrentStatus::Stopped => "stopped",
            CurrentStatus::Failed => "failed",
            CurrentStatus::Other => "other",
        },
    )
}

fn encode_reason<'a>(
    env: Env<'a>,
    reason: &BlockReason,
    cycles: &mut HashMap<*const [String], Term<'a>>,
) -> Term<'a> {
    let tagged = |tag: &str, name: &str| make_tuple(env, &[atom(env, tag), atom(env, name)]);
    match reason {
        BlockReason::Cycle(members) => {
            let names = *cycles.entry(Arc::as_ptr(members)).or_insert_with(|| {
                let names: Vec<Term<'a>> = members.iter().map(|m| atom(env, m)).collect();
                names.encode(env)
            });
            make_tuple(env, &[atom(env, "cycle"), names])
        }
        BlockReason::MissingDependency(dep) => tagged("missing_dependency", dep),
        BlockReason::InvalidDependency(dep) => tagged("invalid_dependency", dep),
        BlockReason::DependencyBlocked(dep) => tagged("dependency_blocked", dep),
        BlockReason::InvalidSpec => atom(env, "invalid_spec"),
    }
}
