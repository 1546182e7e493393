//! Tests of the planner: action kinds, ordering, blocking, determinism, scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bc_gitops_core::plan::{
    plan, Action, BlockReason, Blocked, CurrentApp, CurrentStatus, DesiredApp, Plan,
};
use proptest::prelude::*;

use CurrentStatus::{Failed, Other, Running, Stopped};

/// Owned storage for a desired app, since `DesiredApp` borrows.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    version: String,
    deps: Vec<String>,
    env: u32,
    isolation: u32,
}

/// Owned storage for a current app.
#[derive(Clone, Debug)]
struct Run {
    name: String,
    version: String,
    env: u32,
    status: CurrentStatus,
    deps: Vec<String>,
    isolation: Option<u32>,
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn spec(name: &str, version: &str, deps: &[&str], env: u32) -> Spec {
    Spec {
        name: name.to_owned(),
        version: version.to_owned(),
        deps: strings(deps),
        env,
        isolation: 0,
    }
}

fn run(name: &str, version: &str, env: u32, status: CurrentStatus, deps: &[&str]) -> Run {
    Run {
        name: name.to_owned(),
        version: version.to_owned(),
        env,
        status,
        deps: strings(deps),
        isolation: None,
    }
}

fn desired_of(specs: &[Spec]) -> Vec<DesiredApp<'_, u32>> {
    specs
        .iter()
        .map(|s| DesiredApp {
            name: &s.name,
            version: &s.version,
            depends_on: &s.deps,
            env: s.env,
            isolation: s.isolation,
        })
        .collect()
}

fn current_of(runs: &[Run]) -> Vec<CurrentApp<'_, u32>> {
    runs.iter()
        .map(|r| CurrentApp {
            name: &r.name,
            version: &r.version,
            env: r.env,
            status: r.status,
            depends_on: &r.deps,
            isolation: r.isolation,
        })
        .collect()
}

/// Runs the planner on owned inputs.
fn plan_of(specs: &[Spec], runs: &[Run], invalid: &[&str]) -> Plan {
    plan(&desired_of(specs), &current_of(runs), invalid)
}

/// The actions as readable, index-free strings, so that plans made from
/// differently ordered inputs can be compared.
fn describe(plan: &Plan, specs: &[Spec]) -> Vec<String> {
    plan.actions
        .iter()
        .map(|action| {
            let name = |i: &usize| specs[*i].name.clone();
            match action {
                Action::Remove { name } => format!("remove {name}"),
                Action::Deploy { desired } => format!("deploy {}", name(desired)),
                Action::Redeploy { desired, status } => {
                    format!("redeploy {} {status:?}", name(desired))
                }
                Action::Upgrade {
                    desired,
                    from_version,
                } => format!("upgrade {} from {from_version}", name(desired)),
                Action::Reconfigure { desired } => format!("reconfigure {}", name(desired)),
            }
        })
        .collect()
}

fn actions(specs: &[Spec], runs: &[Run], invalid: &[&str]) -> Vec<String> {
    describe(&plan_of(specs, runs, invalid), specs)
}

fn blocked(name: &str, reason: BlockReason) -> Blocked {
    Blocked {
        name: name.to_owned(),
        reason,
    }
}

fn cycle(names: &[&str]) -> BlockReason {
    BlockReason::Cycle(strings(names).into())
}

fn dep_blocked(name: &str) -> BlockReason {
    BlockReason::DependencyBlocked(name.to_owned())
}

/// A small deterministic generator, so shuffles are reproducible without
/// extra dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[test]
fn empty_inputs_give_an_empty_plan() {
    assert_eq!(plan_of(&[], &[], &[]), Plan::default());
}

