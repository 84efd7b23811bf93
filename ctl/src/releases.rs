//! `drover release reject|unreject|rejects`, the reject list, and `drover
//! env freeze|unfreeze|freezes`. Any coordinator answers.

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::ReleaseCommand;
use crate::client::Conn;
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output::{self, Format};

/// A call on the release service of the connection of control client `c`.
macro_rules! r_call {
    ($c:ident . $m:ident ( $req:expr )) => {{
        let req = $req;
        let mut r = $c.releases();
        async move { r.$m(req).await }
    }};
}

fn view(r: &pb::RejectedRelease) -> Value {
    json!({
        "service": r.service, "release": r.release, "kind": r.kind,
        "reason": r.reason, "by": r.by, "at_ms": r.at_ms,
    })
}

pub async fn run(conn: &mut Conn, command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Reject { service, release, reason, output, .. } => {
            let req = pb::RejectReleaseRequest { service, release, reason };
            let r = conn.call(true, |c| r_call!(c.reject_release(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &view(&r))?);
            }
            outln!(
                "{} {} of {} rejected: nothing installs it any more, and an automatic rollback goes past it",
                r.kind,
                r.release,
                r.service
            );
        }
        ReleaseCommand::Unreject { service, release, output, .. } => {
            let req = pb::UnrejectReleaseRequest { service: service.clone(), release: release.clone() };
            conn.call(true, |c| r_call!(c.unreject_release(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &json!({ "service": service, "release": release }))?);
            }
            outln!("the reject of {release} of {service} is lifted");
        }
        ReleaseCommand::Rejects { service, output, .. } => {
            let req = pb::ListRejectedRequest { service: service.unwrap_or_default() };
            let rejected = conn.call(true, |c| r_call!(c.list_rejected(req.clone()))).await?.rejected;
            if output.structured() {
                return Ok(output::document(output, &Value::Array(rejected.iter().map(view).collect()))?);
            }
            if rejected.is_empty() {
                outln!("no release is rejected");
            }
            for r in &rejected {
                outln!("{:<16} {:<8} {}  by {} {}", r.service, r.kind, r.release, r.by, fmt_ms(r.at_ms));
                outln!("    {}", r.reason);
            }
        }
    }
    Ok(())
}

fn freeze_view(f: &pb::Freeze) -> Value {
    json!({
        "environment": f.environment, "reason": f.reason, "by": f.by,
        "from_ms": f.from_ms, "until_ms": f.until_ms,
    })
}

fn until(f: &pb::Freeze) -> String {
    if f.until_ms == 0 {
        return "until `drover env unfreeze`".to_owned();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let left = f.until_ms.saturating_sub(now);
    format!("for {} more", drover_client::duration::format(std::time::Duration::from_millis(left)))
}

/// `drover env freeze ENV --reason TEXT [--for DURATION]`.
pub async fn freeze(
    conn: &mut Conn,
    environment: String,
    reason: String,
    duration: Option<std::time::Duration>,
    format: Format,
) -> anyhow::Result<()> {
    let for_ms = duration.map_or(0, |d| d.as_millis() as u64);
    let req = pb::FreezeEnvironmentRequest { environment, reason, for_ms };
    let f = conn.call(true, |c| r_call!(c.freeze_environment(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &freeze_view(&f))?);
    }
    outln!("environment {} frozen {}: no new release starts there; rollbacks still do", f.environment, until(&f));
    Ok(())
}

/// `drover env unfreeze ENV`.
pub async fn unfreeze(conn: &mut Conn, environment: String, format: Format) -> anyhow::Result<()> {
    let req = pb::UnfreezeEnvironmentRequest { environment };
    let f = conn.call(true, |c| r_call!(c.unfreeze_environment(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &freeze_view(&f))?);
    }
    outln!("environment {} unfrozen: what waited goes on (the newest rollout of each service)", f.environment);
    Ok(())
}

/// `drover env freezes`.
pub async fn freezes(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let freezes = conn.call(true, |c| r_call!(c.list_freezes(pb::ListFreezesRequest {}))).await?.freezes;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(freezes.iter().map(freeze_view).collect()))?);
    }
    if freezes.is_empty() {
        outln!("no environment is frozen");
    }
    for f in &freezes {
        outln!("{:<16} frozen {} by {} {}: {}", f.environment, until(f), f.by, fmt_ms(f.from_ms), f.reason);
    }
    Ok(())
}
