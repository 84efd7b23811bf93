//! Table tests of the agent's protocol core: scripts of what arrives (a
//! coordinator message, an executor event, a new session, a heartbeat) with
//! what the core answers, each answer summed up in a short line.

use super::*;

/// What arrives, `ms` after the script's start. Sizes differ, and tests
/// keep few of them.
#[allow(clippy::large_enum_variant)]
enum Step {
    Msg(u64, In),
    Exec(ExecEvent),
    Hello,
    Beat(u64),
    Report(executor::Report),
    Health(executor::ServiceHealth),
    /// A chunk of a hook's output: its action and data.
    HookOut(&'static str, &'static str),
}

fn welcome(epoch: u64, heartbeat_ms: u32, fence_ms: u32) -> In {
    In::Welcome(pb::Welcome { epoch, heartbeat_ms, ack_timeout_ms: 1000, fence_ms, ..Default::default() })
}

/// A Welcome (epoch 1) that names the idle heartbeat period.
fn idle_welcome(heartbeat_ms: u32, idle_heartbeat_ms: u32) -> In {
    In::Welcome(pb::Welcome { epoch: 1, heartbeat_ms, idle_heartbeat_ms, ack_timeout_ms: 1000, ..Default::default() })
}

fn idle_period(idle_heartbeat_ms: u32) -> In {
    In::IdlePeriod(pb::IdlePeriod { idle_heartbeat_ms })
}