#[test]
fn each_kind_of_difference_gets_its_action() {
    let specs = [
        spec("deploy", "1.0", &[], 0),
        spec("upgrade", "2.0", &[], 0),
        spec("downgrade", "1.0", &[], 0),
        spec("reconfigure", "1.0", &[], 1),
        spec("stopped", "1.0", &[], 0),
        spec("failed", "1.0", &[], 1),
        spec("same", "1.0", &[], 0),
        spec("other", "1.0", &[], 0),
    ];
    let runs = [
        run("upgrade", "1.0", 5, Running, &[]),
        run("downgrade", "2.0", 0, Running, &[]),
        run("reconfigure", "1.0", 0, Running, &[]),
        run("stopped", "1.0", 0, Stopped, &[]),
        run("failed", "1.0", 0, Failed, &[]),
        run("same", "1.0", 0, Running, &[]),
        run("other", "1.0", 0, Other, &[]),
    ];
    let plan = plan_of(&specs, &runs, &[]);
    assert_eq!(
        describe(&plan, &specs),
        [
            "deploy deploy",
            "upgrade downgrade from 2.0",
            "redeploy failed Failed",
            "reconfigure reconfigure",
            "redeploy stopped Stopped",
            "upgrade upgrade from 1.0",
        ]
    );
    assert!(plan.blocked.is_empty());
}

#[test]
fn other_status_with_a_new_env_is_reconfigured_not_redeployed() {
    let specs = [spec("a", "1.0", &[], 1)];
    let runs = [run("a", "1.0", 0, Other, &[])];
    assert_eq!(actions(&specs, &runs, &[]), ["reconfigure a"]);
}

/// An app that runs where its spec no longer says (isolation 0 here, 1
/// wanted) is moved: an upgrade from its own version, env changes riding
/// along; a stopped one is redeployed (in the new place); a runtime that
/// does not report isolation is never asked to move an app.
#[test]
fn an_app_running_elsewhere_is_moved_by_an_upgrade() {
    let wanted = |name: &str, env: u32| Spec {
        isolation: 1,
        ..spec(name, "1.0", &[], env)
    };
    let at = |name: &str, status: CurrentStatus, isolation: Option<u32>| Run {
        isolation,
        ..run(name, "1.0", 0, status, &[])
    };
    let specs = [
        wanted("moved", 0),
        wanted("moved_env", 1),
        wanted("stopped", 0),
        wanted("unsaid", 1),
        wanted("there", 1),
        Spec {
            version: "2.0".to_owned(),
            ..wanted("newer", 0)
        },
    ];
    let runs = [
        at("moved", Running, Some(0)),
        at("moved_env", Other, Some(0)),
        at("stopped", Stopped, Some(0)),
        at("unsaid", Running, None),
        at("there", Running, Some(1)),
        at("newer", Running, Some(0)),
    ];
    assert_eq!(
        actions(&specs, &runs, &[]),
        [
            "upgrade moved from 1.0",
            "upgrade moved_env from 1.0",
            "upgrade newer from 1.0",
            "redeploy stopped Stopped",
            "reconfigure there",
            "reconfigure unsaid",
        ]
    );
}

#[test]
fn action_name_resolves_against_the_desired_slice() {
    let specs = [spec("a", "1.0", &[], 0)];
    let runs = [run("gone", "1.0", 0, Running, &[])];
    let desired = desired_of(&specs);
    let plan = plan(&desired, &current_of(&runs), &[]);
    let names: Vec<_> = plan.actions.iter().map(|a| a.name(&desired)).collect();
    assert_eq!(names, [Some("gone"), Some("a")]);
    assert_eq!(Action::Deploy { desired: 7 }.name(&desired), None);
}

#[test]
fn removes_come_first_dependents_before_dependencies() {
    let specs = [spec("a_new", "1.0", &[], 0)];
    let runs = [
        run("a_db", "1.0", 0, Running, &[]),
        run("z_web", "1.0", 0, Running, &["a_db"]),
        run("m_cache", "1.0", 0, Running, &["a_db"]),
        run("b_solo", "1.0", 0, Stopped, &[]),
    ];
    assert_eq!(
        actions(&specs, &runs, &[]),
        [
            "remove b_solo",
            "remove m_cache",
            "remove z_web",
            "remove a_db",
            "deploy a_new"
        ]
    );
}

