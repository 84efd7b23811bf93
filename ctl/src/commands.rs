//! The commands that look at the coordinators and steer runs: `runs`,
//! `status`, `logs` (with `--follow`, reconnecting through [`Resumable`]),
//! `cancel`, `agents` and `cluster`, and how they print what the
//! coordinator answers: each builds its answer as JSON once (the fields
//! README.md documents) and prints it as `-o` asks ([`Format`]).

use std::time::{Duration, UNIX_EPOCH};

use drover_proto::v1 as pb;

use serde_json::{Value, json};

use crate::client::{self, Conn, Exit};
use crate::out::outln;
use crate::output::{self, Format};
use crate::resume::Resumable;
use crate::{follow, states, term};

/// `drover runs`: recent runs, newest first, that `req` admits.
pub async fn runs(conn: &mut Conn, req: pb::ListRunsRequest, format: Format) -> anyhow::Result<()> {
    let runs = conn.call(true, |c| c_call!(c.list_runs(req.clone()))).await?.runs;
    let views = runs.iter().map(output::run).collect::<Result<Vec<Value>, Exit>>()?;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(views))?);
    }
    let now = now_ms();
    let wide = format == Format::Wide;
    let mut header =
        format!("{:<6} {:<24} {:<10} {:<12} {:<8} {:<9}", "RUN", "NAME", "STATE", "COMMIT", "AGE", "DURATION");
    if wide {
        header.push_str(&format!(
            " {:<12} {:<20} {:<24} {:<8} {:<20} SOURCE",
            "EVENT", "BRANCH", "CREATED", "RERUN OF", "BY"
        ));
    }
    outln!("{}", header.trim_end());
    for r in &runs {
        let commit = if r.commit.is_empty() { "-".to_string() } else { r.commit[..12.min(r.commit.len())].to_string() };
        let state = states::run_word(states::run(r.state)?);
        let end = if r.finished_ms == 0 { now } else { r.finished_ms };
        let mut row = format!(
            "{:<6} {:<24} {:<10} {:<12} {:<8} {:<9}",
            r.id,
            r.name,
            state,
            commit,
            output::human(now.saturating_sub(r.created_ms)),
            output::human(end.saturating_sub(r.created_ms)),
        );
        if wide {
            let source = if r.repo.is_empty() { r.file.clone() } else { format!("{} ({})", r.repo, r.file) };
            let rerun = if r.rerun_of.is_empty() { "-" } else { &r.rerun_of };
            let event = if r.event.is_empty() { "manual" } else { &r.event };
            let branch = [&r.branch, &r.tag].into_iter().find(|b| !b.is_empty()).map_or("-", |b| b.as_str());
            // Who submitted it; a trigger's run has nobody.
            let by = if r.submitted_by.is_empty() { "-".to_string() } else { term::field(&r.submitted_by) };
            row.push_str(&format!(
                " {event:<12} {branch:<20} {:<24} {:<8} {by:<20} {source}",
                utc(r.created_ms),
                rerun
            ));
        }
        outln!("{}", row.trim_end());
    }
    Ok(())
}

