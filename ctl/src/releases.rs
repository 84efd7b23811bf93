//! `drover release reject|unreject|rejects`: the reject list. Any
//! coordinator answers.

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::ReleaseCommand;
use crate::client::Conn;
use crate::commands::fmt_ms;
use crate::out::outln;
use crate::output;

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
