//! The deploy messages of the agent session at the edge: a rollout's action
//! to the wire, and an agent's report from it, checked (an agent is
//! untrusted: a malformed report costs only itself).

use drover_pipeline::deploy::{HealthCheck, ServiceSpec};
use drover_proto::v1 as pb;

use crate::core::fleet::{
    DeployAction, DeployKind, DeployReport, DeployState, LogsChunk, ServiceHealth, parse_action_id,
};

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

fn release_ref(release: crate::core::fleet::ReleaseRef) -> pb::ReleaseRef {
    pb::ReleaseRef {
        version: release.version,
        sha256: release.sha256,
        size: release.size,
        path: release.path,
        run_id: release.run,
        commit: release.commit,
        url: release.url,
    }
}

/// The most bytes one hook output message may carry.
pub const MAX_HOOK_OUTPUT: usize = 64 * 1024;

/// A hook's output, checked: its action id, and at most
/// [`MAX_HOOK_OUTPUT`] bytes.
pub fn hook_output(h: pb::HookOutput) -> Result<(u64, u64, Vec<u8>), String> {
    let (rollout, seq) = parse_action_id(&h.action_id)?;
    if h.data.len() > MAX_HOOK_OUTPUT {
        return Err(format!("hook output: {} bytes in one message, over {MAX_HOOK_OUTPUT}", h.data.len()));
    }
    Ok((rollout, seq, h.data))
}

/// A rollout's action as the agent receives it.
pub fn action(a: DeployAction, epoch: u64) -> pb::DeployAction {
    let kind = match a.kind {
        DeployKind::Install { release, def, beside } => pb::deploy_action::Kind::Install(pb::DeployInstall {
            release: Some(release_ref(release)),
            service: Some(service_def(def)),
            beside,
        }),
        DeployKind::Rollback { to, def } => pb::deploy_action::Kind::Rollback(pb::DeployRollback {
            to_version: to.unwrap_or_default(),
            service: def.map(service_def),
        }),
        DeployKind::Switch { version } => pb::deploy_action::Kind::Switch(pb::DeploySwitch { version }),
        DeployKind::Restart { version } => pb::deploy_action::Kind::Restart(pb::DeployRestart { version }),
        DeployKind::Hook { point, steps, env, release, timeout } => pb::deploy_action::Kind::Hook(pb::DeployHook {
            point,
            steps: steps.into_iter().map(|(name, run)| pb::Step { name, run, condition: String::new() }).collect(),
            env: env.into_iter().collect(),
            release: Some(release_ref(release)),
            timeout_ms: timeout.as_millis() as u64,
        }),
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
        Ok(pb::DeployState::HookPassed) => DeployState::HookPassed,
        Ok(pb::DeployState::HookFailed) => DeployState::HookFailed,
        _ => return Err(format!("deploy report {}: unknown state {}", r.action_id, r.state)),
    };
    if r.service.is_empty() || r.service.len() > MAX_NAME || r.version.len() > MAX_NAME {
        return Err(format!("deploy report {}: a service or version name longer than {MAX_NAME}", r.action_id));
    }
    if let Some(code) = r.exit_code {
        let hook = matches!(state, DeployState::HookPassed | DeployState::HookFailed);
        if !hook || !(0..=255).contains(&code) || (code == 0) != (state == DeployState::HookPassed) {
            return Err(format!(
                "deploy report {}: exit code {code} with state {state:?} (only a hook has one: 0 when it passed, \
                 1 to 255 when a step failed)",
                r.action_id
            ));
        }
    }
    Ok(DeployReport {
        node: node.to_string(),
        rollout,
        seq,
        service: r.service,
        state,
        message: super::agent::bounded(&r.message, MAX_REPORT_MESSAGE),
        version: r.version,
        exit_code: r.exit_code,
    })
}

/// The most bytes of a service's output one answer may carry (the agent
/// caps its answers at 1 MiB; the rest is slack for a different agent).
pub const MAX_LOGS_CHUNK: usize = 2 * 1024 * 1024;

/// A service's health as its agent reports it, checked.
pub fn health(node: &str, h: pb::ServiceHealth) -> Result<ServiceHealth, String> {
    if h.service.is_empty() || h.service.len() > MAX_NAME || h.version.len() > MAX_NAME {
        return Err(format!("service health: a service or version name empty or longer than {MAX_NAME}"));
    }
    Ok(ServiceHealth {
        node: node.to_string(),
        service: h.service,
        version: h.version,
        healthy: h.healthy,
        message: super::agent::bounded(&h.message, MAX_REPORT_MESSAGE),
    })
}

/// A piece of a service's output, checked; `Err` in the outer result is a
/// malformed message, in the inner one the agent's own refusal.
pub fn logs_chunk(c: pb::ServiceLogsChunk) -> Result<(u64, Result<LogsChunk, String>), String> {
    if c.data.len() > MAX_LOGS_CHUNK {
        return Err(format!("service logs: {} bytes in one answer, over {MAX_LOGS_CHUNK}", c.data.len()));
    }
    let answer = if c.error.is_empty() {
        Ok(LogsChunk { data: c.data, next_offset: c.next_offset })
    } else {
        Err(super::agent::bounded(&c.error, MAX_REPORT_MESSAGE))
    };
    Ok((c.request_id, answer))
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
            exit_code: None,
        };
        let r = report("n1", good()).unwrap();
        assert_eq!((r.node.as_str(), r.rollout, r.seq, r.state), ("n1", 3, 7, DeployState::Healthy));
        // (case, the change, what the refusal says)
        type Case = (&'static str, fn(&mut pb::DeployReport), &'static str);
        let cases: [Case; 7] = [
            ("a malformed id", |r| r.action_id = "x".into(), "malformed deploy action id"),
            ("an exit code not a hook's", |r| r.exit_code = Some(0), "only a hook has one"),
            (
                "an exit code out of range",
                |r| (r.state, r.exit_code) = (pb::DeployState::HookFailed as i32, Some(300)),
                "exit code 300",
            ),
            (
                "a passed hook that did not exit 0",
                |r| (r.state, r.exit_code) = (pb::DeployState::HookPassed as i32, Some(2)),
                "exit code 2",
            ),
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