#[test]
fn a_cycle_among_removed_apps_still_removes_them_all() {
    let runs = [
        run("a", "1.0", 0, Running, &["b"]),
        run("b", "1.0", 0, Running, &["a"]),
        run("c", "1.0", 0, Running, &["c", "a"]),
    ];
    assert_eq!(
        actions(&[], &runs, &[]),
        ["remove c", "remove a", "remove b"]
    );
}

#[test]
fn a_diamond_deploys_dependencies_first() {
    let specs = [
        spec("a_top", "1.0", &["m_left", "b_right"], 0),
        spec("m_left", "1.0", &["z_base"], 0),
        spec("b_right", "1.0", &["z_base"], 0),
        spec("z_base", "1.0", &[], 0),
    ];
    assert_eq!(
        actions(&specs, &[], &[]),
        [
            "deploy z_base",
            "deploy b_right",
            "deploy m_left",
            "deploy a_top"
        ]
    );
}

#[test]
fn an_in_sync_dependency_is_fine() {
    let specs = [
        spec("a_app", "2.0", &["z_lib"], 0),
        spec("z_lib", "1.0", &[], 0),
    ];
    let runs = [run("z_lib", "1.0", 0, Running, &[])];
    let plan = plan_of(&specs, &runs, &[]);
    assert_eq!(describe(&plan, &specs), ["deploy a_app"]);
    assert!(plan.blocked.is_empty());
}

#[test]
fn a_cycle_of_three_is_blocked_and_the_rest_planned() {
    let specs = [
        spec("beta", "1.0", &["alpha"], 0),
        spec("gamma", "1.0", &["beta"], 0),
        spec("alpha", "1.0", &["gamma"], 0),
        spec("solo", "1.0", &[], 0),
        spec("user", "1.0", &["beta", "solo"], 0),
    ];
    let plan = plan_of(&specs, &[], &[]);
    assert_eq!(describe(&plan, &specs), ["deploy solo"]);
    let members = ["alpha", "gamma", "beta"];
    assert_eq!(
        plan.blocked,
        [
            blocked("alpha", cycle(&members)),
            blocked("beta", cycle(&members)),
            blocked("gamma", cycle(&members)),
            blocked("user", dep_blocked("beta")),
        ]
    );
}

#[test]
fn a_self_dependency_is_a_cycle_of_one() {
    let specs = [spec("a", "1.0", &["a"], 0), spec("b", "1.0", &[], 0)];
    let plan = plan_of(&specs, &[], &[]);
    assert_eq!(describe(&plan, &specs), ["deploy b"]);
    assert_eq!(plan.blocked, [blocked("a", cycle(&["a"]))]);
}

#[test]
fn a_missing_dependency_blocks() {
    let specs = [
        spec("a", "1.0", &["zz_ghost", "b_ghost"], 0),
        spec("b", "1.0", &[], 0),
    ];
    let plan = plan_of(&specs, &[], &[]);
    assert_eq!(describe(&plan, &specs), ["deploy b"]);
    assert_eq!(
        plan.blocked,
        [blocked(
            "a",
            BlockReason::MissingDependency("b_ghost".to_owned())
        )]
    );
}

#[test]
fn a_dependency_being_removed_counts_as_missing() {
    let specs = [spec("a", "1.0", &["old"], 0)];
    let runs = [run("old", "1.0", 0, Running, &[])];
    let plan = plan_of(&specs, &runs, &[]);
    assert_eq!(describe(&plan, &specs), ["remove old"]);
    assert_eq!(
        plan.blocked,
        [blocked(
            "a",
            BlockReason::MissingDependency("old".to_owned())
        )]
    );
}

