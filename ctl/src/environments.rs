//! `drover env create|apply|show|rm` and `drover envs`: environments, the
//! sets of agents (by the labels in their certificates) that deploys go
//! to, with their nodes as the leader sees them, their deploy windows and
//! whether deploys may go ahead now (the coordinator judges it when it
//! answers). Services per node come with deploys; nothing is shown for
//! them yet.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{Conn, EXIT_INVALID, Exit};
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output::{self, Format};
use crate::term;

/// The largest file read; the coordinator's limit is the same, and says so
/// itself for a file that reaches it.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// `drover env create`.
pub async fn create(conn: &mut Conn, req: pb::CreateEnvironmentRequest, format: Format) -> anyhow::Result<()> {
    let created = conn.call(false, |c| c_call!(c.create_environment(req.clone()))).await?;
    // A follower takes the definition but does not know who is connected:
    // the nodes come from the leader (and stay unknown without one).
    let get = pb::GetEnvironmentRequest { name: created.name.clone() };
    let env = conn.call(true, |c| c_call!(c.get_environment(get.clone()))).await.unwrap_or(created);
    if format.structured() {
        return Ok(output::document(format, &view(&env))?);
    }
    outln!(
        "environment {} created: its nodes are the agents labelled {} ({} known, {} connected now); {}",
        env.name,
        selector(&env),
        env.nodes.len(),
        env.nodes_connected,
        approval(&env)
    );
    Ok(())
}

/// The name and text of the file `drover env apply -f` names (`-`:
/// standard input).
pub fn read_file(path: &Path) -> Result<(String, String), Exit> {
    let stdin = path == Path::new("-");
    let name = if stdin { "<stdin>".to_string() } else { path.display().to_string() };
    let cannot = |e: std::io::Error| Exit::new(EXIT_INVALID, format!("cannot read {name}: {e}"));
    let mut bytes = Vec::new();
    let limit = MAX_FILE_BYTES + 1;
    if stdin {
        std::io::stdin().take(limit).read_to_end(&mut bytes).map_err(cannot)?;
    } else {
        std::fs::File::open(path).map_err(cannot)?.take(limit).read_to_end(&mut bytes).map_err(cannot)?;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Exit::new(EXIT_INVALID, format!("{name} is over the limit of {} KiB", MAX_FILE_BYTES / 1024)));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Exit::new(EXIT_INVALID, format!("{name} is not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()))
    })?;
    Ok((name, text))
}

/// `drover env apply -f FILE`.
pub async fn apply(conn: &mut Conn, file_name: String, text: String, format: Format) -> anyhow::Result<()> {
    let req = pb::ApplyEnvironmentsRequest { file_name, text };
    let applied = conn.call(true, |c| c_call!(c.apply_environments(req.clone()))).await?;
    if format.structured() {
        let doc = json!({"created": applied.created, "replaced": applied.replaced, "unchanged": applied.unchanged});
        return Ok(output::document(format, &doc)?);
    }
    for (names, what) in
        [(&applied.created, "created"), (&applied.replaced, "replaced"), (&applied.unchanged, "unchanged")]
    {
        for name in names {
            outln!("environment {name} {what}");
        }
    }
    Ok(())
}

/// `drover env rm NAME`.
pub async fn remove(conn: &mut Conn, name: String, format: Format) -> anyhow::Result<()> {
    let req = pb::RemoveEnvironmentRequest { name: name.clone() };
    conn.call(false, |c| c_call!(c.remove_environment(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &json!({ "removed": name }))?);
    }
    outln!("environment {name} removed; its agents are as they were");
    Ok(())
}

/// `drover env show NAME`.
pub async fn show(conn: &mut Conn, name: String, format: Format) -> anyhow::Result<()> {
    let req = pb::GetEnvironmentRequest { name };
    let env = conn.call(true, |c| c_call!(c.get_environment(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &view(&env))?);
    }
    outln!(
        "environment {}{}",
        env.name,
        if env.description.is_empty() { String::new() } else { format!(": {}", env.description) }
    );
    outln!("  selector:  {}", selector(&env));
    outln!("  approval:  {}", approval(&env));
    outln!("  branches:  {}", branches(&env));
    print_windows(&env, "  windows:   ", "             ");
    outln!("  deploys:   {}", deploys(&env));
    let updated = if env.updated_ms == env.created_ms {
        String::new()
    } else {
        format!(", changed {} by {}", fmt_ms(env.updated_ms), env.updated_by)
    };
    outln!("  created:   {} by {}{updated}", fmt_ms(env.created_ms), env.created_by);
    outln!("  nodes:     {} of {} connected", env.nodes_connected, env.nodes.len());
    print_nodes(&env);
    Ok(())
}

