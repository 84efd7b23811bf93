//! Ordering between apps: `--depends-on` checked, a cycle found, and what
//! keeps a sync waiting for the apps it depends on.

use std::collections::{BTreeMap, BTreeSet};

use super::{MAX_DEPENDS_ON, name_problem};

/// `--depends-on`: app names, not the app itself, none twice, at most
/// [`MAX_DEPENDS_ON`]. An app not registered yet is allowed: the sync waits
/// for it.
pub fn depends_problem(name: &str, depends_on: &[String]) -> Option<String> {
    if depends_on.len() > MAX_DEPENDS_ON {
        return Some(format!("--depends-on names {} apps, over the limit of {MAX_DEPENDS_ON}", depends_on.len()));
    }
    for (i, dep) in depends_on.iter().enumerate() {
        if let Some(why) = name_problem(dep) {
            return Some(format!("--depends-on: {why}"));
        }
        if dep == name {
            return Some(format!("app {name} cannot depend on itself; remove it from --depends-on"));
        }
        if depends_on[..i].contains(dep) {
            return Some(format!("--depends-on names app {dep} twice"));
        }
    }
    None
}

/// A cycle the dependencies of `graph` (each app's `depends_on`) close
/// through app `from`, as the path `a -> b -> a`; none when there is none.
pub fn cycle(graph: &BTreeMap<String, Vec<String>>, from: &str) -> Option<String> {
    fn visit<'g>(
        graph: &'g BTreeMap<String, Vec<String>>,
        from: &str,
        at: &'g str,
        path: &mut Vec<&'g str>,
        seen: &mut BTreeSet<&'g str>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == from {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if visit(graph, from, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let (key, _) = graph.get_key_value(from)?;
    let mut path = vec![key.as_str()];
    let mut seen = BTreeSet::new();
    visit(graph, from, key, &mut path, &mut seen).then(|| path.join(" -> "))
}

/// How an app another depends on stands, as the controller last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepState {
    pub sync_status: String,
    pub health: String,
    pub syncing: bool,
    /// When it was last fetched and compared.
    pub last_fetch_ms: u64,
}

/// What keeps an app's sync waiting: each app it depends on that is not
/// synced and healthy, with how it stands (not registered, too). A
/// dependency not looked at since `since` (when this app first saw what
/// it would sync; a look in the same moment may have fetched just before
/// a push) is not known to be synced to what was pushed with it: it is
/// looked at again (the second list) before this app goes on.
pub fn blocked_by(
    depends_on: &[String],
    states: &BTreeMap<String, DepState>,
    since: u64,
) -> Option<(String, Vec<String>)> {
    let mut stale = Vec::new();
    let waits: Vec<String> = depends_on
        .iter()
        .filter_map(|dep| match states.get(dep) {
            None => Some(format!("app {dep} (not registered)")),
            Some(s) if s.syncing || s.sync_status != "synced" || s.health != "healthy" => {
                let sync = if s.syncing { "syncing" } else { s.sync_status.as_str() };
                Some(format!("app {dep} ({sync}, {})", s.health))
            }
            Some(s) if s.last_fetch_ms <= since => {
                stale.push(dep.clone());
                Some(format!("app {dep} (being fetched again)"))
            }
            Some(_) => None,
        })
        .collect();
    (!waits.is_empty()).then(|| (format!("waiting for {} to be synced and healthy", waits.join(", ")), stale))
}
