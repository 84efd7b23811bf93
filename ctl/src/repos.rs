//! `drover repo add|rm` and `drover repos`: the repositories whose pushes,
//! tags, pull requests and schedules start runs. A webhook secret goes to
//! the coordinator once and never comes back: listings say only whether
//! one is set.

use std::io::Read;
use std::path::Path;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{Conn, EXIT_INVALID, Exit};
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output::{self, Format};

/// The most bytes read from a secret file; the coordinator's limit (1 KiB)
/// is the one that refuses, with its message.
const MAX_READ: u64 = 64 * 1024;

/// A webhook secret file's bytes, one final line break removed.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, Exit> {
    let cannot = |e: std::io::Error| Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", path.display()));
    let mut value = Vec::new();
    std::fs::File::open(path).map_err(cannot)?.take(MAX_READ).read_to_end(&mut value).map_err(cannot)?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Exit::new(
            EXIT_INVALID,
            format!("{} is empty; put the secret the forge signs webhooks with in it", path.display()),
        ));
    }
    Ok(value)
}

/// `drover repo add`.
pub async fn add(conn: &mut Conn, req: pb::AddRepoRequest, format: Format) -> anyhow::Result<()> {
    let repo = conn.call(true, |c| c_call!(c.add_repo(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &view(&repo))?);
    }
    outln!(
        "repository {} added: polled every {} ({}); its first poll records the heads, and each change after it \
         starts a run where .drover.yml's `on:` wants one",
        repo.name,
        drover_client::duration::format(std::time::Duration::from_millis(repo.poll_ms)),
        branches(&repo)
    );
    if repo.webhook_secret {
        outln!("its webhook secret is sealed and will not be shown again");
    }
    if repo.trusted {
        outln!("its pull-request runs get the secrets their jobs declare (--trusted)");
    }
    Ok(())
}

/// `drover repo rm NAME`.
pub async fn remove(conn: &mut Conn, name: String, format: Format) -> anyhow::Result<()> {
    let req = pb::RemoveRepoRequest { name: name.clone() };
    conn.call(true, |c| c_call!(c.remove_repo(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &json!({ "removed": name }))?);
    }
    outln!("repository {name} removed; the runs it started stay");
    Ok(())
}

/// `drover repos`.
pub async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let repos = conn.call(true, |c| c_call!(c.list_repos(pb::ListReposRequest {}))).await?.repos;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(repos.iter().map(view).collect()))?);
    }
    if repos.is_empty() {
        outln!("no repositories; add one with `drover repo add NAME --url URL`");
        return Ok(());
    }
    let wide = format == Format::Wide;
    outln!(
        "{:<20} {:<40} {:<6} {:<20} {:<10} {:<8} {:<8}",
        "NAME",
        "URL",
        "POLL",
        "BRANCHES",
        "POLLED",
        "TRUSTED",
        "WEBHOOK"
    );
    for r in &repos {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let filter = if r.branches.is_empty() { "*".to_string() } else { r.branches.join(",") };
        let polled = if r.last_poll_ms == 0 { "never".to_string() } else { fmt_ms(r.last_poll_ms) };
        outln!(
            "{:<20} {:<40} {:<6} {:<20} {:<10} {:<8} {:<8}",
            r.name,
            r.url,
            drover_client::duration::format(std::time::Duration::from_millis(r.poll_ms)),
            filter,
            polled,
            yes(r.trusted),
            yes(r.webhook_secret)
        );
        let mut heads: Vec<(&String, &String)> = r.heads.iter().collect();
        heads.sort();
        let shown = if wide { heads.len() } else { heads.len().min(5) };
        for (name, commit) in &heads[..shown] {
            let name = name.strip_prefix("refs/heads/").or_else(|| name.strip_prefix("refs/")).unwrap_or(name);
            outln!("  {name} {}", &commit[..commit.len().min(12)]);
        }
        if shown < heads.len() {
            outln!("  ... and {} more (-o wide lists them)", heads.len() - shown);
        }
        if wide {
            for s in &r.schedules {
                outln!("  schedule {:?}, last fired {}", s.cron, fmt_ms(s.last_fired_ms));
            }
        }
        if !r.last_error.is_empty() {
            let mut lines = r.last_error.lines();
            outln!("  last error ({}): {}", fmt_ms(r.last_error_ms), lines.next().unwrap_or_default());
            for line in lines {
                outln!("    {line}");
            }
        }
    }
    Ok(())
}

fn branches(r: &pb::Repo) -> String {
    if r.branches.is_empty() { "every branch".to_string() } else { format!("branches {}", r.branches.join(", ")) }
}

fn view(r: &pb::Repo) -> Value {
    json!({
        "name": r.name,
        "url": r.url,
        "poll_ms": r.poll_ms,
        "branches": r.branches,
        "trusted": r.trusted,
        "webhook_secret": r.webhook_secret,
        "heads": r.heads.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "last_poll_ms": r.last_poll_ms,
        "last_error": r.last_error,
        "last_error_ms": r.last_error_ms,
        "created_ms": r.created_ms,
        "created_by": r.created_by,
        "schedules": r.schedules.iter().map(|s| json!({"cron": s.cron, "last_fired_ms": s.last_fired_ms})).collect::<Vec<_>>(),
    })
}
