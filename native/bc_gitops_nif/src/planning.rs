//! `plan/3`: decodes `#app_spec{}` and `#app_state{}` records (see
//! records.rs), runs the core planner and encodes its actions.
//!
//! Env maps are compared as Erlang terms (exact equality), so the planner
//! sees exactly the difference `=:=` would see; but an encrypted value
//! (`{age, Armored}`) equals another that decrypts to the same plaintext
//! with the identity file given (see secrets.rs): re-encrypting a value is
//! not a change.

use crate::encode::{atom, atoms};
use crate::records::{self, AppSpecIn, AppStateIn};
use crate::secrets::{SameEnv, Secrets};
use bc_gitops_core::plan::{
    plan as core_plan, Action, BlockReason, CurrentApp, CurrentStatus, DesiredApp,
};
use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, Error, NifResult, Term};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub fn plan<'a>(
    env: Env<'a>,
    desired: &[Term<'a>],
    current: &[Term<'a>],
    invalid: &[String],
    identity: Option<PathBuf>,
) -> NifResult<Term<'a>> {
    let secrets = Secrets::new(identity);
    let want = desired
        .iter()
        .enumerate()
        .map(|(i, t)| records::decode::<AppSpecIn>(*t, atoms::app_spec(), i))
        .collect::<NifResult<Vec<_>>>()?;
    let have = current
        .iter()
        .enumerate()
        .map(|(i, t)| records::decode::<AppStateIn>(*t, atoms::app_state(), i))
        .collect::<NifResult<Vec<_>>>()?;
    let same = |term| SameEnv {
        term,
        secrets: &secrets,
    };
    let desired_apps: Vec<DesiredApp<'_, SameEnv<'a, '_>>> = want
        .iter()
        .map(|s| DesiredApp {
            name: &s.name.0,
            version: &s.version,
            depends_on: &s.depends_on.0,
            env: same(s.env),
            // A tuple: compared exactly (only env maps hold secrets).
            isolation: same(make_tuple(env, &[s.isolation, s.vm_config])),
        })
        .collect();
    let current_apps: Vec<CurrentApp<'_, SameEnv<'a, '_>>> = have
        .iter()
        .map(|s| CurrentApp {
            name: &s.name.0,
            version: &s.version.0,
            env: same(s.env),
            status: status(s.status),
            depends_on: &s.depends_on.0,
            isolation: (s.isolation != atoms::undefined().to_term(env))
                .then(|| same(make_tuple(env, &[s.isolation, s.vm_config]))),
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

fn status(status: Atom) -> CurrentStatus {
    if status == atoms::running() {
        CurrentStatus::Running
    } else if status == atoms::stopped() {
        CurrentStatus::Stopped
    } else if status == atoms::failed() {
        CurrentStatus::Failed
    } else {
        CurrentStatus::Other
    }
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
