//! `drover apps` and `drover app create|status|rm|sync|diff|history|refresh`:
//! GitOps apps. Any coordinator answers; a sync is a request the leader's
//! apps controller takes up within a second, and `--wait` follows it in
//! the app's history until it ends.

use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::AppCommand;
use crate::client::{Conn, EXIT_FAILED, Exit};
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output::{self, Format};

/// How often `sync --wait` looks at the history.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A call on the app service of the connection of control client `c`, as
/// `c_call!` makes one on the control service.
macro_rules! a_call {
    ($c:ident . $m:ident ( $req:expr )) => {{
        let req = $req;
        let mut a = $c.apps();
        async move { a.$m(req).await }
    }};
}

pub async fn run(conn: &mut Conn, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Create {
            name,
            repo,
            path,
            environment,
            revision,
            poll,
            auto_sync,
            self_heal,
            prune,
            detect_only,
            depends_on,
            sync_timeout,
            deploy_key,
            known_hosts,
            deploy_role,
            output,
            ..
        } => {
            let known_hosts = match known_hosts {
                Some(path) => crate::environments::read_file(&path)?.1,
                None => String::new(),
            };
            let req = pb::CreateAppRequest {
                name,
                repo,
                path,
                environment,
                revision: revision.unwrap_or_default(),
                poll_ms: poll.map_or(0, |p| p.as_millis() as u64),
                auto_sync,
                self_heal,
                prune,
                detect_only,
                depends_on,
                sync_timeout_ms: sync_timeout.map_or(0, |t| t.as_millis() as u64),
                deploy_key: deploy_key.unwrap_or_default(),
                known_hosts,
                deploy_role: deploy_role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            };
            let app = conn.call(false, |c| a_call!(c.create_app(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&app))?);
            }
            outln!(
                "app {} created: {} of {} at {}, into environment {}; fetched every {}{}",
                app.name,
                app.path,
                app.repo,
                if app.revision.is_empty() { "the default branch" } else { &app.revision },
                app.environment,
                drover_client::duration::format(Duration::from_millis(app.poll_ms)),
                if app.auto_sync { ", synced on each new commit" } else { "; `drover app sync` syncs it" }
            );
            Ok(())
        }
        AppCommand::Apply { file, output, .. } => {
            let (file_name, text) = crate::environments::read_file(&file)?;
            let req = pb::ApplyAppsRequest { file_name, text };
            let applied = conn.call(true, |c| a_call!(c.apply_apps(req.clone()))).await?;
            if output.structured() {
                let doc =
                    json!({"created": applied.created, "replaced": applied.replaced, "unchanged": applied.unchanged});
                return Ok(output::document(output, &doc)?);
            }
            for (names, what) in
                [(&applied.created, "created"), (&applied.replaced, "replaced"), (&applied.unchanged, "unchanged")]
            {
                for name in names {
                    outln!("app {name} {what}");
                }
            }
            Ok(())
        }
        AppCommand::Status { name, output, .. } => {
            let req = pb::GetAppRequest { name };
            let app = conn.call(true, |c| a_call!(c.get_app(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&app))?);
            }
            show(&app);
            Ok(())
        }
        AppCommand::Rm { name, output, .. } => {
            let req = pb::DeleteAppRequest { name: name.clone() };
            conn.call(true, |c| a_call!(c.delete_app(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &json!({ "removed": name }))?);
            }
            outln!("app {name} removed; what it deployed keeps running");
            Ok(())
        }
        AppCommand::Refresh { name, output, .. } => {
            let req = pb::RefreshAppRequest { name };
            let app = conn.call(true, |c| a_call!(c.refresh_app(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&app))?);
            }
            outln!("app {} will be fetched within a second", app.name);
            Ok(())
        }
        AppCommand::Sync { name, dry_run, revision, wait, output, .. } => {
            let req = pb::SyncAppRequest { name: name.clone(), dry_run, revision: revision.unwrap_or_default() };
            let resp = conn.call(false, |c| a_call!(c.sync_app(req.clone()))).await?;
            if dry_run {
                return print_diff(&resp.diff.unwrap_or_default(), output);
            }
            requested(conn, name, resp.request, "sync", wait, output).await
        }
        AppCommand::Rollback { name, to, wait, output, .. } => {
            let req = pb::RollbackAppRequest { name: name.clone(), to };
            let resp = conn.call(false, |c| a_call!(c.rollback_app(req.clone()))).await?;
            requested(conn, name, resp.request, "rollback (pinned)", wait, output).await
        }
        AppCommand::Unpin { name, output, .. } => {
            let req = pb::UnpinAppRequest { name };
            let app = conn.call(true, |c| a_call!(c.unpin_app(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&app))?);
            }
            outln!(
                "app {} follows {} again",
                app.name,
                if app.revision.is_empty() { "its default branch" } else { &app.revision }
            );
            Ok(())
        }
        AppCommand::Diff { name, revision, output, .. } => {
            let req = pb::DiffAppRequest { name, revision: revision.unwrap_or_default() };
            let diff = conn.call(true, |c| a_call!(c.diff_app(req.clone()))).await?;
            print_diff(&diff, output)
        }
        AppCommand::History { name, output, .. } => {
            let req = pb::AppHistoryRequest { name };
            let syncs = conn.call(true, |c| a_call!(c.app_history(req.clone()))).await?.syncs;
            if output.structured() {
                return Ok(output::document(output, &Value::Array(syncs.iter().map(sync_view).collect()))?);
            }
            if syncs.is_empty() {
                outln!("no syncs yet");
            }
            for s in &syncs {
                print_sync(s);
            }
            Ok(())
        }
    }
}

