//! `drover rollouts`, `drover rollout status|promote|pause|resume|abort|approve|reject|override` and
//! `drover services`: deploy jobs' rollouts and what each node serves.

use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{Conn, EXIT_FAILED, Exit};
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output::{self, Format};

/// How often `drover rollout status --follow` looks again.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `drover rollouts`.
pub async fn list(conn: &mut Conn, environment: String, service: String, format: Format) -> anyhow::Result<()> {
    let req = pb::ListRolloutsRequest { environment, service, limit: 0 };
    let rollouts = conn.call(true, |c| c_call!(c.list_rollouts(req.clone()))).await?.rollouts;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(rollouts.iter().map(view).collect()))?);
    }
    if rollouts.is_empty() {
        outln!("no rollouts yet; a pipeline job with `deploy:` starts one");
        return Ok(());
    }
    outln!(
        "{:<6} {:<14} {:<16} {:<13} {:<11} {:<13} {:<9} {}",
        "ID",
        "ENVIRONMENT",
        "SERVICE",
        "PHASE",
        "STRATEGY",
        "VERSION",
        "NODES",
        "RUN/JOB"
    );
    for r in &rollouts {
        let done = r.nodes.iter().filter(|n| matches!(n.state.as_str(), "healthy" | "switched")).count();
        let from = if r.run_id.is_empty() { r.started_by.clone() } else { format!("{}/{}", r.run_id, r.job) };
        outln!(
            "{:<6} {:<14} {:<16} {:<13} {:<11} {:<13} {:<9} {from}",
            r.id,
            r.environment,
            r.service,
            r.phase,
            r.strategy,
            r.version,
            format!("{done}/{}", r.nodes.len()),
        );
    }
    Ok(())
}

fn finished(r: &pb::Rollout) -> bool {
    r.finished_ms != 0
}

