//! `drover notify add|rm|list|test`: the webhooks the leader tells about
//! rollouts, analyses, gates, freezes and app syncs. Any coordinator
//! answers; `test` posts from the one that answers.

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::NotifyCommand;
use crate::client::{Conn, EXIT_FAILED, Exit};
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output;

/// A call on the notification service of the connection of control
/// client `c`.
macro_rules! n_call {
    ($c:ident . $m:ident ( $req:expr )) => {{
        let req = $req;
        let mut n = $c.notifications();
        async move { n.$m(req).await }
    }};
}

fn view(t: &pb::NotificationTarget) -> Value {
    json!({
        "name": t.name, "url": t.url, "format": t.format, "min_severity": t.min_severity,
        "environments": t.environments, "kinds": t.kinds, "created_by": t.created_by, "created_ms": t.created_ms,
    })
}

/// "every environment" or the list, for people.
fn all_or(list: &[String], every: &str) -> String {
    if list.is_empty() { every.to_owned() } else { list.join(",") }
}

pub async fn run(conn: &mut Conn, command: NotifyCommand) -> anyhow::Result<()> {
    match command {
        NotifyCommand::Add { name, url, format, min_severity, environments, kinds, output, .. } => {
            let req = pb::AddNotificationRequest {
                name,
                url,
                format: format.as_str().to_owned(),
                min_severity: min_severity.as_str().to_owned(),
                environments,
                kinds,
            };
            let t = conn.call(true, |c| n_call!(c.add_notification(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&t))?);
            }
            outln!(
                "notification target {} added: {} to {}, {} and above, {}, {}; try it: drover notify test {}",
                t.name,
                t.format,
                t.url,
                t.min_severity,
                all_or(&t.environments, "every environment"),
                all_or(&t.kinds, "every kind"),
                t.name
            );
        }
        NotifyCommand::Rm { name, output, .. } => {
            let req = pb::RemoveNotificationRequest { name };
            let t = conn.call(true, |c| n_call!(c.remove_notification(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&t))?);
            }
            outln!("notification target {} removed: it is told nothing more", t.name);
        }
        NotifyCommand::List { output, .. } => {
            let req = pb::ListNotificationsRequest {};
            let targets = conn.call(true, |c| n_call!(c.list_notifications(req))).await?.targets;
            if output.structured() {
                return Ok(output::document(output, &Value::Array(targets.iter().map(view).collect()))?);
            }
            if targets.is_empty() {
                outln!("no notification targets; add one with `drover notify add NAME --url URL`");
                return Ok(());
            }
            outln!(
                "{:<20} {:<6} {:<9} {:<20} {:<24} {:<12} URL",
                "NAME",
                "FORMAT",
                "SEVERITY",
                "ENVIRONMENTS",
                "KINDS",
                "ADDED"
            );
            for t in &targets {
                outln!(
                    "{:<20} {:<6} {:<9} {:<20} {:<24} {:<12} {}",
                    t.name,
                    t.format,
                    format!("{}+", t.min_severity),
                    all_or(&t.environments, "all"),
                    all_or(&t.kinds, "all"),
                    fmt_ms(t.created_ms),
                    t.url
                );
            }
        }
        NotifyCommand::Test { name, output, .. } => {
            let req = pb::TestNotificationRequest { name: name.clone() };
            let r = conn.call(false, |c| n_call!(c.test_notification(req.clone()))).await?;
            if output.structured() {
                let doc = json!({
                    "name": name, "delivered": r.delivered, "http_status": r.http_status,
                    "error": r.error, "took_ms": r.took_ms,
                });
                output::document(output, &doc)?;
            } else if r.delivered {
                outln!("{name} answered {} in {} ms: delivered", r.http_status, r.took_ms);
            }
            if !r.delivered {
                return Err(Exit::new(
                    EXIT_FAILED,
                    format!(
                        "the test notification to {name} was not delivered: {}; check its URL (`drover notify add \
                         {name} --url …` replaces it) and that the coordinator can reach it",
                        r.error
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}
