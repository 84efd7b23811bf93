//! Deploy actions and reports between the wire and the deploy executor's
//! own types ([`crate::deploy::executor`]): prost types stop here.

use drover_proto::v1 as pb;

use crate::deploy::executor::{HealthCheck, HealthDef, Order, ReleaseRef, Report, ReportState, ServiceDef, Work};

/// The executor's order for `action`, or why it cannot be carried out.
pub(super) fn order(action: pb::DeployAction) -> Result<Order, String> {
    let work = match action.kind {
        Some(pb::deploy_action::Kind::Install(i)) => {
            let release = i.release.ok_or("the install names no release")?;
            let service = service(i.service.ok_or("the install has no service definition")?)?;
            Work::Install {
                release: ReleaseRef {
                    version: release.version,
                    sha256: release.sha256,
                    size: release.size,
                    path: release.path,
                    run_id: release.run_id,
                    commit: release.commit,
                },
                service,
                beside: i.beside,
            }
        }
        Some(pb::deploy_action::Kind::Switch(s)) => Work::Switch { version: s.version },
        Some(pb::deploy_action::Kind::Rollback(r)) => {
            Work::Rollback { to_version: r.to_version, service: r.service.map(service).transpose()? }
        }
        None => return Err("a deploy action of a kind this agent does not know".into()),
    };
    Ok(Order { action_id: action.action_id, service: action.service, work })
}

fn service(def: pb::ServiceDef) -> Result<ServiceDef, String> {
    let port = u16::try_from(def.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("the service's port {} is not a TCP port (1 to 65535)", def.port))?;
    let health = def.health.map(|h| HealthDef {
        check: match h.check {
            Some(pb::health_def::Check::Http(path)) => HealthCheck::Http(path),
            Some(pb::health_def::Check::Exec(command)) => HealthCheck::Exec(command),
            Some(pb::health_def::Check::Tcp(_)) | None => HealthCheck::Tcp,
        },
        interval_ms: h.interval_ms,
        healthy_after: h.healthy_after,
        unhealthy_after: h.unhealthy_after,
        timeout_ms: h.timeout_ms,
    });
    Ok(ServiceDef { command: def.command, env: def.env.into_iter().collect(), port, health })
}

pub(super) fn report(r: Report) -> pb::DeployReport {
    let state = match r.state {
        ReportState::Installed => pb::DeployState::Installed,
        ReportState::Healthy => pb::DeployState::Healthy,
        ReportState::Failed => pb::DeployState::Failed,
        ReportState::Switched => pb::DeployState::Switched,
        ReportState::RolledBack => pb::DeployState::RolledBack,
    };
    pb::DeployReport {
        action_id: r.action_id,
        service: r.service,
        state: state as i32,
        message: r.message,
        version: r.version,
    }
}
