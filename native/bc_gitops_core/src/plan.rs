//! The planner: the diff of desired against current state, as ordered actions.
//!
//! [`plan`] compares the apps the valid spec files ask for with the apps the
//! runtime reports and returns the [`Action`]s that make the second match the
//! first, plus the apps it holds back ([`Blocked`]) with the reason why.
//!
//! # Rules
//!
//! - Removes come first: current apps that are neither desired nor invalid,
//!   dependents before their dependencies (by the `depends_on` of the last
//!   applied spec), ties by name. A dependency cycle among removed apps
//!   cannot happen with validated specs; if it does, the smallest remaining
//!   name is removed first so that no app is ever dropped.
//! - Then every desired app that is not blocked, in dependency order (an app
//!   after everything it depends on, ties by name), gets at most one action:
//!   [`Action::Deploy`] when not current, [`Action::Upgrade`] when the
//!   version differs in either direction (env changes ride along),
//!   [`Action::Redeploy`] when the version matches but the app is stopped or
//!   failed (the desired env rides along), [`Action::Upgrade`] from the same
//!   version when the app runs where its spec no longer says (its
//!   `isolation`, as the runtime reports it, differs: the runtime moves it),
//!   [`Action::Reconfigure`] when only the env differs, and nothing when in
//!   sync. A runtime that reports no isolation is never asked to move an
//!   app. A status of
//!   [`CurrentStatus::Other`] (starting, unknown...) is not treated as drift:
//!   the planner does not heal what it cannot classify.
//! - A name listed in `invalid` is invalid even if it also appears in
//!   `desired`: the planner never acts on an app whose spec failed
//!   validation. If it runs, it is kept as it is and reported as
//!   [`BlockReason::InvalidSpec`]; it is never removed.
//! - A dependency must be a desired, valid app. A dependency that is running
//!   but no longer desired is being removed, so it counts as missing
//!   ([`BlockReason::MissingDependency`]): deploying against an app that is
//!   about to go would only break later.
//! - A blocked app gets no action but is not removed either: if it runs, it
//!   keeps running as it is. When an app has several reasons the first wins,
//!   in this order: [`BlockReason::Cycle`], then
//!   [`BlockReason::InvalidDependency`], then
//!   [`BlockReason::MissingDependency`], then
//!   [`BlockReason::DependencyBlocked`]; within one kind, the smallest
//!   dependency name.
//! - The plan does not depend on the order of the inputs: everything is
//!   sorted by name internally. Duplicate names cannot come out of
//!   validation; if they do, the first occurrence in the input is used and
//!   the others are ignored (neither planned nor blocked).
//!
//! Every step is O((V + E) log V) and iterative, so a 10,000-long dependency
//! chain neither is slow nor overflows the stack.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// An app as the valid spec files in git describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredApp<'a, E> {
    pub name: &'a str,
    pub version: &'a str,
    pub depends_on: &'a [String],
    pub env: E,
    /// Where the app must run (its isolation and how), compared as `env` is.
    pub isolation: E,
}

/// The state the runtime reports for a current app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CurrentStatus {
    Running,
    Stopped,
    Failed,
    /// Anything else (starting, unknown...): not treated as drift.
    Other,
}

/// An app as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentApp<'a, E> {
    pub name: &'a str,
    pub version: &'a str,
    pub env: E,
    pub status: CurrentStatus,
    /// From the last applied spec (may be empty); only orders removals.
    pub depends_on: &'a [String],
    /// Where it runs, when the runtime says.
    pub isolation: Option<E>,
}

/// The outcome of [`plan`]: actions to run in order, and held-back apps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Sorted by name; each app at most once.
    pub blocked: Vec<Blocked>,
}

/// One step of a plan. `desired` is an index into the `desired` slice given
/// to [`plan`], so that the caller can reach its own data (e.g. Erlang terms)
/// without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop and remove a current app that is no longer desired.
    Remove { name: String },
    /// Deploy an app that is not current at all.
    Deploy { desired: usize },
    /// Same version, but the runtime reports it stopped or failed (drift);
    /// the reconciler decides whether to heal.
    Redeploy {
        desired: usize,
        status: CurrentStatus,
    },
    /// The version differs (upgrade or downgrade), or the app must move
    /// (its isolation differs; `from_version` is then its own version); env
    /// changes ride along.
    Upgrade {
        desired: usize,
        from_version: String,
    },
    /// Same version and running, but the env differs.
    Reconfigure { desired: usize },
}

