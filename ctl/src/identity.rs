//! `drover agent-token create|ls|revoke`, `drover agent
//! revoke|ban|unban|identities` and `drover audit` (issue 18): the join
//! tokens agents enroll with, their access, and the audit log, over the
//! identity service. Each command builds its answer as JSON once and prints
//! it as `-o` asks; the tables and messages are built by pure functions
//! (tested below), and every text the coordinator sent goes through
//! [`term::field`], so none of it can act on the terminal.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::{AgentCommand, AgentTokenCommand, AuditArgs};
use crate::client::Conn;
use crate::commands::{now_ms, utc};
use crate::out::outln;
use crate::output::{self, Format};
use crate::term::field;

/// The agent's TLS directory in the command line `agent-token create`
/// prints: a placeholder for wherever its host keeps it.
const AGENT_TLS_DIR: &str = "/var/lib/drover-agent/tls";

/// `drover agent-token create|ls|revoke`.
pub async fn tokens(conn: &mut Conn, command: AgentTokenCommand) -> anyhow::Result<()> {
    match command {
        AgentTokenCommand::Create { name, labels, ttl, output, .. } => {
            let ttl_ms = ttl.map_or(0, |d| (d.as_millis() as u64).max(1));
            let req = pb::CreateAgentTokenRequest { name, labels: labels.into_iter().collect(), ttl_ms };
            // Not idempotent: a second token if an answer was lost.
            let created = conn.call(false, |c| i_call!(c.create_agent_token(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &created_view(&created))?);
            }
            for line in created_text(&created, conn.urls(), now_ms() as i64) {
                outln!("{line}");
            }
        }
        AgentTokenCommand::Ls { output, .. } => {
            let req = pb::ListAgentTokensRequest {};
            let tokens = conn.call(true, |c| i_call!(c.list_agent_tokens(req))).await?.tokens;
            if output.structured() {
                return Ok(output::document(output, &Value::Array(tokens.iter().map(token_view).collect()))?);
            }
            if tokens.is_empty() {
                outln!("no join tokens; create one with `drover agent-token create --name NAME`");
                return Ok(());
            }
            for line in token_table(&tokens, output == Format::Wide, now_ms() as i64) {
                outln!("{line}");
            }
        }
        AgentTokenCommand::Revoke { id, output, .. } => {
            let req = pb::RevokeAgentTokenRequest { id };
            let t = conn.call(true, |c| i_call!(c.revoke_agent_token(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &token_view(&t))?);
            }
            outln!(
                "join token {} for agent {} is {}: nobody can enroll with it",
                field(&t.id),
                field(&t.name),
                field(&t.state)
            );
        }
    }
    Ok(())
}

/// `drover agent revoke|ban|unban|identities`.
pub async fn agent(conn: &mut Conn, command: AgentCommand) -> anyhow::Result<()> {
    let (name, action, output) = match command {
        AgentCommand::Identities { output, .. } => return identities(conn, output).await,
        AgentCommand::Revoke { name, output, .. } => (name, "revoke", output),
        AgentCommand::Ban { name, output, .. } => (name, "ban", output),
        AgentCommand::Unban { name, output, .. } => (name, "unban", output),
    };
    let req = pb::SetAgentAccessRequest { name, action: action.to_owned() };
    let access = conn.call(true, |c| i_call!(c.set_agent_access(req.clone()))).await?;
    if output.structured() {
        return Ok(output::document(output, &access_view(&access))?);
    }
    outln!("{}", access_message(&access));
    Ok(())
}

/// `drover agent identities`.
async fn identities(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let req = pb::ListAgentIdentitiesRequest {};
    let identities = conn.call(true, |c| i_call!(c.list_agent_identities(req))).await?.identities;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(identities.iter().map(identity_view).collect()))?);
    }
    if identities.is_empty() {
        outln!("no agent has enrolled, and no name is revoked or banned; `drover agent-token create --name NAME`");
        return Ok(());
    }
    for line in identity_table(&identities, format == Format::Wide, now_ms() as i64) {
        outln!("{line}");
    }
    Ok(())
}

/// `drover audit`.
pub async fn audit(conn: &mut Conn, args: AuditArgs) -> anyhow::Result<()> {
    let AuditArgs { since, actor, limit, output, .. } = args;
    let req = pb::ListAuditRequest {
        since_ms: since.map_or(0, |d| since_ms(now_ms() as i64, d)),
        actor: actor.unwrap_or_default(),
        limit: limit.unwrap_or(0),
    };
    let entries = conn.call(true, |c| i_call!(c.list_audit(req.clone()))).await?.entries;
    if output.structured() {
        return Ok(output::document(output, &Value::Array(entries.iter().map(audit_view).collect()))?);
    }
    if entries.is_empty() {
        outln!("no audit entries{}", if since.is_some() || !req.actor.is_empty() { " match" } else { "" });
        return Ok(());
    }
    for line in audit_table(&entries) {
        outln!("{line}");
    }
    Ok(())
}