#[test]
fn an_invalid_dependency_blocks_and_wins_over_missing() {
    let specs = [
        spec("a", "1.0", &["aa_missing", "zz_bad"], 0),
        spec("b", "1.0", &["zz_bad"], 0),
    ];
    let plan = plan_of(&specs, &[], &["zz_bad"]);
    assert!(plan.actions.is_empty());
    let reason = BlockReason::InvalidDependency("zz_bad".to_owned());
    assert_eq!(
        plan.blocked,
        [blocked("a", reason.clone()), blocked("b", reason)]
    );
}

#[test]
fn a_cycle_wins_over_a_missing_dependency() {
    let specs = [
        spec("a", "1.0", &["b", "ghost"], 0),
        spec("b", "1.0", &["a"], 0),
    ];
    let plan = plan_of(&specs, &[], &[]);
    assert_eq!(plan.blocked[0], blocked("a", cycle(&["a", "b"])));
}

#[test]
fn blocking_is_transitive_and_names_the_smallest_blocked_dependency() {
    let specs = [
        spec("a", "1.0", &["ghost"], 0),
        spec("b", "1.0", &["a"], 0),
        spec("c", "1.0", &["b"], 0),
        spec("d", "1.0", &["c", "e"], 0),
        spec("e", "1.0", &[], 0),
        spec("f", "1.0", &["e", "c", "b"], 0),
    ];
    let plan = plan_of(&specs, &[], &[]);
    assert_eq!(describe(&plan, &specs), ["deploy e"]);
    assert_eq!(
        plan.blocked,
        [
            blocked("a", BlockReason::MissingDependency("ghost".to_owned())),
            blocked("b", dep_blocked("a")),
            blocked("c", dep_blocked("b")),
            blocked("d", dep_blocked("c")),
            blocked("f", dep_blocked("b")),
        ]
    );
}

#[test]
fn an_invalid_running_app_is_kept_not_removed() {
    let runs = [
        run("bad", "1.0", 0, Running, &[]),
        run("gone", "1.0", 0, Running, &[]),
    ];
    let plan = plan_of(&[], &runs, &["bad", "not_running"]);
    assert_eq!(describe(&plan, &[]), ["remove gone"]);
    assert_eq!(plan.blocked, [blocked("bad", BlockReason::InvalidSpec)]);
}

#[test]
fn invalid_wins_over_a_desired_entry_of_the_same_name() {
    let specs = [spec("bad", "2.0", &[], 0)];
    let runs = [run("bad", "1.0", 0, Running, &[])];
    let plan = plan_of(&specs, &runs, &["bad"]);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.blocked, [blocked("bad", BlockReason::InvalidSpec)]);
}

#[test]
fn a_blocked_running_app_is_held_not_removed() {
    let specs = [spec("a", "2.0", &["ghost"], 0)];
    let runs = [run("a", "1.0", 0, Running, &[])];
    let plan = plan_of(&specs, &runs, &[]);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.blocked.len(), 1);
}

#[test]
fn duplicate_names_keep_the_first_and_do_not_panic() {
    let specs = [spec("a", "1.0", &[], 0), spec("a", "2.0", &["ghost"], 0)];
    let runs = [
        run("a", "0.9", 0, Running, &[]),
        run("a", "0.1", 0, Running, &[]),
    ];
    let plan = plan_of(&specs, &runs, &["x", "x"]);
    assert_eq!(describe(&plan, &specs), ["upgrade a from 0.9"]);
    assert!(plan.blocked.is_empty());
}

