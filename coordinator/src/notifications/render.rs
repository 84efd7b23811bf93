//! Which targets want a notice, and what each is sent: pure, and tested
//! with tables in `super::tests`.
//!
//! A `json` target gets the notice as one object. A `slack` target gets a
//! message in the form of Slack's incoming webhooks (which Mattermost and
//! Rocket.Chat take too): `text`, a one-line summary that shows in
//! notifications, and one legacy attachment whose `color` bar says the
//! severity and whose `fields` table carries the rest, with `fallback`,
//! `footer` and `ts`. Attachments rather than Block Kit because only they
//! have the coloured bar. Slack reads `&`, `<` and `>` as markup (`<!channel>`
//! pings everyone), so every text taken from a notice is escaped.

use serde_json::{Value, json};

use super::{Format, Notice, Severity, Target};

/// The longest summary, in characters: a notification's first line.
const MAX_SUMMARY_CHARS: usize = 300;

/// Whether `target` takes `notice`: severe enough, of an environment it
/// names (or it names none), of a kind it names (or it names none).
pub fn wants(target: &Target, notice: &Notice) -> bool {
    notice.severity >= target.min_severity
        && (target.environments.is_empty() || target.environments.contains(&notice.environment))
        && (target.kinds.is_empty() || target.kinds.iter().any(|k| k == notice.kind.as_str()))
}

/// What `target` is sent for `notice`, as its format asks.
pub fn body(target: &Target, notice: &Notice) -> Value {
    match target.format {
        Format::Json => json!({
            "kind": notice.kind.as_str(),
            "severity": notice.severity.as_str(),
            "environment": notice.environment,
            "service": notice.service,
            "rollout": notice.rollout,
            "app": notice.app,
            "message": notice.message,
            "at_ms": notice.at_ms,
            "fields": notice.fields,
        }),
        Format::Slack => slack(notice),
    }
}

/// The notice in one line, for people: "Rollout failed: web in production
/// (rollout 42): node web-1 failed its health check".
pub fn summary(notice: &Notice) -> String {
    let kind = notice.kind.as_str().replace('_', " ");
    let mut line = match kind.chars().next() {
        Some(first) => format!("{}{}", first.to_ascii_uppercase(), &kind[1..]),
        None => kind,
    };
    let subject = match (notice.service.as_str(), &notice.app) {
        ("", Some(app)) => format!("app {app}"),
        (service, _) => service.to_owned(),
    };
    match (subject.is_empty(), notice.environment.is_empty()) {
        (false, false) => line.push_str(&format!(": {subject} in {}", notice.environment)),
        (false, true) => line.push_str(&format!(": {subject}")),
        (true, false) => line.push_str(&format!(": {}", notice.environment)),
        (true, true) => {}
    }
    if let Some(rollout) = notice.rollout {
        line.push_str(&format!(" (rollout {rollout})"));
    }
    let message = notice.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !message.is_empty() {
        line.push_str(": ");
        line.push_str(&message);
    }
    if line.chars().count() > MAX_SUMMARY_CHARS {
        line = line.chars().take(MAX_SUMMARY_CHARS - 1).collect::<String>() + "…";
    }
    line
}

/// The colour of a Slack attachment's bar.
fn color(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "#439FE0",
        Severity::Warning => "#DAA038",
        Severity::Critical => "#A30200",
    }
}

/// `text` with what Slack reads as markup escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn slack(notice: &Notice) -> Value {
    let summary = escape(&summary(notice));
    // A field's title is plain text, which Slack escapes itself; its value
    // is markup.
    let field = |title: &str, value: &str| json!({"title": title, "value": escape(value), "short": value.chars().count() <= 40});
    let mut fields = vec![field("Severity", notice.severity.as_str())];
    if !notice.environment.is_empty() {
        fields.push(field("Environment", &notice.environment));
    }
    if !notice.service.is_empty() {
        fields.push(field("Service", &notice.service));
    }
    if let Some(rollout) = notice.rollout {
        fields.push(field("Rollout", &rollout.to_string()));
    }
    if let Some(app) = &notice.app {
        fields.push(field("App", app));
    }
    fields.extend(notice.fields.iter().map(|(name, value)| field(name, value)));
    if !notice.message.is_empty() {
        fields.push(json!({"title": "Message", "value": escape(&notice.message), "short": false}));
    }
    json!({
        "text": summary,
        "attachments": [{
            "color": color(notice.severity),
            "fallback": summary,
            "fields": fields,
            "footer": format!("Drover · {}", notice.kind.as_str()),
            "ts": notice.at_ms / 1000,
        }],
    })
}