impl Action {
    /// The name of the app this action is about, given the same `desired`
    /// slice that was passed to [`plan`] (`None` if the index is out of it).
    pub fn name<'s, E>(&'s self, desired: &'s [DesiredApp<'s, E>]) -> Option<&'s str> {
        match self {
            Action::Remove { name } => Some(name),
            Action::Deploy { desired: index }
            | Action::Redeploy { desired: index, .. }
            | Action::Upgrade { desired: index, .. }
            | Action::Reconfigure { desired: index } => desired.get(*index).map(|app| app.name),
        }
    }
}

/// An app the plan holds back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub name: String,
    pub reason: BlockReason,
}

/// Why an app is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// The app is in a dependency cycle (or depends on itself). Lists the
    /// members of the cycle depth-first along `depends_on` from the smallest
    /// name; for a simple cycle that is the cycle order. Shared by all the
    /// members, so that a cycle of k apps costs O(k), not O(k²).
    Cycle(Arc<[String]>),
    /// A dependency is neither desired nor invalid (possibly being removed).
    MissingDependency(String),
    /// A dependency's spec is invalid.
    InvalidDependency(String),
    /// A dependency is itself blocked.
    DependencyBlocked(String),
    /// The app runs but its spec is now invalid: held at its current
    /// version, not removed.
    InvalidSpec,
}