/// `drover status`: a run and its jobs.
pub async fn status(conn: &mut Conn, run: String, format: Format) -> anyhow::Result<()> {
    let r = conn.call(true, |c| c_call!(c.get_run(pb::GetRunRequest { run_id: run.clone() }))).await?;
    if format.structured() {
        output::document(format, &output::run(&r)?)?;
    } else {
        print_run(&r, format == Format::Wide)?;
    }
    Ok(())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A time as `2026-12-02 01:47:37Z`, for wide tables.
pub(crate) fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = (ms / 1000) as i64;
    let (days, rest) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `drover logs`: a job's log (`req.follow`: until the job ends), without
/// what a reopened stream replays; `reconnect` is how long a log stream
/// that broke waits for a coordinator.
pub async fn logs(
    conn: &mut Conn,
    req: pb::GetLogsRequest,
    raw: bool,
    format: Format,
    reconnect: Duration,
) -> anyhow::Result<()> {
    use std::io::Write;
    let json = format.for_stream("logs")? == Format::Json;
    let mut lines = output::Lines::default();
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
        if json {
            lines.push(&chunk.job, chunk.attempt, data).iter().for_each(output::line);
            continue;
        }
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
    if json {
        lines.finish().iter().for_each(output::line);
        return Ok(());
    }
    buf.clear();
    clean.finish(&mut buf);
    out.write_all(&buf)?;
    Ok(())
}

/// `drover version`: this CLI's version and, when a coordinator answers,
/// its version and URL; an unreachable coordinator is said, not an error.
pub async fn version(urls: &str, tls_dir: &std::path::Path, format: Format) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    let coordinator = match Conn::connect(urls, tls_dir).await {
        Ok(mut conn) => match conn.call(true, |c| c_call!(c.cluster(pb::ClusterRequest {}))).await {
            Ok(c) => Ok((c.version, c.answered_by)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if format.structured() {
        let coordinator = match &coordinator {
            Ok((version, id)) => json!({ "version": version, "id": id }),
            Err(e) => json!({ "error": e }),
        };
        return Ok(output::document(format, &json!({ "client": { "version": client }, "coordinator": coordinator }))?);
    }
    outln!("drover {client}");
    match coordinator {
        Ok((version, id)) => outln!("coordinator {version} ({id})"),
        Err(e) => outln!("coordinator: not reachable ({e})"),
    }
    Ok(())
}

/// `drover artifacts RUN [JOB]`: each job's artifacts (digest, size,
/// files), from the run's status.
pub async fn artifacts(conn: &mut Conn, run: String, job: Option<String>, format: Format) -> anyhow::Result<()> {
    let r = conn.call(true, |c| c_call!(c.get_run(pb::GetRunRequest { run_id: run.clone() }))).await?;
    if let Some(job) = &job
        && !r.jobs.iter().any(|j| &j.name == job)
    {
        let names: Vec<&str> = r.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Exit::new(
            client::EXIT_NOT_FOUND,
            format!("run {run} has no job {job:?}; its jobs are: {}", names.join(", ")),
        )
        .into());
    }
    let rows: Vec<(&pb::Job, &pb::Artifact)> = r
        .jobs
        .iter()
        .filter(|j| job.as_ref().is_none_or(|name| &j.name == name))
        .filter_map(|j| Some((j, j.artifact.as_ref()?)))
        .collect();
    if format.structured() {
        let views = rows
            .iter()
            .map(|(j, a)| json!({ "job": j.name, "sha256": a.sha256, "size": a.size, "files": a.files, "reused_from": j.reused_from }))
            .collect();
        return Ok(output::document(format, &Value::Array(views))?);
    }
    if rows.is_empty() {
        outln!("run {run} has no artifacts{}", job.map(|j| format!(" from job {j}")).unwrap_or_default());
        return Ok(());
    }
    outln!("{:<20} {:>10} {:>6}  SHA256", "JOB", "SIZE", "FILES");
    for (j, a) in rows {
        outln!("{:<20} {:>10} {:>6}  {}", j.name, a.size, a.files, a.sha256);
    }
    Ok(())
}

/// `drover artifacts get RUN JOB -o DIR`: downloads the job's archive,
/// checks it against the digest the run records, and unpacks it with
/// `drover_archive::unpack` (never outside `dest`; all or nothing).
pub async fn artifacts_get(conn: &mut Conn, run: String, job: String, dest: &std::path::Path) -> anyhow::Result<()> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let r = conn.call(true, |c| c_call!(c.get_run(pb::GetRunRequest { run_id: run.clone() }))).await?;
    let req = pb::GetArtifactRequest { run_id: run.clone(), job: job.clone() };
    let mut stream = conn.call(true, |c| c_call!(c.get_artifact(req.clone()))).await?;
    let want = r.jobs.iter().find(|j| j.name == job).and_then(|j| j.artifact.clone());
    let Some(want) = want else {
        return Err(Exit::new(client::EXIT_NOT_FOUND, format!("job {job} of run {run} has no artifacts")).into());
    };
    let tar = std::env::temp_dir().join(format!("drover-artifact-{}-{}.tar", std::process::id(), want.sha256));
    let fail = |e: std::io::Error| Exit::new(client::EXIT_INVALID, format!("{}: {e}", tar.display()));
    let mut file = tokio::fs::File::create(&tar).await.map_err(fail)?;
    let mut hasher = sha2::Sha256::new();
    let fetched = async {
        while let Some(chunk) = stream.message().await.map_err(client::status_exit)? {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(fail)?;
        }
        file.flush().await.map_err(fail)?;
        Ok::<(), Exit>(())
    }
    .await;
    let unpacked = fetched.and_then(|()| {
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if got != want.sha256 {
            return Err(Exit::new(
                client::EXIT_UNREACHABLE,
                format!("the download's sha256 is {got}, not the {} the run records; try again", want.sha256),
            ));
        }
        let digest = want
            .sha256
            .parse()
            .map_err(|e: drover_archive::Error| Exit::new(client::EXIT_UNREACHABLE, e.to_string()))?;
        let options = drover_archive::UnpackOptions { expected_sha256: Some(digest), ..Default::default() };
        let reader = std::io::BufReader::new(std::fs::File::open(&tar).map_err(fail)?);
        drover_archive::unpack(reader, dest, &options)
            .map_err(|e| Exit::new(client::EXIT_INVALID, format!("cannot unpack into {}: {e}", dest.display())))
    });
    let _ = std::fs::remove_file(&tar);
    let manifest = unpacked?;
    let files = manifest.entries.iter().filter(|e| matches!(e.kind, drover_archive::EntryKind::File { .. })).count();
    outln!("{files} file{} of job {job} (run {run}) in {}", if files == 1 { "" } else { "s" }, dest.display());
    Ok(())
}

/// `drover cancel`.
pub async fn cancel(conn: &mut Conn, run: String) -> anyhow::Result<()> {
    let r = conn.call(true, |c| c_call!(c.cancel_run(pb::CancelRunRequest { run_id: run.clone() }))).await?;
    match states::run(r.state)? {
        pb::RunState::Running => outln!("run {} cancelling", r.id),
        state => outln!("run {} already finished ({}); nothing to cancel", r.id, states::run_word(state)),
    }
    Ok(())
}

/// `drover approve` and `drover reject`: the job as it is after.
pub async fn decide(conn: &mut Conn, req: pb::DecideJobRequest, format: Format) -> anyhow::Result<()> {
    let run = conn.call(false, |c| c_call!(c.decide_job(req.clone()))).await?;
    let job =
        run.jobs.iter().find(|j| j.name == req.job).ok_or_else(|| {
            Exit::new(client::EXIT_INVALID, format!("the coordinator's answer has no job {:?}", req.job))
        })?;
    if format.structured() {
        return Ok(output::document(format, &output::job(job)?)?);
    }
    let verb = if req.approve { "approved" } else { "rejected" };
    outln!("job {} of run {} {verb}; it is {}", job.name, run.id, states::job_word(states::job(job.state)?));
    Ok(())
}

/// `drover agents`: name, labels, slots in use, last seen.
pub async fn agents(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let agents = conn.call(true, |c| c_call!(c.list_agents(pb::ListAgentsRequest {}))).await?.agents;
    if format.structured() {
        let views = agents
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "labels": a.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "slots": a.slots,
                    "slots_in_use": a.slots_in_use,
                    "connected": a.connected,
                    "draining": a.draining,
                    "unready": a.unready,
                    "last_seen_ms": a.last_seen_ms,
                    "version": a.version,
                    "via": a.via,
                })
            })
            .collect();
        return Ok(output::document(format, &Value::Array(views))?);
    }
    outln!("{:<20} {:<32} {:<8} {:<10}", "NAME", "LABELS", "SLOTS", "LAST SEEN");
    for a in agents {
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let seen = match (a.connected, a.draining) {
            (true, true) => "draining".to_string(),
            (true, false) if !a.unready.is_empty() => format!("connected (not ready: {})", a.unready),
            (true, false) if !a.via.is_empty() => format!("connected via {}", a.via),
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
pub async fn cluster(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let c = conn.call(true, |c| c_call!(c.cluster(pb::ClusterRequest {}))).await?;
    if format.structured() {
        let view = json!({
            "store": c.store,
            "epoch": c.epoch,
            "leader_id": c.leader_id,
            "answered_by": c.answered_by,
            "coordinators": c.coordinators.iter().map(|m| json!({
                "id": m.id, "url": m.url, "leader": m.leader, "started_ms": m.started_ms,
            })).collect::<Vec<_>>(),
            "endpoints": c.endpoints.iter().map(|e| json!({
                "endpoint": e.endpoint, "healthy": e.healthy, "detail": e.detail,
            })).collect::<Vec<_>>(),
        });
        return Ok(output::document(format, &view)?);
    }
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

pub(crate) fn fmt_ms(ms: u64) -> String {
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

/// "cache: hit KEY", and the agent's warm cache when that chose it.
fn cache_detail(j: &pb::Job) -> String {
    match (j.cache.is_empty(), j.placement.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!("cache: {}", j.cache),
        (true, false) => format!("{} chosen for its {}", j.agent, j.placement),
        (false, false) => format!("cache: {}; {} chosen for its {}", j.cache, j.agent, j.placement),
    }
}

fn print_run(r: &pb::Run, wide: bool) -> Result<(), Exit> {
    outln!("run {}  {}  {}", r.id, r.name, states::run_word(states::run(r.state)?));
    if !r.repo.is_empty() {
        outln!("source: {} @ {} ({})", r.repo, r.commit, r.file);
    } else {
        outln!("source: {}", r.file);
    }
    if !r.rerun_of.is_empty() {
        outln!("rerun of run {}", r.rerun_of);
    }
    outln!("started by {}", output::started_by(r));
    if !r.submitted_by.is_empty() {
        outln!("submitted by: {}", term::field(&r.submitted_by));
    }
    if wide {
        outln!(
            "{:<20} {:<11} {:<8} {:<16} {:<9} {:<24} DETAIL",
            "JOB",
            "STATE",
            "ATTEMPT",
            "AGENT",
            "DURATION",
            "STARTED"
        );
    } else {
        outln!("{:<20} {:<11} {:<8} {:<16} DETAIL", "JOB", "STATE", "ATTEMPT", "AGENT");
    }
    let now = now_ms();
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
        // What the job's cache did, and why its agent was chosen.
        // The approval's decision shows once the job's own message is gone.
        let approval = if j.message == j.approval { String::new() } else { j.approval.clone() };
        let detail =
            [detail, approval, cache_detail(j)].into_iter().filter(|d| !d.is_empty()).collect::<Vec<_>>().join("; ");
        let agent = if j.agent.is_empty() { "-" } else { &j.agent };
        if wide {
            let duration = match (j.started_ms, j.finished_ms) {
                (0, _) => "-".to_string(),
                (start, 0) => output::human(now.saturating_sub(start)),
                (start, end) => output::human(end.saturating_sub(start)),
            };
            outln!(
                "{:<20} {:<11} {:<8} {:<16} {:<9} {:<24} {}",
                j.name,
                states::job_word(state),
                j.attempt,
                agent,
                duration,
                utc(j.started_ms),
                detail
            );
        } else {
            outln!("{:<20} {:<11} {:<8} {:<16} {}", j.name, states::job_word(state), j.attempt, agent, detail);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_wide_tables_are_utc() {
        let cases = [
            (0, "-"),
            (1, "1970-01-01 00:00:00Z"),
            (951_782_400_000, "2000-02-29 00:00:00Z"),
            (1_796_175_457_000, "2026-12-02 01:37:37Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(utc(ms), want, "{ms}");
        }
    }
}
