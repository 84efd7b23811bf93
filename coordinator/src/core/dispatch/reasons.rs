//! What a queued job waits for, in words, and whether any connected agent
//! could ever take it: for the jobs [`super::plan`] could not place.

use super::{AgentSlots, Ready, matches};

/// Whether no connected agent could ever take the job: none has its
/// labels, whether busy, draining or not ready.
pub fn blocked(job: &Ready<'_>, agents: &[AgentSlots<'_>]) -> bool {
    !agents.iter().any(|a| matches(job.runs_on, a.labels))
}

/// What a queued job waits for, in words.
pub fn wait_reason(job: &Ready<'_>, agents: &[AgentSlots<'_>]) -> String {
    let labels = if job.runs_on.is_empty() {
        "any agent".to_string()
    } else {
        let wanted: Vec<String> = job.runs_on.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("an agent with labels {}", wanted.join(","))
    };
    let matching: Vec<&AgentSlots> = agents.iter().filter(|a| matches(job.runs_on, a.labels)).collect();
    let busy: Vec<&AgentSlots> = matching.iter().copied().filter(|a| a.open()).collect();
    let draining: Vec<&AgentSlots> = matching.iter().copied().filter(|a| a.draining).collect();
    let unready: Vec<&AgentSlots> = matching.iter().copied().filter(|a| !a.draining && !a.unready.is_empty()).collect();
    let names = |list: &[&AgentSlots]| list.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
    let mut closed = Vec::new();
    if !draining.is_empty() {
        closed.push(format!("draining: {}", names(&draining)));
    }
    if !unready.is_empty() {
        let why: Vec<String> = unready.iter().map(|a| format!("{} ({})", a.name, a.unready)).collect();
        closed.push(format!("not ready: {}", why.join(", ")));
    }
    match (busy.is_empty(), closed.is_empty()) {
        (true, true) => format!("{labels} (no connected agent matches)"),
        (true, false) if unready.is_empty() => {
            format!("{labels} (the matching agents are draining: {})", names(&draining))
        }
        (true, false) => format!("{labels} (the matching agents take no work: {})", closed.join("; ")),
        (false, true) => format!("a free slot on {labels} (busy: {})", names(&busy)),
        (false, false) => format!("a free slot on {labels} (busy: {}; {})", names(&busy), closed.join("; ")),
    }
}