/// A scenario exercising every rule at once, for the determinism test.
fn mixed_scenario() -> (Vec<Spec>, Vec<Run>, Vec<&'static str>) {
    let specs = vec![
        spec("web", "2.0", &["db", "cache"], 1),
        spec("db", "1.0", &[], 0),
        spec("cache", "1.0", &["db"], 2),
        spec("api", "1.0", &["db"], 0),
        spec("worker", "1.0", &["queue"], 0),
        spec("queue", "1.0", &["bad"], 0),
        spec("x", "1.0", &["y"], 0),
        spec("y", "1.0", &["z"], 0),
        spec("z", "1.0", &["x"], 0),
        spec("lonely", "1.0", &["ghost"], 0),
        spec("stopped", "1.0", &[], 0),
    ];
    let runs = vec![
        run("web", "1.0", 1, Running, &["db"]),
        run("db", "1.0", 0, Running, &[]),
        run("cache", "1.0", 0, Running, &["db"]),
        run("old_front", "1.0", 0, Running, &["old_back"]),
        run("old_back", "1.0", 0, Failed, &[]),
        run("held", "1.0", 0, Running, &[]),
        run("stopped", "1.0", 0, Stopped, &[]),
    ];
    (specs, runs, vec!["bad", "held"])
}

#[test]
fn the_plan_does_not_depend_on_input_order() {
    let (specs, runs, invalid) = mixed_scenario();
    let reference = plan_of(&specs, &runs, &invalid);
    let expected = describe(&reference, &specs);
    assert_eq!(
        expected,
        [
            "remove old_front",
            "remove old_back",
            "deploy api",
            "reconfigure cache",
            "redeploy stopped Stopped",
            "upgrade web from 1.0",
        ]
    );
    for seed in [1, 2, 3, 42, 1234, 99_999] {
        let mut rng = Rng(seed);
        let (mut specs, mut runs, mut invalid) = (specs.clone(), runs.clone(), invalid.clone());
        rng.shuffle(&mut specs);
        rng.shuffle(&mut runs);
        rng.shuffle(&mut invalid);
        let shuffled = plan_of(&specs, &runs, &invalid);
        assert_eq!(describe(&shuffled, &specs), expected, "seed {seed}");
        assert_eq!(shuffled.blocked, reference.blocked, "seed {seed}");
    }
}

fn numbered(i: usize) -> String {
    format!("app{i:05}")
}

/// `n` apps where each depends on the next one, so the dependency order is
/// the reverse of the name order.
fn chain(n: usize) -> Vec<Spec> {
    (0..n)
        .map(|i| Spec {
            name: numbered(i),
            version: "1.0".to_owned(),
            deps: if i + 1 < n {
                vec![numbered(i + 1)]
            } else {
                Vec::new()
            },
            env: 0,
            isolation: 0,
        })
        .collect()
}

#[test]
fn a_ten_thousand_long_chain_does_not_overflow_the_stack() {
    let n = 10_000;
    let specs = chain(n);
    let plan = plan_of(&specs, &[], &[]);
    let expected: Vec<String> = (0..n)
        .rev()
        .map(|i| format!("deploy {}", numbered(i)))
        .collect();
    assert_eq!(describe(&plan, &specs), expected);

    // Closing the chain into one big cycle blocks every app.
    let mut closed = specs;
    closed[n - 1].deps = vec![numbered(0)];
    let plan = plan_of(&closed, &[], &[]);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.blocked.len(), n);
    let BlockReason::Cycle(members) = &plan.blocked[n - 1].reason else {
        panic!("expected a cycle");
    };
    assert_eq!(members.len(), n);
    assert_eq!(members[1], numbered(1));

    // And removing a long chain orders it dependents first.
    let runs: Vec<Run> = chain(n)
        .into_iter()
        .map(|s| Run {
            name: s.name,
            version: s.version,
            env: 0,
            status: Running,
            deps: s.deps,
            isolation: None,
        })
        .collect();
    let removes = actions(&[], &runs, &[]);
    assert_eq!(removes.first().map(String::as_str), Some("remove app00000"));
    assert_eq!(removes.len(), n);
}