/// Plans the actions that make `current` match `desired`.
///
/// `invalid` names the apps whose spec file exists but failed validation.
/// See the [module documentation](self) for the rules.
pub fn plan<E: PartialEq>(
    desired: &[DesiredApp<'_, E>],
    current: &[CurrentApp<'_, E>],
    invalid: &[&str],
) -> Plan {
    let invalid: BTreeSet<&str> = invalid.iter().copied().collect();
    let current_by_name = first_by_name(current.iter().map(|app| app.name));
    let graph = Graph::build(desired, &invalid);
    let reasons = block_reasons(&graph, &invalid);

    let matched = match_current(&graph, &current_by_name);

    let mut actions = removals(current, &matched.undesired, &invalid);
    let unblocked: Vec<bool> = reasons.iter().map(Option::is_none).collect();
    actions.extend(updates(
        desired,
        current,
        &matched.of_node,
        &graph,
        &unblocked,
    ));
    let blocked = collect_blocked(&graph, reasons, &invalid, &matched.undesired);
    Plan { actions, blocked }
}

/// The actions of the unblocked desired apps, in dependency order.
fn updates<E: PartialEq>(
    desired: &[DesiredApp<'_, E>],
    current: &[CurrentApp<'_, E>],
    current_of_node: &[Option<usize>],
    graph: &Graph<'_>,
    unblocked: &[bool],
) -> Vec<Action> {
    let action_of = |node: usize| {
        let index = graph.desired_index[node];
        let have = current_of_node[node].and_then(|at| current.get(at));
        desired
            .get(index)
            .and_then(|want| action_for(index, want, have))
    };
    name_ordered_topo(&graph.deps, unblocked)
        .into_iter()
        .filter_map(action_of)
        .collect()
}

/// Each name with the position of its first occurrence, sorted by name, so
/// that duplicates resolve the same way everywhere.
fn first_by_name<'a>(names: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut all: Vec<(&str, usize)> = names.enumerate().map(|(at, name)| (name, at)).collect();
    // Sorting by (name, position) puts each name's first occurrence first.
    all.sort_unstable();
    all.dedup_by(|later, earlier| later.0 == earlier.0);
    all
}

/// The dependency graph of the valid desired apps. Nodes are numbered in
/// name order, so that ordering nodes by number orders them by name.
struct Graph<'a> {
    names: Vec<&'a str>,
    /// Index into the caller's `desired` slice.
    desired_index: Vec<usize>,
    /// The nodes each node depends on, ascending, without duplicates.
    deps: Vec<Vec<usize>>,
    /// The dependencies that are not nodes (invalid or missing), ascending.
    outside: Vec<Vec<&'a str>>,
}

impl<'a> Graph<'a> {
    fn build<E>(desired: &[DesiredApp<'a, E>], invalid: &BTreeSet<&str>) -> Self {
        let by_name = first_by_name(desired.iter().map(|app| app.name));
        let (names, desired_index): (Vec<&'a str>, Vec<usize>) = by_name
            .into_iter()
            .filter(|(name, _)| !invalid.contains(name))
            .unzip();
        let node_of: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(node, &name)| (name, node))
            .collect();
        let mut deps = Vec::with_capacity(names.len());
        let mut outside = Vec::with_capacity(names.len());
        for &index in &desired_index {
            let depends_on = desired.get(index).map_or(&[][..], |app| app.depends_on);
            let (inside, out) = split_deps(depends_on, &node_of);
            deps.push(inside);
            outside.push(out);
        }
        Graph {
            names,
            desired_index,
            deps,
            outside,
        }
    }

    /// For each node, the nodes that depend on it.
    fn dependents(&self) -> Vec<Vec<usize>> {
        transpose(&self.deps)
    }
}

/// Splits dependency names into graph nodes and outside names, both sorted
/// and deduplicated.
fn split_deps<'a>(
    depends_on: &'a [String],
    node_of: &HashMap<&str, usize>,
) -> (Vec<usize>, Vec<&'a str>) {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for dep in depends_on {
        match node_of.get(dep.as_str()) {
            Some(&node) => inside.push(node),
            None => outside.push(dep.as_str()),
        }
    }
    inside.sort_unstable();
    inside.dedup();
    outside.sort_unstable();
    outside.dedup();
    (inside, outside)
}

/// Reverses every edge of an adjacency list.
fn transpose(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut reversed = vec![Vec::new(); adjacency.len()];
    for (from, targets) in adjacency.iter().enumerate() {
        for &to in targets {
            if let Some(list) = reversed.get_mut(to) {
                list.push(from);
            }
        }
    }
    reversed
}

/// The block reason of every node (`None`: not blocked).
fn block_reasons(graph: &Graph<'_>, invalid: &BTreeSet<&str>) -> Vec<Option<BlockReason>> {
    let mut reasons = cycle_reasons(graph);
    for (node, reason) in reasons.iter_mut().enumerate() {
        if reason.is_none() {
            *reason = outside_reason(&graph.outside[node], invalid);
        }
    }
    propagate_blocks(graph, &mut reasons);
    reasons
}

/// Invalid dependencies win over missing ones; within each, the smallest
/// name (the list is sorted).
fn outside_reason(outside: &[&str], invalid: &BTreeSet<&str>) -> Option<BlockReason> {
    if let Some(dep) = outside.iter().find(|dep| invalid.contains(*dep)) {
        return Some(BlockReason::InvalidDependency((*dep).to_owned()));
    }
    outside
        .first()
        .map(|dep| BlockReason::MissingDependency((*dep).to_owned()))
}

/// Blocks, transitively, every node that depends on a blocked node. The
/// reason names the smallest blocked dependency, which is only known once
/// the whole blocked set is, hence two passes.
fn propagate_blocks(graph: &Graph<'_>, reasons: &mut [Option<BlockReason>]) {
    let dependents = graph.dependents();
    let mut blocked: Vec<bool> = reasons.iter().map(Option::is_some).collect();
    let mut queue: VecDeque<usize> = (0..blocked.len()).filter(|&n| blocked[n]).collect();
    while let Some(node) = queue.pop_front() {
        for &dependent in &dependents[node] {
            if !blocked[dependent] {
                blocked[dependent] = true;
                queue.push_back(dependent);
            }
        }
    }
    for (node, reason) in reasons.iter_mut().enumerate() {
        if reason.is_none() && blocked[node] {
            *reason = graph.deps[node]
                .iter()
                .find(|&&dep| blocked[dep])
                .map(|&dep| BlockReason::DependencyBlocked(graph.names[dep].to_owned()));
        }
    }
}

/// A [`BlockReason::Cycle`] for every node in a strongly connected component
/// of more than one node, or that depends on itself.
fn cycle_reasons(graph: &Graph<'_>) -> Vec<Option<BlockReason>> {
    let component = strongly_connected(&graph.deps);
    let mut size = vec![0usize; graph.names.len()];
    for &c in &component {
        size[c] += 1;
    }
    let in_cycle =
        |node: usize| size[component[node]] > 1 || graph.deps[node].binary_search(&node).is_ok();
    let mut reasons: Vec<Option<BlockReason>> = vec![None; graph.names.len()];
    let mut listed = vec![false; graph.names.len()];
    // Nodes ascend by name, so the first node met in a component is its
    // smallest, where the listing starts.
    for start in 0..graph.names.len() {
        if !listed[start] && in_cycle(start) {
            let members = cycle_listing(graph, &component, start, &mut listed);
            let listing: Arc<[String]> =
                members.iter().map(|&n| graph.names[n].to_owned()).collect();
            for node in members {
                reasons[node] = Some(BlockReason::Cycle(Arc::clone(&listing)));
            }
        }
    }
    reasons
}

/// The members of `start`'s component in depth-first preorder along
/// dependency edges (smallest name first), which for a simple cycle is the
/// cycle order. Marks them in `listed`.
fn cycle_listing(
    graph: &Graph<'_>,
    component: &[usize],
    start: usize,
    listed: &mut [bool],
) -> Vec<usize> {
    let mut order = Vec::new();
    let mut stack = vec![start];
    while let Some(node) = stack.pop() {
        if listed[node] {
            continue;
        }
        listed[node] = true;
        order.push(node);
        let same = graph.deps[node]
            .iter()
            .rev()
            .filter(|&&dep| component[dep] == component[start] && !listed[dep]);
        stack.extend(same);
    }
    order
}

/// Tarjan's strongly connected components, iteratively so that long chains
/// cannot overflow the stack. Returns the component id of each node.
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<usize> {
    let mut tarjan = Tarjan::new(adjacency.len());
    for root in 0..adjacency.len() {
        if tarjan.index[root] == UNVISITED {
            tarjan.run(adjacency, root);
        }
    }
    tarjan.component
}

const UNVISITED: usize = usize::MAX;

/// The state of Tarjan's algorithm, with an explicit call stack.
struct Tarjan {
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    component: Vec<usize>,
    next_index: usize,
    next_component: usize,
}

impl Tarjan {
    fn new(n: usize) -> Self {
        Tarjan {
            index: vec![UNVISITED; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            component: vec![UNVISITED; n],
            next_index: 0,
            next_component: 0,
        }
    }

    fn open(&mut self, node: usize) {
        self.index[node] = self.next_index;
        self.low[node] = self.next_index;
        self.next_index += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
    }

    /// Each call frame is a node and the position of its next edge to visit.
    fn run(&mut self, adjacency: &[Vec<usize>], root: usize) {
        let mut calls = vec![(root, 0usize)];
        self.open(root);
        while let Some(frame) = calls.last_mut() {
            let (node, edge) = *frame;
            if let Some(&next) = adjacency[node].get(edge) {
                frame.1 += 1;
                if self.index[next] == UNVISITED {
                    self.open(next);
                    calls.push((next, 0));
                } else if self.on_stack[next] {
                    self.low[node] = self.low[node].min(self.index[next]);
                }
            } else {
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    self.low[parent] = self.low[parent].min(self.low[node]);
                }
                if self.low[node] == self.index[node] {
                    self.close_component(node);
                }
            }
        }
    }

    fn close_component(&mut self, root: usize) {
        while let Some(member) = self.stack.pop() {
            self.on_stack[member] = false;
            self.component[member] = self.next_component;
            if member == root {
                break;
            }
        }
        self.next_component += 1;
    }
}

/// Kahn's algorithm over the `included` nodes: each node after its included
/// prerequisites, ready nodes taken smallest first (nodes are numbered in
/// name order). Should a cycle leave no node ready, the smallest remaining
/// node goes next, so that no node is ever dropped.
fn name_ordered_topo(prerequisites: &[Vec<usize>], included: &[bool]) -> Vec<usize> {
    let followers = transpose(prerequisites);
    let mut waiting = waiting_counts(prerequisites, included);
    let total = (0..prerequisites.len())
        .filter(|&n| is_in(included, n))
        .count();
    let mut done = vec![false; prerequisites.len()];
    let mut ready: BinaryHeap<Reverse<usize>> = (0..prerequisites.len())
        .filter(|&n| is_in(included, n) && waiting[n] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(total);
    let mut smallest_left = 0;
    while order.len() < total {
        let node = match ready.pop() {
            Some(Reverse(node)) => node,
            // Stuck on a cycle. Every node below `smallest_left` is done or
            // excluded, and one included node is left, so this stops.
            None => {
                while done[smallest_left] || !is_in(included, smallest_left) {
                    smallest_left += 1;
                }
                smallest_left
            }
        };
        if done[node] {
            continue;
        }
        done[node] = true;
        order.push(node);
        for &follower in &followers[node] {
            if is_in(included, follower) && !done[follower] {
                waiting[follower] -= 1;
                if waiting[follower] == 0 {
                    ready.push(Reverse(follower));
                }
            }
        }
    }
    order
}

fn is_in(included: &[bool], node: usize) -> bool {
    included.get(node).copied().unwrap_or(false)
}

/// For each included node, how many included prerequisites it waits for.
fn waiting_counts(prerequisites: &[Vec<usize>], included: &[bool]) -> Vec<usize> {
    prerequisites
        .iter()
        .enumerate()
        .map(|(node, pre)| {
            if is_in(included, node) {
                pre.iter().filter(|&&p| is_in(included, p)).count()
            } else {
                0
            }
        })
        .collect()
}

/// The current apps matched against the desired ones.
struct Matched<'a> {
    /// For each graph node, the position of its current app, if any.
    of_node: Vec<Option<usize>>,
    /// The current apps that are not (validly) desired, by name, with their
    /// positions.
    undesired: Vec<(&'a str, usize)>,
}

/// Merges the two name-sorted lists, which is cheaper than looking each
/// name up.
fn match_current<'a>(graph: &Graph<'_>, current_by_name: &[(&'a str, usize)]) -> Matched<'a> {
    let mut of_node = vec![None; graph.names.len()];
    let mut undesired = Vec::new();
    let mut node = 0;
    for &(name, at) in current_by_name {
        while graph.names.get(node).is_some_and(|&desired| desired < name) {
            node += 1;
        }
        match of_node.get_mut(node) {
            Some(slot) if graph.names[node] == name => *slot = Some(at),
            _ => undesired.push((name, at)),
        }
    }
    Matched { of_node, undesired }
}

/// The removes: current apps neither desired nor invalid, each before the
/// removed apps it depends on.
fn removals<E>(
    current: &[CurrentApp<'_, E>],
    undesired: &[(&str, usize)],
    invalid: &BTreeSet<&str>,
) -> Vec<Action> {
    let gone: Vec<(&str, usize)> = undesired
        .iter()
        .filter(|(name, _)| !invalid.contains(name))
        .copied()
        .collect();
    let node_of: HashMap<&str, usize> = gone
        .iter()
        .enumerate()
        .map(|(node, &(name, _))| (name, node))
        .collect();
    // A removed app's prerequisites are the removed apps that depend on it.
    let mut prerequisites = vec![Vec::new(); gone.len()];
    for (node, &(_, at)) in gone.iter().enumerate() {
        let depends_on = current.get(at).map_or(&[][..], |app| app.depends_on);
        for dep in depends_on {
            match node_of.get(dep.as_str()) {
                Some(&target) if target != node => prerequisites[target].push(node),
                _ => {}
            }
        }
    }
    let everything = vec![true; gone.len()];
    name_ordered_topo(&prerequisites, &everything)
        .into_iter()
        .map(|node| Action::Remove {
            name: gone[node].0.to_owned(),
        })
        .collect()
}

/// The action that brings one desired app in line, if any.
fn action_for<E: PartialEq>(
    index: usize,
    want: &DesiredApp<'_, E>,
    have: Option<&CurrentApp<'_, E>>,
) -> Option<Action> {
    let Some(have) = have else {
        return Some(Action::Deploy { desired: index });
    };
    if have.version != want.version {
        return Some(Action::Upgrade {
            desired: index,
            from_version: have.version.to_owned(),
        });
    }
    let moved = have
        .isolation
        .as_ref()
        .is_some_and(|isolation| *isolation != want.isolation);
    match have.status {
        CurrentStatus::Stopped | CurrentStatus::Failed => Some(Action::Redeploy {
            desired: index,
            status: have.status,
        }),
        CurrentStatus::Running | CurrentStatus::Other if moved => Some(Action::Upgrade {
            desired: index,
            from_version: have.version.to_owned(),
        }),
        CurrentStatus::Running | CurrentStatus::Other if have.env != want.env => {
            Some(Action::Reconfigure { desired: index })
        }
        CurrentStatus::Running | CurrentStatus::Other => None,
    }
}

/// The blocked desired apps plus the running invalid ones, sorted by name.
fn collect_blocked(
    graph: &Graph<'_>,
    reasons: Vec<Option<BlockReason>>,
    invalid: &BTreeSet<&str>,
    undesired: &[(&str, usize)],
) -> Vec<Blocked> {
    let from_graph = graph
        .names
        .iter()
        .zip(reasons)
        .filter_map(|(name, reason)| reason.map(|reason| (*name, reason)));
    // Invalid names are never graph nodes, so the running ones are all in
    // `undesired`.
    let held = undesired
        .iter()
        .filter(|(name, _)| invalid.contains(name))
        .map(|&(name, _)| (name, BlockReason::InvalidSpec));
    let mut blocked: Vec<Blocked> = from_graph
        .chain(held)
        .map(|(name, reason)| Blocked {
            name: name.to_owned(),
            reason,
        })
        .collect();
    blocked.sort_by(|a, b| a.name.cmp(&b.name));
    blocked
}