/// `drover apps`.
pub async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let apps = conn.call(true, |c| a_call!(c.list_apps(pb::ListAppsRequest {}))).await?.apps;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(apps.iter().map(view).collect()))?);
    }
    if apps.is_empty() {
        outln!("no apps; register one with `drover app create NAME --repo URL --path DIR --env ENV`");
        return Ok(());
    }
    outln!("{:<20} {:<12} {:<12} {:<12} {:<12} {:<12} ERROR", "NAME", "ENV", "SYNC", "HEALTH", "SYNCED", "WANTED");
    for a in &apps {
        outln!(
            "{:<20} {:<12} {:<12} {:<12} {:<12} {:<12} {}",
            a.name,
            a.environment,
            a.sync_status,
            a.health,
            short(&a.synced_commit),
            if a.pinned_commit.is_empty() {
                short(&a.wanted_commit).to_owned()
            } else {
                format!("{} (pin)", short(&a.pinned_commit))
            },
            a.last_error.lines().next().unwrap_or_default()
        );
        // A node still on a rejected release is shown whatever the format.
        for line in &a.rejected {
            outln!("  REJECTED: {line}");
        }
        if format == Format::Wide {
            for line in &a.drift {
                outln!("  {line}");
            }
        }
    }
    Ok(())
}