/// `n` apps with up to three random dependencies each, and a random current
/// state. With `acyclic`, apps only depend on apps with larger numbers (so
/// the dependency order runs against the name order); otherwise on any app,
/// which makes a large tangle of cycles.
fn random_world(n: usize, seed: u64, acyclic: bool) -> (Vec<Spec>, Vec<Run>) {
    let mut rng = Rng(seed);
    let mut dep_of = |i: usize| {
        if acyclic {
            numbered(i + 1 + rng.below(n - i - 1))
        } else {
            numbered(rng.below(n))
        }
    };
    let specs: Vec<Spec> = (0..n)
        .map(|i| Spec {
            name: numbered(i),
            version: format!("1.{}", i % 3),
            deps: (0..i % 4)
                .filter(|_| i + 1 < n)
                .map(|_| dep_of(i))
                .collect(),
            env: 0,
            isolation: 0,
        })
        .collect();
    let mut runs = Vec::new();
    for i in 0..n + n / 10 {
        if rng.below(2) == 0 {
            runs.push(Run {
                name: numbered(i),
                version: "1.0".to_owned(),
                env: rng.below(2) as u32,
                status: Running,
                deps: vec![numbered(rng.below(n + n / 10))],
                isolation: None,
            });
        }
    }
    (specs, runs)
}

/// Scale is about correctness here (no app lost, no stack overflow, same
/// plan every time); speed is measured in bench/, not asserted in tests.
#[test]
fn ten_thousand_random_apps_lose_none() {
    for acyclic in [true, false] {
        plan_ten_thousand_random_apps(acyclic);
    }
}

fn plan_ten_thousand_random_apps(acyclic: bool) {
    let (specs, runs) = random_world(10_000, 7, acyclic);
    let (desired, current) = (desired_of(&specs), current_of(&runs));
    let plans: Vec<_> = (0..2)
        .map(|_| plan(&desired, &current, &["app00003"]))
        .collect();
    assert_eq!(plans[0], plans[1]);

    // No app is lost, even in this tangle.
    let plan = &plans[0];
    let mut accounted: Vec<&str> = plan.blocked.iter().map(|b| b.name.as_str()).collect();
    accounted.extend(plan.actions.iter().filter_map(|a| a.name(&desired)));
    accounted.sort_unstable();
    let lost = specs.iter().filter(|s| {
        let planned = accounted.binary_search(&s.name.as_str()).is_ok();
        s.name != "app00003" && !planned && !in_sync(s, &runs)
    });
    assert_eq!(lost.count(), 0);
}

/// One desired app for the property test: version, env, bits choosing
/// dependencies among the apps after it, an optional dependency outside the
/// desired set, and an optional current state.
type ArbApp = (u8, u8, u32, Option<u8>, Option<(u8, u8, CurrentStatus)>);

fn arb_status() -> impl Strategy<Value = CurrentStatus> {
    prop_oneof![Just(Running), Just(Stopped), Just(Failed), Just(Other)]
}

fn arb_app() -> impl Strategy<Value = ArbApp> {
    (
        0u8..3,
        0u8..3,
        any::<u32>(),
        proptest::option::weighted(0.15, 0u8..3),
        proptest::option::of((0u8..3, 0u8..3, arb_status())),
    )
}

/// Builds a DAG world: app `i` may only depend on the 32 apps after it, so
/// that the dependency order runs against the name order.
fn world_of(apps: &[ArbApp], leftovers: &[(u8, u8)]) -> (Vec<Spec>, Vec<Run>) {
    let outside = ["ghost", "bad0", "bad1"];
    let mut specs = Vec::new();
    let mut runs = Vec::new();
    for (i, &(version, env, bits, extra, current)) in apps.iter().enumerate() {
        let mut deps: Vec<String> = (1..=32)
            .filter(|k| bits & (1 << (k - 1)) != 0 && i + k < apps.len())
            .map(|k| numbered(i + k))
            .collect();
        deps.extend(extra.map(|k| outside[usize::from(k)].to_owned()));
        specs.push(Spec {
            name: numbered(i),
            version: version.to_string(),
            deps,
            env: u32::from(env),
            isolation: 0,
        });
        if let Some((version, env, status)) = current {
            runs.push(run(
                &numbered(i),
                &version.to_string(),
                env.into(),
                status,
                &[],
            ));
        }
    }
    // Leftover current apps, no longer desired; unique names, as the
    // runtime reports each app once.
    let names = ["old0", "old1", "old2", "bad0"];
    for &(who, dep) in leftovers {
        let name = names[usize::from(who)];
        if runs.iter().all(|r| r.name != name) {
            runs.push(run(name, "1", 0, Running, &[names[usize::from(dep)]]));
        }
    }
    (specs, runs)
}

