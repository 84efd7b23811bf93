//! Deploy actions, reports, service health, service logs and hook output
//! between the
//! wire and the deploy executor's own types ([`crate::deploy::executor`]):
//! prost types stop here.

use drover_proto::v1 as pb;

use std::time::Duration;

use crate::deploy::executor::{
    HealthCheck, HealthDef, Hook, HookStep, LogsChunk, LogsRequest, Order, ReleaseRef, Report, ReportState, ServiceDef,
    ServiceHealth, Work,
};
use crate::deploy::releases::check as check_name;

/// The executor's order for `action`, or why it cannot be carried out.
pub(super) fn order(action: pb::DeployAction) -> Result<Order, String> {
    let work = match action.kind {
        Some(pb::deploy_action::Kind::Install(i)) => {
            let release = release(i.release.ok_or("the install names no release")?);
            let service = service(i.service.ok_or("the install has no service definition")?)?;
            Work::Install { release, service, beside: i.beside }
        }
        Some(pb::deploy_action::Kind::Hook(h)) => Work::Hook(Hook {
            release: release(h.release.ok_or("the hook names no release")?),
            point: h.point,
            steps: h.steps.into_iter().map(|s| HookStep { name: s.name, run: s.run }).collect(),
            env: h.env.into_iter().collect(),
            timeout: (h.timeout_ms > 0).then(|| Duration::from_millis(h.timeout_ms)),
        }),
        Some(pb::deploy_action::Kind::Switch(s)) => Work::Switch { version: s.version },
        Some(pb::deploy_action::Kind::Restart(r)) => Work::Restart { version: r.version },
        Some(pb::deploy_action::Kind::Rollback(r)) => {
            Work::Rollback { to_version: r.to_version, service: r.service.map(service).transpose()? }
        }
        None => return Err("a deploy action of a kind this agent does not know".into()),
    };
    Ok(Order { action_id: action.action_id, service: action.service, work })
}

fn release(r: pb::ReleaseRef) -> ReleaseRef {
    ReleaseRef {
        version: r.version,
        sha256: r.sha256,
        size: r.size,
        path: r.path,
        run_id: r.run_id,
        commit: r.commit,
        url: r.url,
    }
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
        ReportState::HookPassed => pb::DeployState::HookPassed,
        ReportState::HookFailed => pb::DeployState::HookFailed,
    };
    pb::DeployReport {
        action_id: r.action_id,
        service: r.service,
        state: state as i32,
        message: r.message,
        version: r.version,
        exit_code: r.exit_code,
    }
}

/// The executor's request for `r`, or the answer to send at once when the
/// service's name is not one a service can have.
pub(super) fn logs_request(r: pb::ServiceLogsRequest) -> Result<LogsRequest, LogsChunk> {
    if let Err(e) = check_name("service", &r.service) {
        return Err(LogsChunk { request_id: r.request_id, error: e.to_string(), ..Default::default() });
    }
    Ok(LogsRequest { request_id: r.request_id, service: r.service, offset: r.offset, max_bytes: r.max_bytes })
}

pub(super) fn logs_chunk(c: LogsChunk) -> pb::ServiceLogsChunk {
    pb::ServiceLogsChunk { request_id: c.request_id, data: c.data, next_offset: c.next_offset, error: c.error }
}

pub(super) fn health(h: ServiceHealth) -> pb::ServiceHealth {
    pb::ServiceHealth { service: h.service, version: h.version, healthy: h.healthy, message: h.message }
}

pub(super) fn hook_output(action_id: String, data: Vec<u8>) -> pb::HookOutput {
    pb::HookOutput { action_id, data }
}
