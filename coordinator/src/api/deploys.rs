//! The deploy messages of the agent session at the edge: a rollout's action
//! to the wire, and an agent's report from it, checked (an agent is
//! untrusted: a malformed report costs only itself).

use drover_pipeline::deploy::{HealthCheck, ServiceSpec};
use drover_proto::v1 as pb;

use crate::core::fleet::{DeployAction, DeployKind, DeployReport, DeployState, parse_action_id};

/// The longest message a report may carry; longer ones are cut.
pub const MAX_REPORT_MESSAGE: usize = 4096;
/// The longest service name or version a report may name.
const MAX_NAME: usize = 64;

fn service_def(def: ServiceSpec) -> pb::ServiceDef {
    let h = def.health;
    let check = match h.check {
        HealthCheck::Http(path) => pb::health_def::Check::Http(path),
        HealthCheck::Tcp => pb::health_def::Check::Tcp(true),
        HealthCheck::Exec(cmd) => pb::health_def::Check::Exec(cmd),
    };
    pb::ServiceDef {
        command: def.command,
        env: def.env.into_iter().collect(),
        port: u32::from(def.port),
        health: Some(pb::HealthDef {
            check: Some(check),
            interval_ms: h.interval.as_millis() as u64,
            healthy_after: h.healthy_after,
            unhealthy_after: h.unhealthy_after,
            timeout_ms: h.timeout.as_millis() as u64,
        }),
    }
}

/// A rollout's action as the agent receives it.
pub fn action(a: DeployAction, epoch: u64) -> pb::DeployAction {
    let kind = match a.kind {
        DeployKind::Install { release, def, beside } => pb::deploy_action::Kind::Install(pb::DeployInstall {
            release: Some(pb::ReleaseRef {
                version: release.version,
                sha256: release.sha256,
                size: release.size,
                path: release.path,
                run_id: release.run,
                commit: release.commit,
            }),
            service: Some(service_def(def)),
            beside,
        }),
        DeployKind::Rollback { to, def } => pb::deploy_action::Kind::Rollback(pb::DeployRollback {
            to_version: to.unwrap_or_default(),
            service: def.map(service_def),
        }),
        DeployKind::Switch { version } => pb::deploy_action::Kind::Switch(pb::DeploySwitch { version }),
    };
    pb::DeployAction { action_id: a.id, epoch, service: a.service, kind: Some(kind) }
}

/// An agent's report, checked: the action id parses, the state is one
/// that exists, names are bounded; the message is cut to a bound.
pub fn report(node: &str, r: pb::DeployReport) -> Result<DeployReport, String> {
    let (rollout, seq) = parse_action_id(&r.action_id)?;
    let state = match pb::DeployState::try_from(r.state) {
        Ok(pb::DeployState::Installed) => DeployState::Installed,
        Ok(pb::DeployState::Healthy) => DeployState::Healthy,
        Ok(pb::DeployState::Failed) => DeployState::Failed,
        Ok(pb::DeployState::Switched) => DeployState::Switched,
        Ok(pb::DeployState::RolledBack) => DeployState::RolledBack,
        _ => return Err(format!("deploy report {}: unknown state {}", r.action_id, r.state)),
    };
    if r.service.is_empty() || r.service.len() > MAX_NAME || r.version.len() > MAX_NAME {
        return Err(format!("deploy report {}: a service or version name longer than {MAX_NAME}", r.action_id));
    }
    Ok(DeployReport {
        node: node.to_string(),
        rollout,
        seq,
        service: r.service,
        state,
        message: super::agent::bounded(&r.message, MAX_REPORT_MESSAGE),
        version: r.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_checked_at_the_edge() {
        let good = || pb::DeployReport {
            action_id: "3/7".into(),
            service: "web".into(),
            state: pb::DeployState::Healthy as i32,
            message: "ok".into(),
            version: "abc".into(),
        };
        let r = report("n1", good()).unwrap();
        assert_eq!((r.node.as_str(), r.rollout, r.seq, r.state), ("n1", 3, 7, DeployState::Healthy));
        // (case, the change, what the refusal says)
        type Case = (&'static str, fn(&mut pb::DeployReport), &'static str);
        let cases: [Case; 4] = [
            ("a malformed id", |r| r.action_id = "x".into(), "malformed deploy action id"),
            ("an unknown state", |r| r.state = 99, "unknown state 99"),
            ("no state", |r| r.state = 0, "unknown state 0"),
            ("a long service", |r| r.service = "s".repeat(65), "longer than 64"),
        ];
        for (case, change, want) in cases {
            let mut r = good();
            change(&mut r);
            let err = report("n1", r).unwrap_err();
            assert!(err.contains(want), "{case}: {err}");
        }
        let mut long = good();
        long.message = "m".repeat(10_000);
        assert!(report("n1", long).unwrap().message.len() <= MAX_REPORT_MESSAGE + 16, "cut to a bound");
    }
}