fn in_sync(spec: &Spec, runs: &[Run]) -> bool {
    runs.iter().find(|r| r.name == spec.name).is_some_and(|r| {
        r.version == spec.version && r.env == spec.env && !matches!(r.status, Stopped | Failed)
    })
}

fn desired_index(action: &Action) -> Option<usize> {
    match action {
        Action::Remove { .. } => None,
        Action::Deploy { desired }
        | Action::Redeploy { desired, .. }
        | Action::Upgrade { desired, .. }
        | Action::Reconfigure { desired } => Some(*desired),
    }
}

/// Checks the plan invariants for one world.
fn check_invariants(specs: &[Spec], runs: &[Run], plan: &Plan) {
    let blocked_names: Vec<&str> = plan.blocked.iter().map(|b| b.name.as_str()).collect();
    let mut sorted = blocked_names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(blocked_names, sorted, "blocked must be sorted and unique");

    let first_app = plan.actions.iter().position(|a| desired_index(a).is_some());
    let last_remove = plan
        .actions
        .iter()
        .rposition(|a| desired_index(a).is_none());
    if let (Some(first), Some(last)) = (first_app, last_remove) {
        assert!(last < first, "removes must come first");
    }

    let position = |name: &str| {
        plan.actions
            .iter()
            .position(|a| desired_index(a).is_some_and(|i| specs[i].name == name))
    };
    for (i, spec) in specs.iter().enumerate() {
        let acted = plan
            .actions
            .iter()
            .filter(|a| desired_index(a) == Some(i))
            .count();
        let is_blocked = blocked_names.contains(&spec.name.as_str());
        let outcomes =
            usize::from(in_sync(spec, runs) && !is_blocked) + acted + usize::from(is_blocked);
        assert_eq!(outcomes, 1, "{} must have exactly one outcome", spec.name);
        let Some(at) = position(&spec.name) else {
            continue;
        };
        for dep in spec
            .deps
            .iter()
            .filter_map(|d| specs.iter().find(|s| &s.name == d))
        {
            assert!(!blocked_names.contains(&dep.name.as_str()));
            let earlier = position(&dep.name).is_some_and(|p| p < at);
            assert!(
                earlier || in_sync(dep, runs),
                "{} before {}",
                dep.name,
                spec.name
            );
        }
    }
}

proptest! {
    #[test]
    fn random_dags_give_ordered_complete_plans(
        apps in prop::collection::vec(arb_app(), 0..40),
        leftovers in prop::collection::vec((0u8..4, 0u8..4), 0..5),
    ) {
        let (specs, runs) = world_of(&apps, &leftovers);
        let invalid = ["bad0", "bad1"];
        let plan = plan_of(&specs, &runs, &invalid);
        check_invariants(&specs, &runs, &plan);

        let (mut rev_specs, mut rev_runs) = (specs.clone(), runs.clone());
        rev_specs.reverse();
        rev_runs.reverse();
        let reversed = plan_of(&rev_specs, &rev_runs, &["bad1", "bad0"]);
        prop_assert_eq!(describe(&reversed, &rev_specs), describe(&plan, &specs));
        prop_assert_eq!(reversed.blocked, plan.blocked);
    }
}
