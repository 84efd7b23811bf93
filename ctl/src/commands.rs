//! The commands that look at the coordinators and steer runs: `runs`,
//! `status` (a table or `--json`), `logs` (with `--follow`, reconnecting
//! through [`Resumable`]), `cancel`, `agents` and `cluster`, and how they
//! print what the coordinator answers.

use std::time::{Duration, UNIX_EPOCH};

use drover_proto::v1 as pb;

use crate::client::{self, Conn, Exit};
use crate::out::outln;
use crate::resume::Resumable;
use crate::{follow, states, term};

/// `drover runs`: recent runs, newest first.
pub async fn runs(conn: &mut Conn, limit: u32) -> anyhow::Result<()> {
    let runs = conn.call(true, |c| c_call!(c.list_runs(pb::ListRunsRequest { limit }))).await?.runs;
    outln!("{:<6} {:<24} {:<10} {:<12} {:<10}", "RUN", "NAME", "STATE", "COMMIT", "CREATED");
    for r in runs {
        let commit = if r.commit.is_empty() { "-".to_string() } else { r.commit[..12.min(r.commit.len())].to_string() };
        let state = states::run_word(states::run(r.state)?);
        outln!("{:<6} {:<24} {:<10} {:<12} {:<10}", r.id, r.name, state, commit, fmt_ms(r.created_ms));
    }
    Ok(())
}

/// `drover status`: a run and its jobs, as a table or as JSON.
pub async fn status(conn: &mut Conn, run: String, json: bool) -> anyhow::Result<()> {
    let r = conn.call(true, |c| c_call!(c.get_run(pb::GetRunRequest { run_id: run.clone() }))).await?;
    if json {
        outln!("{}", run_json(&r)?);
    } else {
        print_run(&r)?;
    }
    Ok(())
}

/// `drover logs`: a job's log (`req.follow`: until the job ends), without
/// what a reopened stream replays; `reconnect` is how long a log stream
/// that broke waits for a coordinator.
pub async fn logs(conn: &mut Conn, req: pb::GetLogsRequest, raw: bool, reconnect: Duration) -> anyhow::Result<()> {
    use std::io::Write;
    let follow = req.follow;
    let mut seen = follow::LogSeen::default();
    let mut out = std::io::stdout().lock();
    let mut last_attempt = 0;
    // One sanitiser for the whole log: a sequence cut between two
    // chunks is finished by the next one.
    let mut clean = term::Sanitizer::new();
    let mut buf = Vec::new();
    let patience = client::Patience::new(
        reconnect,
        format!(
            "the job goes on without this client: `drover logs {} {}{}` shows its log again",
            req.run_id,
            req.job,
            if follow { " --follow" } else { "" }
        ),
    );
    // A stream that breaks (the coordinator died, or was restarted)
    // is opened again, on it once it is back or on another
    // coordinator; it starts from the beginning of the log, and
    // what was printed already is skipped. The first open fails at
    // once, as any other command does, when no coordinator answers.
    let first = conn.call(true, |c| c_call!(c.get_logs(req.clone()))).await?;
    let mut log = Resumable::new(patience, Some(first), move |c| c_call!(c.get_logs(req.clone())));
    while let Some(chunk) = log.next(conn, None, None, || {}).await? {
        let Some(data) = seen.fresh(&chunk) else { continue };
        buf.clear();
        if chunk.attempt != last_attempt && last_attempt != 0 {
            // What the last attempt left unfinished ends with it.
            clean.finish(&mut buf);
            buf.extend_from_slice(format!("--- attempt {} ---\n", chunk.attempt).as_bytes());
        }
        last_attempt = chunk.attempt;
        if raw {
            buf.extend_from_slice(data);
        } else {
            clean.push(data, &mut buf);
        }
        out.write_all(&buf)?;
        if follow {
            out.flush()?;
        }
    }
    buf.clear();
    clean.finish(&mut buf);
    out.write_all(&buf)?;
    Ok(())
}

/// `drover cancel`.
pub async fn cancel(conn: &mut Conn, run: String) -> anyhow::Result<()> {
    let r = conn.call(true, |c| c_call!(c.cancel_run(pb::CancelRunRequest { run_id: run.clone() }))).await?;
    let state = states::run(r.state)?;
    outln!("run {} {}", r.id, if state == pb::RunState::Running { "cancelling" } else { states::run_word(state) });
    Ok(())
}