fn assign(id: &str, epoch: u64) -> In {
    In::Assign(pb::Assign {
        attempt_id: id.into(),
        epoch,
        log_cap: 1 << 20,
        work: Some(pb::assign::Work::Job(pb::JobWork {
            run_id: "1".into(),
            job: "a".into(),
            attempt: 1,
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn cancel(id: &str, epoch: u64, disown: bool) -> In {
    In::Cancel(pb::Cancel { attempt_id: id.into(), epoch, disown, reason: "test".into() })
}

fn output(id: &str, data: &str) -> ExecEvent {
    ExecEvent::Output { id: id.into(), data: data.as_bytes().to_vec() }
}

fn finished(id: &str, outcome: Outcome) -> ExecEvent {
    ExecEvent::Finished { id: id.into(), outcome, exit_code: 0, message: String::new(), artifact: None, cache: None }
}

fn deploy(id: &str, epoch: u64, kind: Option<pb::deploy_action::Kind>) -> In {
    In::Deploy(pb::DeployAction { action_id: id.into(), epoch, service: "web".into(), kind })
}

fn install(version: &str, port: u32) -> Option<pb::deploy_action::Kind> {
    Some(pb::deploy_action::Kind::Install(pb::DeployInstall {
        release: Some(pb::ReleaseRef { version: version.into(), sha256: "ab".repeat(32), ..Default::default() }),
        service: Some(pb::ServiceDef { command: "./serve".into(), port, ..Default::default() }),
        beside: false,
    }))
}

fn hook(point: &str, release: Option<&str>, timeout_ms: u64) -> Option<pb::deploy_action::Kind> {
    Some(pb::deploy_action::Kind::Hook(pb::DeployHook {
        point: point.into(),
        steps: vec![
            pb::Step { name: "smoke".into(), run: "./smoke".into(), condition: String::new() },
            pb::Step { name: String::new(), run: "cat VERSION".into(), condition: String::new() },
        ],
        env: [("TARGET".to_string(), "eu".to_string())].into(),
        release: release.map(|v| pb::ReleaseRef {
            version: v.into(),
            sha256: "cd".repeat(32),
            size: 10,
            path: "app".into(),
            run_id: "7".into(),
            commit: "abc".into(),
            url: String::new(),
        }),
        timeout_ms,
    }))
}

fn switch(version: &str) -> Option<pb::deploy_action::Kind> {
    Some(pb::deploy_action::Kind::Switch(pb::DeploySwitch { version: version.into() }))
}

fn report(id: &str, service: &str, state: executor::ReportState, version: &str) -> executor::Report {
    executor::Report {
        action_id: id.into(),
        service: service.into(),
        state,
        message: String::new(),
        version: version.into(),
        exit_code: None,
    }
}

fn health(service: &str, version: &str, healthy: bool, message: &str) -> executor::ServiceHealth {
    executor::ServiceHealth { service: service.into(), version: version.into(), healthy, message: message.into() }
}

fn logs(request_id: u64, service: &str, offset: u64, max_bytes: u32) -> In {
    In::ServiceLogs(pb::ServiceLogsRequest { request_id, service: service.into(), offset, max_bytes })
}

fn out_line(m: &Out) -> String {
    match m {
        Out::Hello(h) => {
            let mut running = h.running.clone();
            running.sort();
            format!("hello {running:?}")
        }
        Out::Heartbeat(h) => format!("heartbeat {} {:?}", h.seq, h.running),
        Out::Accepted(a) => format!("accepted {}", a.attempt_id),
        Out::Log(l) => format!("log {}@{} {:?}", l.attempt_id, l.offset, String::from_utf8_lossy(&l.data)),
        Out::Result(r) => format!("result {} {:?}", r.attempt_id, pb::Outcome::try_from(r.outcome).unwrap()),
        Out::DeployReport(r) => {
            let state = pb::DeployState::try_from(r.state).unwrap();
            let message = if r.message.is_empty() { String::new() } else { format!(" {:?}", r.message) };
            format!("report {} {} {state:?} {:?}{message}", r.action_id, r.service, r.version)
        }
        Out::ServiceLogs(c) => format!(
            "logs #{} {:?} next {} error {:?}",
            c.request_id,
            String::from_utf8_lossy(&c.data),
            c.next_offset,
            c.error
        ),
        Out::ServiceHealth(h) => {
            let message = if h.message.is_empty() { String::new() } else { format!(" {:?}", h.message) };
            format!("health {} {} healthy {}{message}", h.service, h.version, h.healthy)
        }
        Out::HookOutput(o) => format!("hook output {} {:?}", o.action_id, String::from_utf8_lossy(&o.data)),
    }
}

fn run(script: Vec<Step>) -> Vec<String> {
    let t0 = Instant::now();
    let since = |at: Instant| at.duration_since(t0).as_millis();
    let mut p = Protocol::new();
    let mut lines = Vec::new();
    for step in script {
        match step {
            Step::Msg(ms, m) => {
                for action in p.on_message(m, t0 + Duration::from_millis(ms)) {
                    lines.push(match action {
                        Action::Send(m) => out_line(&m),
                        Action::Start { attempt, fence_at } => {
                            format!("start {} fence {:?}", attempt.id, fence_at.map(since))
                        }
                        Action::Kill(id) => format!("kill {id}"),
                        Action::Fence { id, at } => format!("fence {id} {}", since(at)),
                        Action::HeartbeatEvery(d) => format!("every {}", d.as_millis()),
                        Action::HeartbeatPace(d) => format!("pace {}", d.as_millis()),
                        Action::Trust(pem) => format!("trust {} CAs", pem.matches("BEGIN CERTIFICATE").count()),
                        Action::RenewBy(ms) => format!("renew by {ms}"),
                        Action::Deploy(request) => {
                            let order = match request {
                                executor::Request::Order(order) => order,
                                executor::Request::Logs(r) => {
                                    lines.push(format!(
                                        "read logs #{} {} from {} max {}",
                                        r.request_id, r.service, r.offset, r.max_bytes
                                    ));
                                    continue;
                                }
                            };
                            let work = match &order.work {
                                executor::Work::Install { release, service, beside } => {
                                    format!("install {} port {} beside {beside}", release.version, service.port)
                                }
                                executor::Work::Switch { version } => format!("switch {version}"),
                                executor::Work::Restart { version } => format!("restart {version}"),
                                executor::Work::Rollback { to_version, .. } => format!("rollback {to_version:?}"),
                                executor::Work::Hook(h) => format!(
                                    "hook {} on {} steps {} timeout {:?}",
                                    h.point,
                                    h.release.version,
                                    h.steps.len(),
                                    h.timeout
                                ),
                            };
                            format!("deploy {} {} {work}", order.action_id, order.service)
                        }
                    });
                }
            }
            Step::Exec(ev) => lines.extend(p.on_exec(ev).as_ref().map(out_line)),
            Step::Hello => lines.extend(p.hello(pb::Hello::default()).iter().map(out_line)),
            Step::Beat(ms) => lines.push(out_line(&p.heartbeat(false, String::new(), t0 + Duration::from_millis(ms)))),
            Step::Report(r) => lines.push(out_line(&p.on_deploy(r))),
            Step::Health(h) => lines.push(out_line(&p.on_deploy_event(executor::Event::Health(h)))),
            Step::HookOut(id, data) => {
                let event = executor::Event::HookOutput { action_id: id.into(), data: data.as_bytes().to_vec() };
                lines.push(out_line(&p.on_deploy_event(event)));
            }
        }
    }
    lines.push(format!("held {}", p.len()));
    lines
}

#[test]
fn the_protocol_answers_as_the_agent_does() {
    use Step::*;
    let cases: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "an assignment is started, accepted, run, reported, and dropped once acknowledged",
            vec![
                Msg(0, welcome(3, 500, 0)),
                Msg(0, assign("1/a/1", 3)),
                Exec(output("1/a/1", "hi\n")),
                Exec(finished("1/a/1", Outcome::Succeeded)),
                Msg(0, In::ResultAck(pb::ResultAck { attempt_id: "1/a/1".into(), accepted: true })),
            ],
            &[
                "every 2000",
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                // Holding an attempt: heartbeats at the Welcome's period,
                // then four times rarer once it is done with.
                "pace 500",
                "log 1/a/1@0 \"hi\\n\"",
                "result 1/a/1 Succeeded",
                "pace 2000",
                "held 0",
            ],
        ),
        ("the heartbeat period has a floor", vec![Msg(0, welcome(1, 0, 0))], &["every 400", "held 0"]),
        (
            "a Welcome that names the idle period is heeded: its lease TTL, not four heartbeats",
            vec![
                Msg(0, idle_welcome(500, 10_000)),
                Msg(0, assign("1/a/1", 1)),
                Exec(finished("1/a/1", Outcome::Succeeded)),
                Msg(0, In::ResultAck(pb::ResultAck { attempt_id: "1/a/1".into(), accepted: true })),
            ],
            &[
                "every 10000",
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                "pace 500",
                "result 1/a/1 Succeeded",
                "pace 10000",
                "held 0",
            ],
        ),
        (
            "an idle period shorter than the busy one is taken as the busy one",
            vec![Msg(0, idle_welcome(500, 100))],
            &["every 500", "held 0"],
        ),
        (
            "a longer idle period told during the session is heeded at once while idle, and after the attempt \
             while busy; one shorter than the busy period is taken as the busy one, and 0 says nothing",
            vec![
                Msg(0, idle_welcome(500, 10_000)),
                Msg(0, idle_period(30_000)),
                Msg(0, assign("1/a/1", 1)),
                Msg(0, idle_period(40_000)),
                Exec(finished("1/a/1", Outcome::Succeeded)),
                Msg(0, In::ResultAck(pb::ResultAck { attempt_id: "1/a/1".into(), accepted: true })),
                Msg(0, idle_period(0)),
                Msg(0, idle_period(100)),
            ],
            &[
                "every 10000",
                "pace 30000",
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                "pace 500",
                "result 1/a/1 Succeeded",
                "pace 40000",
                "pace 500",
                "held 0",
            ],
        ),
        (
            "assignments and cancels from an older epoch are refused; other kinds of work are not run",
            vec![
                Msg(0, welcome(5, 500, 0)),
                Msg(0, assign("1/a/1", 4)),
                Msg(0, In::Assign(pb::Assign { attempt_id: "1/b/1".into(), epoch: 5, ..Default::default() })),
                Msg(0, assign("1/c/1", 5)),
                Msg(0, cancel("1/c/1", 4, true)),
            ],
            &["every 2000", "start 1/c/1 fence None", "accepted 1/c/1", "pace 500", "held 1"],
        ),
        (
            "an assignment sent again is accepted again, not run twice",
            vec![Msg(0, assign("1/a/1", 0)), Msg(0, assign("1/a/1", 0))],
            &["start 1/a/1 fence None", "accepted 1/a/1", "pace 2000", "accepted 1/a/1", "held 1"],
        ),
        (
            "a new session's Hello lists what is held and sends again what was not acknowledged",
            vec![
                Msg(0, assign("1/a/1", 0)),
                Exec(output("1/a/1", "ab")),
                Exec(output("1/a/1", "cd")),
                Msg(0, In::LogAck(pb::LogAck { attempt_id: "1/a/1".into(), offset: 2 })),
                Exec(finished("1/a/1", Outcome::Failed)),
                Hello,
            ],
            &[
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                "pace 2000",
                "log 1/a/1@0 \"ab\"",
                "log 1/a/1@2 \"cd\"",
                "result 1/a/1 Failed",
                "hello [\"1/a/1\"]",
                "log 1/a/1@2 \"cd\"",
                "result 1/a/1 Failed",
                "held 1",
            ],
        ),
        (
            "a cancel kills a running attempt, whose result is still reported",
            vec![
                Msg(0, assign("1/a/1", 0)),
                Msg(0, cancel("1/a/1", 0, false)),
                Exec(finished("1/a/1", Outcome::Cancelled)),
            ],
            &[
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                "pace 2000",
                "kill 1/a/1",
                "result 1/a/1 Cancelled",
                "held 1",
            ],
        ),
        (
            "a disowned attempt is killed, left out of Hellos and heartbeats, and dropped unreported",
            vec![
                Msg(0, assign("1/a/1", 0)),
                Msg(0, cancel("1/a/1", 0, true)),
                Exec(output("1/a/1", "late")),
                Beat(10),
                Hello,
                Exec(finished("1/a/1", Outcome::Cancelled)),
            ],
            &[
                "start 1/a/1 fence None",
                "accepted 1/a/1",
                "pace 2000",
                "kill 1/a/1",
                "heartbeat 1 []",
                "hello []",
                "held 0",
            ],
        ),
        (
            "disowning a finished attempt drops it; cancelling an unknown one does nothing",
            vec![
                Msg(0, assign("1/a/1", 0)),
                Exec(finished("1/a/1", Outcome::Succeeded)),
                Msg(0, cancel("1/a/1", 0, true)),
                Msg(0, cancel("9/z/1", 0, true)),
            ],
            &["start 1/a/1 fence None", "accepted 1/a/1", "pace 2000", "result 1/a/1 Succeeded", "pace 8000", "held 0"],
        ),
        (
            "a fenced attempt is dropped unreported; the idle pace comes back with the next message",
            vec![
                Msg(0, welcome(1, 500, 800)),
                Msg(100, assign("1/a/1", 1)),
                Exec(finished("1/a/1", Outcome::Fenced)),
                Msg(900, In::HeartbeatAck(pb::HeartbeatAck { seq: 9, renewed_seq: 9 })),
            ],
            &["every 2000", "start 1/a/1 fence Some(900)", "accepted 1/a/1", "pace 500", "pace 2000", "held 0"],
        ),
        (
            "an acknowledged heartbeat moves the fences of what it listed, only ever later",
            vec![
                Msg(0, welcome(1, 500, 800)),
                Msg(100, assign("1/a/1", 1)),
                Beat(50),
                Beat(500),
                Msg(600, In::HeartbeatAck(pb::HeartbeatAck { seq: 1, renewed_seq: 1 })),
                Msg(700, In::HeartbeatAck(pb::HeartbeatAck { seq: 2, renewed_seq: 2 })),
                Msg(700, In::HeartbeatAck(pb::HeartbeatAck { seq: 2, renewed_seq: 2 })),
            ],
            &[
                "every 2000",
                "start 1/a/1 fence Some(900)",
                "accepted 1/a/1",
                "pace 500",
                "heartbeat 1 [\"1/a/1\"]",
                "heartbeat 2 [\"1/a/1\"]",
                "fence 1/a/1 1300",
                "held 1",
            ],
        ),
        (
            "deploy actions from an older epoch are refused; the rest go to the deploy executor or fail at once",
            vec![
                Msg(0, welcome(5, 500, 0)),
                Msg(0, deploy("r/1", 4, install("v1", 8080))),
                Msg(0, deploy("r/2", 5, install("v1", 8080))),
                Msg(0, deploy("r/3", 6, switch("v1"))),
                Msg(
                    0,
                    deploy(
                        "r/6",
                        5,
                        Some(pb::deploy_action::Kind::Restart(pb::DeployRestart { version: "v1".into() })),
                    ),
                ),
                Msg(0, deploy("r/4", 5, None)),
                Msg(0, deploy("r/5", 5, install("v2", 70000))),
            ],
            &[
                "every 2000",
                "deploy r/2 web install v1 port 8080 beside false",
                "deploy r/3 web switch v1",
                "deploy r/6 web restart v1",
                "report r/4 web Failed \"\" \"a deploy action of a kind this agent does not know\"",
                "report r/5 web Failed \"\" \"the service's port 70000 is not a TCP port (1 to 65535)\"",
                "held 0",
            ],
        ),
        (
            "a hook goes to the deploy executor; one without a release fails as a hook",
            vec![
                Msg(0, welcome(5, 500, 0)),
                Msg(0, deploy("r/1", 5, hook("before", Some("v2"), 30_000))),
                Msg(0, deploy("r/2", 5, hook("after", Some("v2"), 0))),
                Msg(0, deploy("r/3", 4, hook("after", Some("v2"), 0))),
                Msg(0, deploy("r/4", 5, hook("after", None, 0))),
            ],
            &[
                "every 2000",
                "deploy r/1 web hook before on v2 steps 2 timeout Some(30s)",
                "deploy r/2 web hook after on v2 steps 2 timeout None",
                "report r/4 web HookFailed \"\" \"the hook names no release\"",
                "held 0",
            ],
        ),
        (
            "a hook's output goes out as it comes and is not kept; its final report is sent again after a Hello",
            vec![
                HookOut("r/1", "$ ./smoke\n"),
                HookOut("r/1", "ok\n"),
                Report(report("r/1", "web", executor::ReportState::HookPassed, "v2")),
                Hello,
                Report(report("r/2", "web", executor::ReportState::HookFailed, "v2")),
                Hello,
            ],
            &[
                "hook output r/1 \"$ ./smoke\\n\"",
                "hook output r/1 \"ok\\n\"",
                "report r/1 web HookPassed \"v2\"",
                "hello []",
                "report r/1 web HookPassed \"v2\"",
                "report r/2 web HookFailed \"v2\"",
                "hello []",
                "report r/2 web HookFailed \"v2\"",
                "held 0",
            ],
        ),
        (
            "the latest deploy report of each service is sent again after every Hello",
            vec![
                Report(report("r/1", "web", executor::ReportState::Installed, "v1")),
                Report(report("r/1", "web", executor::ReportState::Healthy, "v1")),
                Report(report("s/1", "api", executor::ReportState::Failed, "")),
                Hello,
                Hello,
            ],
            &[
                "report r/1 web Installed \"v1\"",
                "report r/1 web Healthy \"v1\"",
                "report s/1 api Failed \"\"",
                "hello []",
                "report s/1 api Failed \"\"",
                "report r/1 web Healthy \"v1\"",
                "hello []",
                "report s/1 api Failed \"\"",
                "report r/1 web Healthy \"v1\"",
                "held 0",
            ],
        ),
        (
            "a request for a service's logs goes to the deploy executor, unless its name cannot be a service's",
            vec![
                Msg(0, welcome(5, 500, 0)),
                Msg(0, logs(1, "web", u64::MAX, 0)),
                Msg(0, logs(2, "web", 120, 4096)),
                Msg(0, logs(3, "../etc", 0, 0)),
                Msg(0, logs(4, "", 0, 0)),
            ],
            &[
                "every 2000",
                "read logs #1 web from 18446744073709551615 max 0",
                "read logs #2 web from 120 max 4096",
                "logs #3 \"\" next 0 error \"invalid service name \\\"../etc\\\": use 1 to 64 letters, digits, `_`, `.`, \
                 `+` or `-`, starting with a letter or digit\"",
                "logs #4 \"\" next 0 error \"invalid service name \\\"\\\": use 1 to 64 letters, digits, `_`, `.`, `+` \
                 or `-`, starting with a letter or digit\"",
                "held 0",
            ],
        ),
        (
            "the latest health of each service is sent again after every Hello, until it is rolled back to nothing",
            vec![
                Health(health("web", "v1", true, "")),
                Health(health("web", "v1", false, "GET /healthz on port 9: status 503")),
                Health(health("api", "v3", true, "")),
                Hello,
                Report(report("r/2", "api", executor::ReportState::RolledBack, "v2")),
                Report(report("r/3", "web", executor::ReportState::RolledBack, "")),
                Hello,
            ],
            &[
                "health web v1 healthy true",
                "health web v1 healthy false \"GET /healthz on port 9: status 503\"",
                "health api v3 healthy true",
                "hello []",
                "health api v3 healthy true",
                "health web v1 healthy false \"GET /healthz on port 9: status 503\"",
                "report r/2 api RolledBack \"v2\"",
                "report r/3 web RolledBack \"\"",
                "hello []",
                "report r/2 api RolledBack \"v2\"",
                "report r/3 web RolledBack \"\"",
                "health api v3 healthy true",
                "held 0",
            ],
        ),
    ];
    for (what, script, want) in cases {
        assert_eq!(run(script), *want, "{what}");
    }
}

#[test]
fn a_coordinator_that_acknowledges_nothing_is_frozen_after_the_timeout() {
    let t0 = Instant::now();
    let mut p = Protocol::new();
    p.heartbeat(false, String::new(), t0);
    assert_eq!(p.frozen_at(), None, "no timeout before a Welcome says one");
    p.on_message(welcome(1, 500, 0), t0);
    assert_eq!(p.ack_timeout(), Some(Duration::from_secs(1)));
    assert_eq!(p.frozen_at(), Some(t0 + Duration::from_secs(1)));
    p.on_message(In::HeartbeatAck(pb::HeartbeatAck { seq: 1, renewed_seq: 1 }), t0);
    assert_eq!(p.frozen_at(), None);
    p.hello(pb::Hello::default());
    // Holding nothing: four times rarer than the Welcome's period.
    assert_eq!(p.heartbeat_period(), Duration::from_millis(2000));
    assert_eq!(p.busy_heartbeat_period(), Duration::from_millis(500));
}

#[test]
fn a_session_is_carried_while_its_welcome_says_so() {
    let t0 = Instant::now();
    let mut p = Protocol::new();
    assert!(!p.carried(), "nothing before a Welcome");
    let carried = pb::Welcome { epoch: 1, heartbeat_ms: 500, carried_by: "c2".into(), ..Default::default() };
    p.on_message(In::Welcome(carried), t0);
    assert!(p.carried());
    // The next session starts uncarried until its own Welcome says.
    p.hello(pb::Hello::default());
    assert!(!p.carried());
    p.on_message(welcome(2, 500, 0), t0);
    assert!(!p.carried(), "a Welcome from the leader itself");
}

#[test]
fn each_welcome_says_when_to_renew_the_certificate_or_never() {
    let t0 = Instant::now();
    let mut p = Protocol::new();
    assert_eq!(p.renew_cert_at_ms(), None, "nothing before a Welcome");
    let renew_at =
        |ms| In::Welcome(pb::Welcome { epoch: 1, heartbeat_ms: 500, renew_cert_at_ms: ms, ..Default::default() });
    p.on_message(renew_at(1_800_000_000_000), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(1_800_000_000_000));
    // The next session's coordinator speaks for the certificate it saw.
    p.on_message(renew_at(0), t0);
    assert_eq!(p.renew_cert_at_ms(), None, "0: a certificate never renewed");
}

/// A trust bundle of `n` CAs' certificates, PEM.
fn bundle(n: usize) -> String {
    (0..n).map(|i| crate::test_pki::TestCa::new(&format!("Drover CA {i}")).pem()).collect()
}

fn trust(ca_pem: &str, renew_cert_at_ms: i64) -> In {
    In::Trust(pb::Trust { ca_pem: ca_pem.into(), renew_cert_at_ms })
}

#[test]
fn trust_bundles_are_written_and_a_retiring_ca_brings_the_renewal_forward() {
    use Step::*;
    let (one, two) = (bundle(1), bundle(2));
    let welcome_trusting =
        |ca_pem: &str| In::Welcome(pb::Welcome { heartbeat_ms: 500, ca_pem: ca_pem.into(), ..Default::default() });
    let cases: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "a Welcome's bundle is written",
            vec![Msg(0, welcome_trusting(&two))],
            &["every 2000", "trust 2 CAs", "held 0"],
        ),
        ("a coordinator without a CA key sends none", vec![Msg(0, welcome_trusting(""))], &["every 2000", "held 0"]),
        (
            "a bundle with no certificate in it is not written",
            vec![Msg(0, welcome_trusting("-----BEGIN CERTIFICATE-----\nnot base64\n")), Msg(0, trust("junk", 0))],
            &["every 2000", "held 0"],
        ),
        ("a Trust's bundle is written", vec![Msg(0, trust(&one, 0))], &["trust 1 CAs", "held 0"]),
        (
            "a Trust may change only the renewal",
            vec![Msg(0, trust("", 1_800_000_000_000))],
            &["renew by 1800000000000", "held 0"],
        ),
        ("or both", vec![Msg(0, trust(&two, 1_800_000_000_000))], &["trust 2 CAs", "renew by 1800000000000", "held 0"]),
        ("a Trust saying nothing does nothing", vec![Msg(0, trust("", 0))], &["held 0"]),
    ];
    for (what, script, want) in cases {
        assert_eq!(run(script), *want, "{what}");
    }
    // The bundle goes to the driver as sent.
    let mut p = Protocol::new();
    assert_eq!(p.on_message(trust(&two, 0), Instant::now()), vec![Action::Trust(two)]);
}

#[test]
fn a_trust_only_ever_brings_the_renewal_forward_until_the_next_welcome() {
    let t0 = Instant::now();
    let mut p = Protocol::new();
    let renew_at =
        |ms| In::Welcome(pb::Welcome { epoch: 1, heartbeat_ms: 500, renew_cert_at_ms: ms, ..Default::default() });
    p.on_message(renew_at(3_600_000), t0);
    p.on_message(trust("", 600_000), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(600_000));
    p.on_message(trust("", 1_200_000), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(600_000), "a later deadline puts nothing off");
    p.on_message(trust("", 0), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(600_000), "0: as before");
    // The next session's coordinator speaks for the certificate it saw.
    p.on_message(renew_at(3_600_000), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(3_600_000));
    p.on_message(renew_at(0), t0);
    p.on_message(trust("", 600_000), t0);
    assert_eq!(p.renew_cert_at_ms(), Some(600_000), "never renewed is later than any deadline");
}

#[test]
fn a_logs_chunk_goes_out_with_the_request_id_it_answers() {
    let chunk =
        executor::LogsChunk { request_id: 9, data: b"started v1\n".to_vec(), next_offset: 42, error: String::new() };
    assert_eq!(out_line(&service_logs(chunk)), "logs #9 \"started v1\\n\" next 42 error \"\"");
    let chunk = executor::LogsChunk {
        request_id: 10,
        error: "service web is not deployed on this node".into(),
        ..Default::default()
    };
    assert_eq!(
        out_line(&service_logs(chunk)),
        "logs #10 \"\" next 0 error \"service web is not deployed on this node\""
    );
}

#[test]
fn a_hook_action_becomes_the_executors_hook_in_full() {
    let action = pb::DeployAction {
        action_id: "r/9".into(),
        epoch: 1,
        service: "web".into(),
        kind: hook("after_batch", Some("v2"), 1500),
    };
    let order = deploy::order(action).unwrap();
    let want = executor::Order {
        action_id: "r/9".into(),
        service: "web".into(),
        work: executor::Work::Hook(executor::Hook {
            point: "after_batch".into(),
            steps: vec![
                executor::HookStep { name: "smoke".into(), run: "./smoke".into() },
                executor::HookStep { name: String::new(), run: "cat VERSION".into() },
            ],
            env: [("TARGET".to_string(), "eu".to_string())].into(),
            release: executor::ReleaseRef {
                version: "v2".into(),
                sha256: "cd".repeat(32),
                size: 10,
                path: "app".into(),
                run_id: "7".into(),
                commit: "abc".into(),
                url: String::new(),
            },
            timeout: Some(Duration::from_millis(1500)),
        }),
    };
    assert_eq!(order, want);
    let report_in = || executor::Report {
        action_id: "r/9".into(),
        service: "web".into(),
        state: executor::ReportState::HookFailed,
        message: "step 1 (smoke) exited with 3".into(),
        version: "v2".into(),
        exit_code: Some(3),
    };
    let failed = deploy::report(report_in());
    assert_eq!(
        (failed.state, failed.message.as_str(), failed.version.as_str(), failed.exit_code),
        (pb::DeployState::HookFailed as i32, "step 1 (smoke) exited with 3", "v2", Some(3))
    );
    let passed = executor::Report { state: executor::ReportState::HookPassed, message: String::new(), ..report_in() };
    assert_eq!(deploy::report(passed).state, pb::DeployState::HookPassed as i32);
}

/// The Assign's job token reaches the attempt the executor gets, for its
/// transfers; printing the attempt (or the action starting it) never shows
/// it.
#[test]
fn an_assigns_job_token_stays_on_the_attempt_and_out_of_print() {
    let mut p = Protocol::new();
    let t0 = Instant::now();
    p.on_message(welcome(1, 1000, 0), t0);
    let In::Assign(mut a) = assign("1/a/1", 1) else { unreachable!() };
    let Some(pb::assign::Work::Job(job)) = a.work.as_mut() else { unreachable!() };
    job.job_token = "djt-secret-of-1/a/1".into();
    let actions = p.on_message(In::Assign(a), t0);
    let Some(Action::Start { attempt, .. }) = actions.iter().find(|a| matches!(a, Action::Start { .. })) else {
        panic!("no start in {actions:?}");
    };
    assert_eq!(attempt.job_token.expose(), "djt-secret-of-1/a/1");
    assert_eq!((attempt.auth().attempt, attempt.auth().token.expose()), ("1/a/1", "djt-secret-of-1/a/1"));
    for shown in [format!("{attempt:?}"), format!("{actions:?}"), format!("{:#?}", attempt.auth())] {
        assert!(!shown.contains("secret-of"), "{shown}");
        assert!(shown.contains("(job token)"), "{shown}");
    }
}