/// A sync asked for (request `request`): said, or with `wait` followed in
/// the history until it ends.
async fn requested(
    conn: &mut Conn,
    name: String,
    request: u64,
    what: &str,
    wait: bool,
    format: Format,
) -> anyhow::Result<()> {
    if !wait {
        if format.structured() {
            return Ok(output::document(format, &json!({ "app": name, "request": request }))?);
        }
        outln!("{what} of app {name} asked for (request {}); `drover app history {name}` shows it", request);
        return Ok(());
    }
    if !format.structured() {
        eprintln!("{what} of app {name} asked for; waiting for its sync to end");
    }
    loop {
        let req = pb::AppHistoryRequest { name: name.clone() };
        let syncs = conn.call(true, |c| a_call!(c.app_history(req.clone()))).await?.syncs;
        // The sync that took this request, or a later one (requests made
        // while a sync waits are taken together, by the first sync after
        // them all). Syncs are listed newest first: take the oldest.
        let answered = syncs.iter().rev().find(|s| s.request >= request);
        if let Some(s) = answered.filter(|s| s.finished_ms > 0) {
            if format.structured() {
                output::document(format, &sync_view(s))?;
            } else {
                print_sync(s);
            }
            if s.outcome != "succeeded" {
                return Err(Exit::new(EXIT_FAILED, format!("sync {} of app {name} {}", s.id, s.outcome)).into());
            }
            return Ok(());
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

fn short(commit: &str) -> &str {
    if commit.is_empty() { "-" } else { commit.get(..10).unwrap_or(commit) }
}

fn show(a: &pb::App) {
    outln!("app {} ({} of {} at {})", a.name, a.path, a.repo, if a.revision.is_empty() { "HEAD" } else { &a.revision });
    outln!("  environment: {}", a.environment);
    let flags: Vec<&str> =
        [(a.auto_sync, "auto-sync"), (a.self_heal, "self-heal"), (a.prune, "prune"), (a.detect_only, "detect-only")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| *f)
            .collect();
    outln!(
        "  poll: every {}; {}",
        drover_client::duration::format(Duration::from_millis(a.poll_ms)),
        if flags.is_empty() { "synced by hand".to_owned() } else { flags.join(", ") }
    );
    outln!("  sync: {}, health: {}", a.sync_status, a.health);
    outln!(
        "  synced: {}, wanted: {}, fetched {}",
        short(&a.synced_commit),
        short(&a.wanted_commit),
        fmt_ms(a.last_fetch_ms)
    );
    if !a.depends_on.is_empty() {
        outln!("  depends on: {}", a.depends_on.join(", "));
    }
    if !a.deploy_key.is_empty() {
        outln!("  deploy key: secret {} (trusting {} host keys)", a.deploy_key, a.known_hosts);
    }
    if !a.deploy_role.is_empty() {
        outln!("  deployed by hand by: the {} role", crate::term::field(&a.deploy_role));
    }
    if !a.pinned_commit.is_empty() {
        outln!(
            "  pinned to {} by {} ({}); `drover app unpin {}` lets it follow its revision",
            short(&a.pinned_commit),
            a.pinned_by,
            fmt_ms(a.pinned_ms),
            a.name
        );
    }
    if a.syncing > 0 {
        outln!("  syncing: sync {}", a.syncing);
    }
    if !a.blocked.is_empty() {
        outln!("  blocked: {}", a.blocked);
    }
    if a.drift_since_ms > 0 {
        outln!("  drifted from the commit synced since {}", fmt_ms(a.drift_since_ms));
    }
    for line in &a.drift {
        outln!("  drift: {line}");
    }
    for line in &a.rejected {
        outln!("  rejected: {line}");
    }
    if !a.last_error.is_empty() {
        outln!("  last error ({}):", fmt_ms(a.last_error_ms));
        for line in a.last_error.lines() {
            outln!("    {line}");
        }
    }
}

fn print_diff(d: &pb::AppDiff, format: Format) -> anyhow::Result<()> {
    if format.structured() {
        return Ok(output::document(format, &diff_view(d))?);
    }
    outln!("at {}", short(&d.commit));
    if !d.error.is_empty() {
        outln!("the desired state is invalid; nothing would change:");
        for line in d.error.lines() {
            outln!("  {line}");
        }
        return Ok(());
    }
    for s in &d.services {
        let file = if s.file.is_empty() { "no file".to_owned() } else { s.file.clone() };
        outln!(
            "{} ({file}): {}{}",
            s.service,
            s.status,
            if s.version.is_empty() { String::new() } else { format!(", wants {}", s.version) }
        );
        for n in &s.nodes {
            let running = if n.running.is_empty() { "nothing" } else { &n.running };
            outln!("  {:<20} {:<12} runs {running}{}", n.node, n.status, if n.healthy { "" } else { " (unhealthy)" });
        }
        for f in &s.fields {
            outln!("  ~ {f}");
        }
    }
    if d.services.is_empty() {
        outln!("no services");
    }
    Ok(())
}

fn print_sync(s: &pb::AppSync) {
    let ended = if s.finished_ms > 0 { format!(", ended {}", fmt_ms(s.finished_ms)) } else { String::new() };
    outln!(
        "sync {} of {}: {} (by {}, started {}{ended})",
        s.id,
        short(&s.commit),
        s.outcome,
        s.started_by,
        fmt_ms(s.started_ms)
    );
    for c in &s.changes {
        outln!("  {c}");
    }
    if !s.rollouts.is_empty() {
        let ids: Vec<String> = s.rollouts.iter().map(u64::to_string).collect();
        outln!("  rollouts: {}", ids.join(", "));
    }
    if !s.message.is_empty() {
        outln!("  {}", s.message);
    }
}

fn view(a: &pb::App) -> Value {
    json!({
        "name": a.name,
        "repo": a.repo,
        "path": a.path,
        "environment": a.environment,
        "revision": a.revision,
        "poll_ms": a.poll_ms,
        "auto_sync": a.auto_sync,
        "self_heal": a.self_heal,
        "prune": a.prune,
        "detect_only": a.detect_only,
        "created_by": a.created_by,
        "created_ms": a.created_ms,
        "sync_status": a.sync_status,
        "health": a.health,
        "synced_commit": a.synced_commit,
        "wanted_commit": a.wanted_commit,
        "last_error": a.last_error,
        "last_error_ms": a.last_error_ms,
        "last_fetch_ms": a.last_fetch_ms,
        "syncing": a.syncing,
        "drift": a.drift,
        "drift_since_ms": a.drift_since_ms,
        "depends_on": a.depends_on,
        "pinned_commit": a.pinned_commit,
        "pinned_by": a.pinned_by,
        "pinned_ms": a.pinned_ms,
        "blocked": a.blocked,
        "sync_timeout_ms": a.sync_timeout_ms,
        "deploy_key": a.deploy_key,
        "known_hosts": a.known_hosts,
        "deploy_role": a.deploy_role,
        "rejected": a.rejected,
    })
}

fn diff_view(d: &pb::AppDiff) -> Value {
    json!({
        "commit": d.commit,
        "error": d.error,
        "services": d.services.iter().map(|s| json!({
            "service": s.service,
            "file": s.file,
            "status": s.status,
            "version": s.version,
            "fields": s.fields,
            "nodes": s.nodes.iter().map(|n| json!({
                "node": n.node,
                "status": n.status,
                "running": n.running,
                "wanted": n.wanted,
                "healthy": n.healthy,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn sync_view(s: &pb::AppSync) -> Value {
    json!({
        "id": s.id,
        "commit": s.commit,
        "started_by": s.started_by,
        "started_ms": s.started_ms,
        "finished_ms": s.finished_ms,
        "outcome": s.outcome,
        "message": s.message,
        "changes": s.changes,
        "rollouts": s.rollouts,
        "request": s.request,
    })
}