/// `drover agents`: name, labels, slots in use, last seen.
pub async fn agents(conn: &mut Conn) -> anyhow::Result<()> {
    let agents = conn.call(true, |c| c_call!(c.list_agents(pb::ListAgentsRequest {}))).await?.agents;
    outln!("{:<20} {:<32} {:<8} {:<10}", "NAME", "LABELS", "SLOTS", "LAST SEEN");
    for a in agents {
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let seen = match (a.connected, a.draining) {
            (true, true) => "draining".to_string(),
            (true, false) if !a.unready.is_empty() => format!("connected (not ready: {})", a.unready),
            (true, false) => "connected".to_string(),
            (false, _) => fmt_ms(a.last_seen_ms),
        };
        outln!(
            "{:<20} {:<32} {:<8} {:<10}",
            a.name,
            if labels.is_empty() { "-".to_string() } else { labels.join(",") },
            format!("{}/{}", a.slots_in_use, a.slots),
            seen
        );
    }
    Ok(())
}

/// `drover cluster`: the coordinators, the leader, the epoch and the
/// store's health.
pub async fn cluster(conn: &mut Conn) -> anyhow::Result<()> {
    let c = conn.call(true, |c| c_call!(c.cluster(pb::ClusterRequest {}))).await?;
    outln!("store: {}   epoch: {}   answered by: {}", c.store, c.epoch, c.answered_by);
    outln!("{:<28} {:<34} {:<8} STARTED", "COORDINATOR", "URL", "ROLE");
    for m in &c.coordinators {
        let role = if m.leader { "leader" } else { "follower" };
        outln!("{:<28} {:<34} {:<8} {}", m.id, m.url, role, fmt_ms(m.started_ms));
    }
    if c.leader_id.is_empty() {
        outln!("no leader at the moment (an election is under way)");
    }
    if !c.endpoints.is_empty() {
        outln!("{:<34} {:<9} DETAIL", "STORE ENDPOINT", "HEALTH");
        for e in &c.endpoints {
            outln!("{:<34} {:<9} {}", e.endpoint, if e.healthy { "healthy" } else { "DOWN" }, e.detail);
        }
    }
    Ok(())
}

fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let ago = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or_default()
        .as_secs();
    match ago {
        0..60 => format!("{ago}s ago"),
        60..3600 => format!("{}m ago", ago / 60),
        3600..86400 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86400),
    }
}

fn print_run(r: &pb::Run) -> Result<(), Exit> {
    outln!("run {}  {}  {}", r.id, r.name, states::run_word(states::run(r.state)?));
    if !r.repo.is_empty() {
        outln!("source: {} @ {} ({})", r.repo, r.commit, r.file);
    } else {
        outln!("source: {}", r.file);
    }
    if !r.rerun_of.is_empty() {
        outln!("rerun of run {}", r.rerun_of);
    }
    outln!("{:<20} {:<11} {:<8} {:<16} DETAIL", "JOB", "STATE", "ATTEMPT", "AGENT");
    for j in &r.jobs {
        let state = states::job(j.state)?;
        let detail = if let Some(left) = states::blocked_for(j) {
            format!("waiting for {}; fails in {left} unless one connects", j.waiting_for)
        } else if !j.waiting_for.is_empty() {
            format!("waiting for {}", j.waiting_for)
        } else if !j.needs.is_empty() && state == pb::JobState::Pending {
            format!("needs {}", j.needs.join(", "))
        } else {
            j.message.clone()
        };
        let agent = if j.agent.is_empty() { "-" } else { &j.agent };
        outln!("{:<20} {:<11} {:<8} {:<16} {}", j.name, states::job_word(state), j.attempt, agent, detail);
    }
    Ok(())
}

fn run_json(r: &pb::Run) -> Result<serde_json::Value, Exit> {
    let jobs = r
        .jobs
        .iter()
        .map(|j| {
            Ok(serde_json::json!({
                "name": j.name,
                "state": states::job_word(states::job(j.state)?),
                "needs": j.needs,
                "attempt": j.attempt,
                "agent": j.agent,
                "waiting_for": j.waiting_for,
                "blocked_until_ms": j.blocked_until_ms,
                "exit_code": j.exit_code,
                "started_ms": j.started_ms,
                "finished_ms": j.finished_ms,
                "message": j.message,
                "reused_from": j.reused_from,
            }))
        })
        .collect::<Result<Vec<serde_json::Value>, Exit>>()?;
    Ok(serde_json::json!({
        "id": r.id,
        "name": r.name,
        "state": states::run_word(states::run(r.state)?),
        "repo": r.repo,
        "commit": r.commit,
        "file": r.file,
        "created_ms": r.created_ms,
        "finished_ms": r.finished_ms,
        "rerun_of": r.rerun_of,
        "jobs": jobs,
    }))
}