/// `drover envs`.
pub async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let envs = conn.call(true, |c| c_call!(c.list_environments(pb::ListEnvironmentsRequest {}))).await?.environments;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(envs.iter().map(view).collect()))?);
    }
    if envs.is_empty() {
        outln!("no environments; define one with `drover env create NAME --selector role=web,env=staging`");
        return Ok(());
    }
    outln!("{:<20} {:<32} {:<7} {:<24} {:<20} {}", "NAME", "SELECTOR", "NODES", "APPROVAL", "BRANCHES", "DEPLOYS");
    for env in &envs {
        let approvers = if env.require_approval { env.approvers.join(",") } else { "-".to_string() };
        let filter = if env.branches.is_empty() { "*".to_string() } else { env.branches.join(",") };
        let nodes = format!("{}/{}", env.nodes_connected, env.nodes.len());
        let open = if env.closed.is_empty() { "open" } else { "closed" };
        outln!("{:<20} {:<32} {:<7} {:<24} {:<20} {open}", env.name, selector(env), nodes, approvers, filter);
        if format == Format::Wide {
            if !env.windows.is_empty() {
                print_windows(env, "    windows: ", "             ");
                outln!("    deploys: {}", deploys(env));
            }
            print_nodes(env);
        }
    }
    Ok(())
}

/// One line per node, under its environment.
fn print_nodes(env: &pb::Environment) {
    if env.nodes.is_empty() {
        outln!(
            "    (no agent has these labels; issue one with `drover certs issue-agent NAME --dir DIR --labels {}`)",
            selector(env)
        );
    }
    for n in &env.nodes {
        let state = match (n.connected, n.draining) {
            (true, true) => "connected, draining".to_string(),
            (true, false) if !n.unready.is_empty() => format!("connected, not ready: {}", n.unready),
            (true, false) => "connected, ready".to_string(),
            (false, _) => format!("not connected, last seen {}", fmt_ms(n.last_seen_ms)),
        };
        outln!("    {:<20} {state}", n.name);
    }
}

fn selector(env: &pb::Environment) -> String {
    let mut labels: Vec<String> = env.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    labels.join(",")
}

fn approval(env: &pb::Environment) -> String {
    if env.require_approval {
        format!("deploys wait for an approval by {}", env.approvers.join(", "))
    } else {
        "deploys need no approval".to_string()
    }
}

fn branches(env: &pb::Environment) -> String {
    let who = match env.deploy_role.as_str() {
        "" => String::new(),
        role => format!("; by hand, only the {} role", term::field(role)),
    };
    if env.branches.is_empty() {
        format!("pipelines of every branch may deploy{who}")
    } else {
        format!("only pipelines of {} may deploy{who}", env.branches.join(", "))
    }
}

/// One line per deploy window, the first after `first`, the others after
/// `rest`; a line saying there are none when there are none.
fn print_windows(env: &pb::Environment, first: &str, rest: &str) {
    if env.windows.is_empty() {
        outln!("{first}none: deploys may go ahead at any time");
    }
    for (i, w) in env.windows.iter().enumerate() {
        let reason = if w.reason.is_empty() { String::new() } else { format!(": {}", w.reason) };
        let lead = if i == 0 { first } else { rest };
        outln!("{lead}{} {:?} for {} ({}){reason}", w.kind, w.cron, window_length(w.for_ms), w.timezone);
    }
}

/// Whether deploys may go ahead now, as the coordinator judged it.
fn deploys(env: &pb::Environment) -> String {
    if env.closed.is_empty() { "may go ahead now".to_string() } else { format!("wait: {}", env.closed) }
}

/// A window's `for` as the file writes it (`48h`, not `2d`).
fn window_length(ms: u64) -> String {
    drover_client::duration::format_in(Duration::from_millis(ms), drover_client::duration::PIPELINE_UNITS)
}

fn view(env: &pb::Environment) -> Value {
    json!({
        "name": env.name,
        "selector": env.selector.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "require_approval": env.require_approval,
        "approvers": env.approvers,
        "branches": env.branches,
        "description": env.description,
        "deploy_role": env.deploy_role,
        "created_ms": env.created_ms,
        "created_by": env.created_by,
        "updated_ms": env.updated_ms,
        "updated_by": env.updated_by,
        "windows": env.windows.iter().map(|w| json!({
            "kind": w.kind,
            "cron": w.cron,
            "for_ms": w.for_ms,
            "timezone": w.timezone,
            "reason": w.reason,
        })).collect::<Vec<_>>(),
        "open": env.closed.is_empty(),
        "closed": env.closed,
        "reopens_ms": env.reopens_ms,
        "nodes_connected": env.nodes_connected,
        "nodes_total": env.nodes.len(),
        "nodes": env.nodes.iter().map(|n| json!({
            "name": n.name,
            "connected": n.connected,
            "ready": n.ready,
            "draining": n.draining,
            "unready": n.unready,
            "last_seen_ms": n.last_seen_ms,
        })).collect::<Vec<_>>(),
    })
}