/// `drover rollout status ID [--follow]`.
pub async fn status(conn: &mut Conn, id: u64, follow: bool, format: Format) -> anyhow::Result<()> {
    let req = pb::GetRolloutRequest { id };
    let mut last = None;
    loop {
        let r = conn.call(true, |c| c_call!(c.get_rollout(req))).await?;
        if !follow {
            print(&r, format)?;
            return Ok(());
        }
        let shown = view(&r);
        if last.as_ref() != Some(&shown) {
            if format == Format::Json {
                output::line(&shown);
            } else {
                print(&r, format.for_stream("rollout status --follow")?)?;
            }
            last = Some(shown);
        }
        if finished(&r) {
            if r.phase == "succeeded" {
                return Ok(());
            }
            return Err(Exit::new(EXIT_FAILED, format!("rollout {id} {}: {}", r.phase, r.message)).into());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

fn print(r: &pb::Rollout, format: Format) -> Result<(), Exit> {
    if format.structured() {
        return output::document(format, &view(r));
    }
    outln!("rollout {} of {} in {}: {}", r.id, r.service, r.environment, r.phase);
    outln!("  release:   {} (sha256 {}, {})", r.version, short(&r.sha256), r.artifact_path);
    if !r.run_id.is_empty() {
        outln!(
            "  from:      run {} job {}{}",
            r.run_id,
            r.job,
            if r.commit.is_empty() { String::new() } else { format!(" at {}", short(&r.commit)) }
        );
    }
    outln!("  strategy:  {}, step {} of {}", r.strategy, (r.step + 1).min(r.steps.max(1)), r.steps.max(1));
    if let Some(wave) = r.waves.get(r.wave as usize) {
        outln!("  wave:      {} of {}, {wave} (waves: {})", r.wave + 1, r.waves.len(), r.waves.join(" → "));
    }
    if r.started_ms != 0 {
        outln!("  started:   {}", fmt_ms(r.started_ms));
    }
    if r.finished_ms != 0 {
        outln!("  finished:  {}", fmt_ms(r.finished_ms));
    }
    match r.hold.as_str() {
        "promote" => outln!("  waiting:   for `drover rollout promote {}`", r.id),
        "until" => outln!("  pausing:   until {}", fmt_ms(r.hold_until_ms)),
        _ => {}
    }
    if !r.message.is_empty() {
        outln!("  message:   {}", r.message);
    }
    if !r.overridden_by.is_empty() {
        outln!("  override:  freezes and deploy windows, by {}: {}", r.overridden_by, r.override_reason);
    }
    let done = r.nodes.iter().filter(|n| matches!(n.state.as_str(), "healthy" | "switched")).count();
    outln!("  progress:  {} {done}/{} nodes", bar(done, r.nodes.len()), r.nodes.len());
    let mut wave = None;
    for n in &r.nodes {
        if !n.wave.is_empty() && wave != Some(&n.wave) {
            // A wave in another environment says which.
            let other = if n.environment.is_empty() || n.environment == r.environment {
                String::new()
            } else {
                format!(" (environment {})", n.environment)
            };
            outln!("    wave {}{other}:", n.wave);
            wave = Some(&n.wave);
        }
        let reason = if n.reason.is_empty() { String::new() } else { format!(": {}", n.reason) };
        let indent = if n.wave.is_empty() { "" } else { "  " };
        outln!("    {indent}{:<20} {}{reason}", n.name, n.state);
    }
    if !r.gates.is_empty() {
        print_gates(r);
    }
    if r.analysing || r.analysing_background || !r.measurements.is_empty() {
        print_analysis(r);
    }
    if !r.hook_log.is_empty() {
        outln!("  hooks' output (the last {} KiB):", 16);
        let text = crate::term::Sanitizer::all(r.hook_log.as_bytes());
        for line in String::from_utf8_lossy(&text).lines() {
            outln!("    {line}");
        }
    }
    Ok(())
}

/// The analysis: each run's measurements, by step, newest run last.
fn print_analysis(r: &pb::Rollout) {
    match (r.analysing, r.analysing_background) {
        (true, true) => outln!("  analysis:  measuring step {} and in the background", r.analysing_step),
        (true, false) => outln!("  analysis:  measuring step {}", r.analysing_step),
        (false, true) => outln!("  analysis:  measuring in the background"),
        (false, false) => outln!("  analysis:"),
    }
    let mut last = None;
    for m in &r.measurements {
        if last != Some((m.background, m.step, m.run)) {
            match m.background {
                true => outln!("    in the background (run {}):", m.run),
                false => outln!("    step {} (run {}):", m.step, m.run),
            }
            last = Some((m.background, m.step, m.run));
        }
        let value = if m.value.is_empty() { "-" } else { &m.value };
        let why = if m.message.is_empty() { String::new() } else { format!(": {}", m.message) };
        outln!("      {}  {:<20} {:<14} {}{why}", fmt_ms(m.at_ms), m.metric, value, m.outcome);
    }
}

fn bar(done: usize, of: usize) -> String {
    const WIDTH: usize = 20;
    let filled = (done * WIDTH).checked_div(of).unwrap_or(0);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

fn short(text: &str) -> &str {
    text.get(..12).unwrap_or(text)
}

/// `drover rollout promote|pause|resume|abort ID`.
pub async fn act(conn: &mut Conn, id: u64, verb: &str, full: bool, format: Format) -> anyhow::Result<()> {
    let req = pb::ActOnRolloutRequest { id, verb: verb.to_string(), full, ..Default::default() };
    act_with(conn, req, format).await
}

/// `drover rollout approve|reject ID [--gate NAME]`, with the comment or
/// the reason.
pub async fn decide(
    conn: &mut Conn,
    id: u64,
    verb: &str,
    gate: Option<String>,
    comment: String,
    format: Format,
) -> anyhow::Result<()> {
    let req = pb::ActOnRolloutRequest {
        id,
        verb: verb.to_string(),
        gate: gate.unwrap_or_default(),
        comment,
        ..Default::default()
    };
    act_with(conn, req, format).await
}

async fn act_with(conn: &mut Conn, req: pb::ActOnRolloutRequest, format: Format) -> anyhow::Result<()> {
    let (id, verb) = (req.id, req.verb.clone());
    // Not idempotent (a promote twice moves two steps): never retried
    // on another coordinator.
    let r = conn.call(false, |c| c_call!(c.act_on_rollout(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &view(&r))?);
    }
    let done = match verb.as_str() {
        "promote" => "promoted",
        "pause" => "paused",
        "resume" => "resumed",
        "approve" => "approved at its gate",
        "reject" => "refused at its gate",
        "override" => "lets its environment's freeze and deploy windows pass",
        _ => "aborted",
    };
    outln!(
        "rollout {id} {done}; now {}{}",
        r.phase,
        if r.message.is_empty() { String::new() } else { format!(": {}", r.message) }
    );
    Ok(())
}

/// `drover rollback SERVICE --env ENV [--to VERSION] [--staged] [--follow]`.
pub async fn rollback(conn: &mut Conn, args: crate::cli::RollbackArgs) -> anyhow::Result<()> {
    let crate::cli::RollbackArgs {
        service, env: environment, to, staged, force, reason, follow, output: format, ..
    } = args;
    let req = pb::RollbackServiceRequest {
        environment,
        service,
        to_version: to.unwrap_or_default(),
        staged,
        force,
        reason: reason.unwrap_or_default(),
    };
    // Not retried elsewhere: a second rollback would abort the first.
    let r = conn.call(false, |c| c_call!(c.rollback_service(req.clone()))).await?;
    if follow {
        return status(conn, r.id, true, format).await;
    }
    if format.structured() {
        return Ok(output::document(format, &view(&r))?);
    }
    let how = if staged { "step by step" } else { "on every node at once" };
    outln!(
        "rollout {} started: {} in {} back to {} {how}; follow it with `drover rollout status {} --follow`",
        r.id,
        r.service,
        r.environment,
        r.version,
        r.id
    );
    Ok(())
}

/// How often `drover service logs -f` asks again.
const LOGS_EVERY: Duration = Duration::from_millis(500);

/// `drover service logs SERVICE --env ENV [--node N] [-f]`: each node's
/// output, the last 64 KiB first, prefixed with the node's name when there
/// are several.
pub async fn service_logs(
    conn: &mut Conn,
    service: String,
    environment: String,
    node: Option<String>,
    follow: bool,
    format: Format,
) -> anyhow::Result<()> {
    let json = format.for_stream("service logs")? == Format::Json;
    let req = pb::ListServicesRequest { environment: environment.clone() };
    let listed = conn.call(true, |c| c_call!(c.list_services(req.clone()))).await?.services;
    let mut nodes: Vec<String> = listed
        .iter()
        .filter(|s| s.service == service && node.as_ref().is_none_or(|n| *n == s.node))
        .map(|s| s.node.clone())
        .collect();
    nodes.dedup();
    if nodes.is_empty() {
        let where_ = node.map(|n| format!(" on node {n}")).unwrap_or_default();
        return Err(Exit::new(
            crate::client::EXIT_NOT_FOUND,
            format!("service {service} is not deployed in {environment}{where_}; `drover services --env {environment}` lists what is"),
        )
        .into());
    }
    let prefix = nodes.len() > 1;
    let mut offsets: Vec<u64> = vec![u64::MAX; nodes.len()];
    // Lines cut at a chunk's end wait for the rest, per node; what is shown
    // passes the terminal-safe filter first.
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); nodes.len()];
    let mut safe: Vec<crate::term::Sanitizer> = nodes.iter().map(|_| crate::term::Sanitizer::new()).collect();
    loop {
        for (i, node) in nodes.iter().enumerate() {
            let req = pb::GetServiceLogsRequest {
                environment: environment.clone(),
                service: service.clone(),
                node: node.clone(),
                offset: offsets[i],
                max_bytes: 0,
            };
            let chunk = conn.call(true, |c| c_call!(c.get_service_logs(req.clone()))).await?;
            offsets[i] = chunk.next_offset;
            safe[i].push(&chunk.data, &mut partial[i]);
            let cut = partial[i].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let whole: Vec<u8> = partial[i].drain(..cut).collect();
            for line in String::from_utf8_lossy(&whole).lines() {
                print_line(node, line, prefix, json);
            }
        }
        if !follow {
            for (i, rest) in partial.iter_mut().enumerate() {
                safe[i].finish(rest);
                if !rest.is_empty() {
                    print_line(&nodes[i], &String::from_utf8_lossy(rest), prefix, json);
                }
            }
            return Ok(());
        }
        tokio::time::sleep(LOGS_EVERY).await;
    }
}

/// One line of a service's output: a JSON line, or the text (after its
/// node's name when there are several).
fn print_line(node: &str, line: &str, prefix: bool, json: bool) {
    if json {
        output::line(&json!({ "node": node, "line": line }));
    } else if prefix {
        outln!("{node}: {line}");
    } else {
        outln!("{line}");
    }
}

/// `drover services [--env ENV]`.
pub async fn services(conn: &mut Conn, environment: String, format: Format) -> anyhow::Result<()> {
    let req = pb::ListServicesRequest { environment };
    let services = conn.call(true, |c| c_call!(c.list_services(req.clone()))).await?.services;
    if format.structured() {
        let all: Vec<Value> = services
            .iter()
            .map(|s| {
                json!({
                    "environment": s.environment, "service": s.service, "node": s.node,
                    "version": s.version, "sha256": s.sha256, "run_id": s.run_id, "commit": s.commit,
                    "rollout": s.rollout, "healthy": s.healthy, "since_ms": s.since_ms, "connected": s.connected,
                    "health_message": s.health_message, "health_ms": s.health_ms, "rejected": s.rejected,
                })
            })
            .collect();
        return Ok(output::document(format, &Value::Array(all))?);
    }
    if services.is_empty() {
        outln!("no services deployed; a pipeline job with `deploy:` deploys one");
        return Ok(());
    }
    outln!(
        "{:<14} {:<16} {:<20} {:<13} {:<13} {:<8} {:<10} {}",
        "ENVIRONMENT",
        "SERVICE",
        "NODE",
        "VERSION",
        "SHA256",
        "HEALTH",
        "RUN",
        "COMMIT"
    );
    for s in &services {
        let health = match (s.healthy, s.connected) {
            (true, true) => "healthy",
            (true, false) => "away",
            (false, _) => "unhealthy",
        };
        outln!(
            "{:<14} {:<16} {:<20} {:<13} {:<13} {:<8} {:<10} {}",
            s.environment,
            s.service,
            s.node,
            s.version,
            short(&s.sha256),
            health,
            s.run_id,
            short(&s.commit)
        );
        if !s.healthy && !s.health_message.is_empty() {
            outln!("    {}", s.health_message);
        }
        if !s.rejected.is_empty() {
            outln!("    REJECTED: {}", s.rejected);
        }
    }
    Ok(())
}

fn view(r: &pb::Rollout) -> Value {
    let gates: Vec<Value> = r
        .gates
        .iter()
        .map(|g| {
            json!({
                "name": g.name, "at": g.at, "step": g.has_step.then_some(g.step), "kind": g.kind,
                "state": g.state, "by": g.by, "comment": g.comment, "asked_ms": g.asked_ms,
                "decided_ms": g.decided_ms, "approvers": g.approvers,
            })
        })
        .collect();
    json!({
        "id": r.id,
        "environment": r.environment,
        "service": r.service,
        "phase": r.phase,
        "strategy": r.strategy,
        "version": r.version,
        "sha256": r.sha256,
        "artifact_path": r.artifact_path,
        "run_id": r.run_id,
        "job": r.job,
        "commit": r.commit,
        "created_ms": r.created_ms,
        "started_ms": r.started_ms,
        "finished_ms": r.finished_ms,
        "message": r.message,
        "step": r.step,
        "steps": r.steps,
        "hold": r.hold,
        "hold_until_ms": r.hold_until_ms,
        "progress_deadline_ms": r.progress_deadline_ms,
        "started_by": r.started_by,
        "hook_log": r.hook_log,
        "analysing": r.analysing,
        "analysing_step": r.analysing_step,
        "analysing_background": r.analysing_background,
        "measurements": r.measurements.iter().map(|m| json!({
            "step": (!m.background).then_some(m.step), "background": m.background,
            "run": m.run, "metric": m.metric, "at_ms": m.at_ms,
            "value": m.value, "outcome": m.outcome, "message": m.message,
        })).collect::<Vec<_>>(),
        "nodes": r.nodes.iter().map(|n| json!({
            "name": n.name, "state": n.state, "reason": n.reason, "rollback_to": n.rollback_to, "wave": n.wave,
            "environment": n.environment,
        })).collect::<Vec<_>>(),
        "waves": r.waves,
        "overridden_by": r.overridden_by,
        "override_reason": r.override_reason,
        "wave": r.wave,
        "gates": gates,
    })
}

/// Each gate asked, in order, with who or what decided it.
fn print_gates(r: &pb::Rollout) {
    outln!("  gates:");
    for g in &r.gates {
        let at = if g.has_step { format!("{} (step {})", g.at, g.step) } else { g.at.clone() };
        let who = match g.state.as_str() {
            "waiting" if g.kind == "approval" => {
                format!("for {} (`drover rollout approve {} --gate {}`)", g.approvers.join(", "), r.id, g.name)
            }
            "waiting" => "for the webhook's 2xx".to_owned(),
            _ => format!("by {} at {}", g.by, fmt_ms(g.decided_ms)),
        };
        let comment = if g.comment.is_empty() { String::new() } else { format!(": {}", g.comment) };
        outln!("    {:<20} {:<28} {:<8} {who}{comment}", g.name, at, g.state);
    }
}
