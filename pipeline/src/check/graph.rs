//! The `needs` of all jobs together, checked once every job has been read:
//! each need must name a defined job, and needs must not form a cycle.
//! Needs that name missing jobs are left out before looking for cycles, and
//! `jobs` has already reported (and left out) a job that needs itself, so
//! each mistake is reported once.

use std::collections::HashMap;

use super::Checker;
use super::jobs::JobDraft;
use super::suggest::{closest, list_some};
use crate::yaml::{Pos, abbreviate};

/// The most job names we spell out when naming a cycle.
const MAX_CYCLE_NAMES: usize = 10;
const CYCLE_HINT: &str = "a job cannot need itself, directly or through other jobs; remove one of these needs";

impl Checker<'_> {
    /// Checks that every `needs` entry names a job, and that there are no
    /// cycles. Entries that name missing jobs are dropped before looking for
    /// cycles.
    ///
    /// A need that names a matrix job stands for all its expansions: the
    /// job's `needs` (and `skip_artifacts_of`) list them instead.
    pub(super) fn needs_graph(&mut self, names: &[&str], drafts: &mut [JobDraft]) {
        let mut index: HashMap<String, Vec<usize>> = HashMap::with_capacity(drafts.len());
        for (i, draft) in drafts.iter().enumerate() {
            let written = draft.spec.matrix.as_ref().map_or(&draft.spec.name, |cell| &cell.of);
            index.entry(written.clone()).or_default().push(i);
        }
        let mut edges: Vec<Vec<(usize, Pos)>> = vec![Vec::new(); drafts.len()];
        for i in 0..drafts.len() {
            let expanded = |need: &str| -> Vec<String> {
                index
                    .get(need)
                    .map(|targets| targets.iter().map(|&t| drafts[t].spec.name.clone()).collect())
                    .unwrap_or_default()
            };
            if drafts[i]
                .spec
                .needs
                .iter()
                .any(|need| index.get(need).is_some_and(|t| t.len() > 1 || drafts[t[0]].spec.name != *need))
            {
                let needs: Vec<String> = drafts[i]
                    .spec
                    .needs
                    .iter()
                    .flat_map(|need| {
                        let names = expanded(need);
                        if names.is_empty() { vec![need.clone()] } else { names }
                    })
                    .collect();
                let skip: Vec<String> = drafts[i]
                    .spec
                    .skip_artifacts_of
                    .iter()
                    .flat_map(|need| {
                        let names = expanded(need);
                        if names.is_empty() { vec![need.clone()] } else { names }
                    })
                    .collect();
                drafts[i].spec.needs = needs;
                drafts[i].spec.skip_artifacts_of = skip;
            }
            for (need, pos) in drafts[i].needs.clone() {
                match index.get(need.as_str()) {
                    Some(targets) => edges[i].extend(targets.iter().map(|&target| (target, pos))),
                    None => {
                        let hint = match closest(&need, names, &mut self.suggestion_budget) {
                            Some(close) => format!("did you mean `{close}`?"),
                            None => format!("defined jobs: {}", list_some(names)),
                        };
                        self.error(
                            pos,
                            format!(
                                "job `{}` needs `{}`, which is not defined",
                                abbreviate(drafts[i].spec.matrix.as_ref().map_or(&drafts[i].spec.name, |m| &m.of)),
                                abbreviate(&need)
                            ),
                            Some(hint),
                        );
                    }
                }
            }
        }
        let successors: Vec<Vec<usize>> =
            edges.iter().map(|out| out.iter().map(|&(target, _)| target).collect()).collect();
        for component in strongly_connected_components(&successors) {
            if component.len() < 2 {
                // Self-needs were already reported and are not in the graph.
                continue;
            }
            let cycle = shortest_cycle(&successors, &component);
            let mut names: Vec<String> = cycle.iter().map(|&i| abbreviate(&drafts[i].spec.name)).collect();
            if names.len() > MAX_CYCLE_NAMES + 2 {
                // Keep the start, which the position points at, and the end,
                // which shows how the cycle closes.
                let hidden = names.len() - MAX_CYCLE_NAMES - 2;
                names.splice(MAX_CYCLE_NAMES..names.len() - 2, [format!("({hidden} more)")]);
            }
            let (first, second) = (cycle[0], cycle[1]);
            let pos = edges[first].iter().find(|(target, _)| *target == second).map(|&(_, pos)| pos);
            self.error(
                pos.unwrap_or(Pos::START),
                format!("cycle in needs: {}", names.join(" -> ")),
                Some(CYCLE_HINT.to_owned()),
            );
        }
    }
}

/// Tarjan's algorithm, without recursion so that a long chain of jobs cannot
/// overflow the stack. Returns the components in no particular order; each
/// component lists its members in ascending order.
fn strongly_connected_components(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = successors.len();
    let mut order: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_order = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if order[root].is_some() {
            continue;
        }
        // Each frame is a node and how many of its successors we have visited.
        let mut frames = vec![(root, 0)];
        order[root] = Some(next_order);
        low[root] = next_order;
        next_order += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(frame) = frames.last_mut() {
            let (node, visited) = *frame;
            if let Some(&next) = successors[node].get(visited) {
                frame.1 += 1;
                match order[next] {
                    None => {
                        order[next] = Some(next_order);
                        low[next] = next_order;
                        next_order += 1;
                        stack.push(next);
                        on_stack[next] = true;
                        frames.push((next, 0));
                    }
                    Some(seen) if on_stack[next] => low[node] = low[node].min(seen),
                    Some(_) => {}
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if Some(low[node]) == order[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components.sort_unstable_by_key(|component| component[0]);
    components
}

/// A shortest cycle through the first (earliest in the file) member of
/// `component`, as a list of nodes that starts and ends with that member.
/// Breadth-first search keeps the reported cycle as short as possible.
fn shortest_cycle(successors: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let in_component = |node: usize| component.binary_search(&node).is_ok();
    let mut came_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &successors[node] {
            if next == start {
                let mut cycle = vec![start, node];
                let mut at = node;
                while at != start {
                    at = came_from[&at];
                    cycle.push(at);
                }
                cycle.reverse();
                return cycle;
            }
            if in_component(next) && !came_from.contains_key(&next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    // Every member of a component of two or more nodes is on a cycle, so
    // the search always returns above; this is only a safe fallback.
    vec![start, start]
}