/// `--since D` as the request's `since_ms`: D before `now_ms`, never
/// before the epoch (0 asks for every entry, which is the same).
fn since_ms(now_ms: i64, since: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX)).max(0)
}

/// Labels sorted by key, for JSON.
fn sorted(labels: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    labels.iter().collect()
}

/// Labels as `k=v,k=v` by key, for people; `-` for none.
fn labels_text(labels: &HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    field(&sorted(labels).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

fn token_view(t: &pb::AgentToken) -> Value {
    json!({
        "id": t.id, "name": t.name, "labels": sorted(&t.labels), "state": t.state,
        "created_by": t.created_by, "created_ms": t.created_ms, "expires_ms": t.expires_ms,
        "ended_ms": t.ended_ms, "ended_by": t.ended_by,
    })
}

/// `agent-token create -o json`: the token, its secret and the CA's pin.
fn created_view(r: &pb::CreateAgentTokenResponse) -> Value {
    let mut view = token_view(&r.token.clone().unwrap_or_default());
    view["secret"] = json!(r.secret);
    view["ca_pin"] = json!(r.ca_pin);
    view
}

fn access_view(a: &pb::AgentAccess) -> Value {
    json!({ "name": a.name, "state": a.state, "by": a.by, "at_ms": a.at_ms })
}

fn identity_view(i: &pb::AgentIdentity) -> Value {
    json!({
        "name": i.name, "labels": sorted(&i.labels), "state": i.state, "serial": i.serial,
        "not_after_ms": i.not_after_ms, "issued_ms": i.issued_ms, "enrolled_ms": i.enrolled_ms,
        "renewals": i.renewals,
    })
}

fn audit_view(e: &pb::AuditEntry) -> Value {
    json!({
        "at_ms": e.at_ms, "actor": e.actor, "source": e.source, "action": e.action, "target": e.target,
        "outcome": e.outcome, "level": e.level, "detail": e.detail,
    })
}

/// A time relative to `now`: `in 9m59s`, `3m12s ago`; `-` for none.
pub(crate) fn relative(ms: i64, now: i64) -> String {
    match ms {
        0 => "-".into(),
        ms if ms > now => format!("in {}", output::human((ms - now) as u64)),
        ms => format!("{} ago", output::human((now - ms) as u64)),
    }
}

/// An absolute time in UTC, as the wide tables print it; `-` for none.
pub(crate) fn absolute(ms: i64) -> String {
    utc(ms.max(0) as u64)
}

/// A word as a POSIX shell reads it: itself when it is plain, else in
/// single quotes.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:,=@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line that starts an agent enrolling with a join token:
/// every coordinator URL the CLI was given (the agent tries them in turn),
/// the token, and the CA's pin, which the agent checks the coordinator's CA
/// against before it trusts it.
fn agent_command(name: &str, urls: &[String], secret: &str, ca_pin: &str) -> String {
    let words = [
        "drover-agent".to_string(),
        "--name".into(),
        shell_word(name),
        "--coordinator".into(),
        shell_word(&urls.join(",")),
        "--join-token".into(),
        shell_word(secret),
        "--ca-pin".into(),
        shell_word(ca_pin),
        "--tls-dir".into(),
        AGENT_TLS_DIR.into(),
    ];
    words.join(" ")
}

/// What `agent-token create` prints: the secret, what it is for, and the
/// command line that uses it.
fn created_text(r: &pb::CreateAgentTokenResponse, urls: &[String], now: i64) -> Vec<String> {
    let t = r.token.clone().unwrap_or_default();
    let (name, id, secret, pin) = (field(&t.name), field(&t.id), field(&r.secret), field(&r.ca_pin));
    let labels =
        if t.labels.is_empty() { "no labels".to_string() } else { format!("labels {}", labels_text(&t.labels)) };
    vec![
        format!(
            "join token {id} for agent {name} ({labels}), expires {} ({}):",
            absolute(t.expires_ms),
            relative(t.expires_ms, now)
        ),
        String::new(),
        format!("    {secret}"),
        String::new(),
        "It is shown only this once, and enrolls one agent, once: copy it now. On the agent's host, run:".into(),
        String::new(),
        format!("    {}", agent_command(&name, urls, &secret, &pin)),
        String::new(),
        format!(
            "--coordinator has the URLs this CLI used: the agent must reach one of them. --tls-dir is where the \
             agent keeps its key and certificates. Until it is used, `drover agent-token revoke {}` revokes the token.",
            shell_word(&id)
        ),
    ]
}

/// `agent revoke|ban|unban`: the agent's access as it is now, and what
/// follows from it.
fn access_message(a: &pb::AgentAccess) -> String {
    let name = field(&a.name);
    let word = shell_word(&name);
    match a.state.as_str() {
        "revoked" => format!(
            "agent {name} revoked: its certificates are refused and its sessions closed; enroll it again with a new \
             join token (`drover agent-token create --name {word}`)"
        ),
        "banned" => format!(
            "agent {name} banned: its certificates are refused and its sessions closed, and no new enrollment under \
             this name until `drover agent unban {word}`"
        ),
        "allowed" => format!(
            "agent {name} allowed: the name may enroll again, with a new join token (`drover agent-token create \
             --name {word}`)"
        ),
        other => format!("agent {name} is {}", field(other)),
    }
}

/// `agent-token ls`; `wide` adds when each was created and who or what
/// ended it.
fn token_table(tokens: &[pb::AgentToken], wide: bool, now: i64) -> Vec<String> {
    let mut header = format!(
        "{:<18} {:<20} {:<28} {:<8} {:<20} {:<14}",
        "ID", "NAME", "LABELS", "STATE", "CREATED BY", "EXPIRES/ENDED"
    );
    if wide {
        header.push_str(&format!(" {:<21} ENDED BY", "CREATED"));
    }
    let mut lines = vec![header.trim_end().to_string()];
    for t in tokens {
        // An unused token's expiry is ahead; an expired one's behind; a
        // used or revoked one ended when it was used or revoked.
        let when = if t.ended_ms != 0 { t.ended_ms } else { t.expires_ms };
        let mut row = format!(
            "{:<18} {:<20} {:<28} {:<8} {:<20} {:<14}",
            field(&t.id),
            field(&t.name),
            labels_text(&t.labels),
            field(&t.state),
            field(&t.created_by),
            relative(when, now)
        );
        if wide {
            let by = if t.ended_by.is_empty() { "-".into() } else { field(&t.ended_by) };
            row.push_str(&format!(" {:<21} {by}", absolute(t.created_ms)));
        }
        lines.push(row.trim_end().to_string());
    }
    lines
}

/// The serial's first 12 hex digits, enough to tell certificates apart;
/// the whole of it in `wide`.
fn serial(s: &str, wide: bool) -> String {
    match s {
        "" => "-".into(),
        s if wide => field(s),
        s => field(&s.chars().take(12).collect::<String>()),
    }
}

/// `agent identities`; `wide` has whole serials, and when each agent
/// enrolled and its certificate was issued.
fn identity_table(identities: &[pb::AgentIdentity], wide: bool, now: i64) -> Vec<String> {
    let serial_width = if wide { 40 } else { 12 };
    let mut header = format!(
        "{:<20} {:<8} {:<28} {:<serial_width$} {:<14} {:>8}",
        "NAME", "STATE", "LABELS", "SERIAL", "EXPIRES", "RENEWALS"
    );
    if wide {
        header.push_str(&format!(" {:<21} ISSUED", "ENROLLED"));
    }
    let mut lines = vec![header];
    for i in identities {
        let mut row = format!(
            "{:<20} {:<8} {:<28} {:<serial_width$} {:<14} {:>8}",
            field(&i.name),
            field(&i.state),
            labels_text(&i.labels),
            serial(&i.serial, wide),
            relative(i.not_after_ms, now),
            i.renewals
        );
        if wide {
            row.push_str(&format!(" {:<21} {}", absolute(i.enrolled_ms), absolute(i.issued_ms)));
        }
        lines.push(row);
    }
    lines
}

/// `audit`: oldest first, as the coordinator answers; a warning (a refusal
/// that looks like a forgery) says WARNING in its LEVEL column.
fn audit_table(entries: &[pb::AuditEntry]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<21} {:<7} {:<24} {:<21} {:<20} {:<20} {:<8} DETAIL",
        "TIME", "LEVEL", "ACTOR", "SOURCE", "ACTION", "TARGET", "OUTCOME"
    )];
    for e in entries {
        let level = if e.level == "warning" { "WARNING".to_string() } else { field(&e.level) };
        let dash = |s: &str| if s.is_empty() { "-".to_string() } else { field(s) };
        let row = format!(
            "{:<21} {:<7} {:<24} {:<21} {:<20} {:<20} {:<8} {}",
            absolute(e.at_ms),
            level,
            dash(&e.actor),
            dash(&e.source),
            dash(&e.action),
            dash(&e.target),
            dash(&e.outcome),
            field(&e.detail)
        );
        lines.push(row.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests;
