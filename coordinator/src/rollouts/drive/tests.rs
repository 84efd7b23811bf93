//! The rollout controller's core, driven as the loop drives it: deploy jobs
//! in, reports and ticks, and what it staged checked after each.

use std::collections::BTreeSet;

use drover_deploy::rollout::{Phase, Rollout, Target};

use super::*;
use crate::core::machine::ArtifactRef;

fn job(run: u64, on_newer: &str, strategy: &str) -> DeployJob {
    let text = format!(
        "name: d\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps: [{{run: make}}]\n  deploy:\n    \
         needs: [build]\n    deploy:\n      environment: staging\n      artifact: build:dist\n      \
         service:\n        name: web\n        command: ./app\n        port: 8080\n        health: {{tcp: true, \
         interval: 1s, healthy_after: 2, timeout: 30s}}\n      strategy: {strategy}\n      on_newer: {on_newer}\n      \
         progress_deadline: 1m\n"
    );
    let pipeline = drover_pipeline::parse("ci.yml", &text).unwrap_or_else(|e| panic!("{e}"));
    DeployJob {
        run,
        job: "deploy".into(),
        attempt: 1,
        spec: pipeline.job("deploy").and_then(|j| j.deploy.clone()).expect("a deploy job"),
        branch: Some("main".into()),
        commit: Some("c0ffee".into()),
        artifact: Some(ArtifactRef { sha256: format!("{run:064}"), size: 10, files: 1 }),
        cancelling: false,
        trace: None,
    }
}

/// Plans the startable rollouts over `nodes`, as the loop does.
fn begin_all(d: &mut Driver, nodes: &[&str], now: u64) {
    for id in std::mem::take(&mut d.startable) {
        let rec = &d.records[&id];
        let previous = d.previous(&rec.env, &rec.service);
        let spec = drover_deploy::rollout::Spec {
            release: rec.release.version.clone(),
            strategy: crate::core::rollouts::strategy(&rec.deploy.strategy),
            on_failure: drover_deploy::rollout::OnFailure::Rollback,
            await_verdict: rec.deploy.analysis.is_some(),
            waves: Vec::new(),
        };
        let targets =
            nodes.iter().map(|n| Target { node: n.to_string(), rollback_to: previous.get(*n).cloned() }).collect();
        d.begin(id, Rollout::new(spec, targets).map_err(|e| e.to_string()), now);
    }
}

/// The actions staged, as "node kind id", and clears them (as sending does).
fn sent(d: &mut Driver) -> Vec<String> {
    let out = d
        .unsent
        .iter()
        .map(|((_, node), a)| {
            let kind = match &a.kind {
                DeployKind::Install { release, .. } => format!("install {}", release.version),
                DeployKind::Rollback { to, .. } => format!("rollback {}", to.clone().unwrap_or_default()),
                DeployKind::Switch { version } => format!("switch {version}"),
                DeployKind::Restart { version } => format!("restart {version}"),
                DeployKind::Hook { .. } => "hook".to_string(),
            };
            format!("{node} {kind} {}", a.id)
        })
        .collect();
    d.unsent.clear();
    out
}

/// A report from `node` on its action numbered `seq`.
fn report_on(d: &mut Driver, id: u64, node: &str, seq: u64, state: DeployState, message: &str, now: u64) {
    let r = DeployReport {
        node: node.into(),
        rollout: id,
        seq,
        service: "web".into(),
        state,
        message: message.into(),
        version: String::new(),
        exit_code: None,
    };
    d.report(r, now);
}

/// A report on the node's action in flight.
fn report(d: &mut Driver, id: u64, node: &str, state: DeployState, now: u64) {
    let seq = d.records[&id].inflight[node];
    report_on(d, id, node, seq, state, "said so", now);
}

fn phase(d: &Driver, id: u64) -> Phase {
    d.records[&id].rollout.as_ref().expect("started").phase
}

#[test]
fn a_rolling_deploy_goes_node_by_node_and_the_next_goes_back_to_it() {
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
    begin_all(&mut d, &["a", "b"], 1);
    let v1 = d.records[&1].release.version.clone();
    assert_eq!(sent(&mut d), [format!("a install {v1} 1/1")]);
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    assert_eq!(sent(&mut d), [format!("b install {v1} 1/2")]);
    report(&mut d, 1, "b", DeployState::Installed, 4);
    report(&mut d, 1, "b", DeployState::Healthy, 5);
    assert_eq!(phase(&d, 1), Phase::Succeeded);
    assert_eq!(d.finished.len(), 1);
    assert!(d.finished[0].succeeded, "{:?}", d.finished);
    assert_eq!(d.previous("staging", "web").values().collect::<Vec<_>>(), [&v1, &v1]);

    // v2 fails its health on b: both go back to v1, b first.
    d.start_job(job(2, "queue", "{rolling: {max_parallel: 1}}"), 10);
    begin_all(&mut d, &["a", "b"], 11);
    let v2 = d.records[&2].release.version.clone();
    assert_eq!(sent(&mut d), [format!("a install {v2} 2/1")]);
    report(&mut d, 2, "a", DeployState::Installed, 12);
    report(&mut d, 2, "a", DeployState::Healthy, 13);
    sent(&mut d);
    report(&mut d, 2, "b", DeployState::Installed, 14);
    report(&mut d, 2, "b", DeployState::Failed, 15);
    assert_eq!(sent(&mut d), [format!("b rollback {v1} 2/3")]);
    // A stale report (the install's) changes nothing.
    report_on(&mut d, 2, "b", 2, DeployState::Healthy, "", 15);
    report(&mut d, 2, "b", DeployState::RolledBack, 16);
    assert_eq!(sent(&mut d), [format!("a rollback {v1} 2/4")]);
    report(&mut d, 2, "a", DeployState::RolledBack, 17);
    assert_eq!(phase(&d, 2), Phase::RolledBack);
    assert!(!d.finished[1].succeeded);
    assert!(d.finished[1].message.contains("node b failed: said so"), "{}", d.finished[1].message);
    assert_eq!(d.previous("staging", "web").values().collect::<Vec<_>>(), [&v1, &v1], "every node is back on v1");
}

#[test]
fn a_second_deploy_of_the_service_waits_or_supersedes() {
    // (on_newer, whether the first ends aborted)
    for (on_newer, aborts) in [("queue", false), ("supersede", true)] {
        let mut d = Driver::default();
        d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
        begin_all(&mut d, &["a"], 1);
        sent(&mut d);
        d.start_job(job(2, on_newer, "{rolling: {max_parallel: 1}}"), 2);
        assert!(d.startable.is_empty(), "{on_newer}: the second waits");
        assert!(d.records[&2].message.contains("waiting for rollout 1"), "{}", d.records[&2].message);
        if aborts {
            assert_eq!(phase(&d, 1), Phase::RollingBack, "superseded");
            report(&mut d, 1, "a", DeployState::RolledBack, 3);
            assert_eq!(phase(&d, 1), Phase::Aborted);
        } else {
            report(&mut d, 1, "a", DeployState::Installed, 3);
            report(&mut d, 1, "a", DeployState::Healthy, 4);
            assert_eq!(phase(&d, 1), Phase::Succeeded);
        }
        assert_eq!(d.startable, BTreeSet::from([2]), "{on_newer}: the second starts once the first has ended");
    }
}

#[test]
fn nodes_away_fail_deadlines_abort_and_a_failover_sends_again() {
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 2}}"), 0);
    begin_all(&mut d, &["a", "b"], 0);
    sent(&mut d);
    let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let only_a: BTreeSet<String> = ["a".to_string()].into();
    let grace = NODE_AWAY_GRACE.as_millis() as u64;
    d.tick(&both, 1_000);
    d.tick(&only_a, 2_000);
    d.tick(&only_a, 2_000 + grace - 1);
    assert_eq!(phase(&d, 1), Phase::Progressing, "not yet");
    d.tick(&only_a, 2_000 + grace);
    assert_eq!(phase(&d, 1), Phase::RollingBack, "b has been away too long");

    // The progress deadline (1m) aborts a rollout that does not finish.
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
    begin_all(&mut d, &["a"], 0);
    d.tick(&both, 60_001);
    assert_eq!(phase(&d, 1), Phase::RollingBack);
    assert!(d.records[&1].rollout.as_ref().unwrap().message.contains("progress deadline of 1m"));

    // A new leader sends what was in flight again, numbered anew.
    let mut d2 = Driver { records: d.records.clone(), last_id: 1, ..Default::default() };
    d2.resume(100);
    assert_eq!(sent(&mut d2), ["a rollback  1/3"]);
}

#[test]
fn operators_commands_apply_or_say_why_not() {
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}"), 0);
    begin_all(&mut d, &["a", "b"], 0);
    let err = d.command(1, Verb::Promote { full: false }, "alice", 1).unwrap_err();
    assert!(err.contains("not waiting for a promotion"), "{err}");
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    sent(&mut d);
    d.command(1, Verb::Promote { full: false }, "alice", 4).unwrap();
    let v = d.records[&1].release.version.clone();
    assert_eq!(sent(&mut d), [format!("b install {v} 1/2")]);
    assert!(d.command(1, Verb::Resume, "alice", 5).unwrap_err().contains("not paused"));
    assert!(d.command(9, Verb::Pause, "alice", 5).unwrap_err().contains("there is no rollout 9"));
    d.command(1, Verb::Abort, "alice", 6).unwrap();
    assert_eq!(phase(&d, 1), Phase::RollingBack);
}

#[test]
fn a_deploy_without_a_release_or_an_environment_fails_its_job_saying_why() {
    let mut d = Driver::default();
    let mut j = job(1, "queue", "{rolling: {max_parallel: 1}}");
    j.artifact = None;
    d.start_job(j, 0);
    assert!(d.finished[0].message.contains("job build packed no artifacts"), "{:?}", d.finished);
    d.start_job(job(2, "queue", "{rolling: {max_parallel: 1}}"), 0);
    let id = *d.startable.iter().next().unwrap();
    d.begin(id, Err("there is no environment staging".into()), 1);
    assert!(!d.finished[1].succeeded);
    assert_eq!(d.finished[1].message, "there is no environment staging");
    // The same job again (a failover) only tells its end again.
    d.start_job(job(2, "queue", "{rolling: {max_parallel: 1}}"), 2);
    assert_eq!(d.finished.len(), 3);
    assert_eq!(d.records.len(), 2);
}

#[test]
fn a_rollback_goes_to_the_release_before_on_every_node_at_once_after_what_runs() {
    let mut d = Driver::default();
    let err = d.rollback("staging", "web", None, false, "alice", None, 0).unwrap_err();
    assert!(err.contains("never been deployed to staging"), "{err}");
    let mut versions = Vec::new();
    for run in 1..=2 {
        d.start_job(job(run, "queue", "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}"), run);
        begin_all(&mut d, &["a", "b"], run);
        let v = d.records[&run].release.version.clone();
        for node in ["a", "b"] {
            report(&mut d, run, node, DeployState::Installed, run);
            report(&mut d, run, node, DeployState::Healthy, run);
            if node == "a" {
                d.command(run, Verb::Promote { full: false }, "alice", run).unwrap();
            }
        }
        assert_eq!(phase(&d, run), Phase::Succeeded);
        versions.push(v);
    }
    sent(&mut d);
    let err = d.rollback("staging", "web", Some("nope".into()), false, "alice", None, 5).unwrap_err();
    assert!(err.contains("has no release nope; its releases are:") && err.contains(&versions[0]), "{err}");

    // A third deploy is under way when the rollback is asked for: it goes
    // back first, then every node goes to v1 at once, with no pause.
    d.start_job(job(3, "queue", "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}"), 6);
    begin_all(&mut d, &["a", "b"], 6);
    sent(&mut d);
    let id = d.rollback("staging", "web", None, false, "alice", None, 7).unwrap();
    assert_eq!(d.records[&id].release.version, versions[0], "the one before the current");
    assert_eq!(phase(&d, 3), Phase::RollingBack);
    assert!(d.startable.is_empty(), "it waits for rollout 3 to go back");
    report(&mut d, 3, "a", DeployState::RolledBack, 8);
    assert_eq!(phase(&d, 3), Phase::Aborted);
    let id_start = *d.startable.iter().next().expect("startable now");
    assert_eq!(id_start, id);
    // The loop plans it as a fast track.
    let targets =
        ["a", "b"].iter().map(|n| Target { node: n.to_string(), rollback_to: Some(versions[1].clone()) }).collect();
    d.startable.clear();
    d.begin(id, Rollout::fast_track(versions[0].clone(), targets).map_err(|e| e.to_string()), 9);
    let all = sent(&mut d);
    assert_eq!(all.len(), 2, "every node at once: {all:?}");
    for node in ["a", "b"] {
        report(&mut d, id, node, DeployState::Installed, 10);
        report(&mut d, id, node, DeployState::Healthy, 10);
    }
    assert_eq!(phase(&d, id), Phase::Succeeded);
    assert!(d.previous("staging", "web").values().all(|v| *v == versions[0]));
}

/// A deploy job with hooks: `before` and `after_batch` and `after`.
fn hooked(run: u64) -> DeployJob {
    let mut j = job(run, "queue", "{rolling: {max_parallel: 1}}");
    let step = |run: &str| drover_pipeline::StepSpec { name: None, run: run.into(), condition: None };
    j.spec.hooks.before = vec![step("./migrate")];
    j.spec.hooks.after_batch = vec![step("./smoke")];
    j.spec.hooks.after = vec![step("./announce")];
    j
}

fn hook_report(d: &mut Driver, id: u64, node: &str, passed: bool, now: u64) {
    let rec = &d.records[&id];
    let seq = rec.hook.as_ref().filter(|h| h.node == node).map(|h| h.seq).unwrap_or_else(|| rec.inflight[node]);
    let state = if passed { DeployState::HookPassed } else { DeployState::HookFailed };
    report_on(d, id, node, seq, state, "exit 3", now);
}

#[test]
fn hooks_run_before_the_first_batch_after_each_node_and_after_success() {
    let mut d = Driver::default();
    d.start_job(hooked(1), 0);
    begin_all(&mut d, &["a", "b"], 0);
    let v = d.records[&1].release.version.clone();
    assert_eq!(sent(&mut d), ["a hook 1/1"], "the before hook first, on the first node");
    assert_eq!(phase(&d, 1), Phase::Pending);
    hook_report(&mut d, 1, "a", true, 1);
    assert_eq!(sent(&mut d), [format!("a install {v} 1/2")]);
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    assert_eq!(sent(&mut d), ["a hook 1/3"], "a's after_batch hook holds its health");
    assert_eq!(d.records[&1].rollout.as_ref().unwrap().node("a").unwrap().state, NodeState::Checking);
    hook_report(&mut d, 1, "a", true, 4);
    assert_eq!(sent(&mut d), [format!("b install {v} 1/4")]);
    report(&mut d, 1, "b", DeployState::Installed, 5);
    report(&mut d, 1, "b", DeployState::Healthy, 6);
    hook_report(&mut d, 1, "b", true, 7);
    assert_eq!(phase(&d, 1), Phase::Succeeded);
    assert_eq!(sent(&mut d), ["a hook 1/6"], "the after hook");
    assert!(d.finished.is_empty(), "the run hears once the after hook ends");
    hook_report(&mut d, 1, "a", false, 8);
    assert_eq!(d.finished.len(), 1);
    assert!(!d.finished[0].succeeded, "a failed after hook fails the job");
    assert!(d.finished[0].message.contains("but its after hook failed: exit 3"), "{}", d.finished[0].message);
    let log = String::from_utf8(d.logs.iter().flat_map(|l| l.data.clone()).collect()).unwrap();
    for line in ["── hook before on a ──", "── hook before on a: passed ──", "── hook after on a: failed: exit 3 ──"]
    {
        assert!(log.contains(line), "{line:?} in {log}");
    }
}

#[test]
fn a_failed_hook_fails_its_node_or_keeps_the_rollout_from_starting() {
    // after_batch fails: the node fails, and the rollout goes back.
    let mut d = Driver::default();
    let mut j = hooked(1);
    j.spec.hooks.before.clear();
    j.spec.hooks.after.clear();
    d.start_job(j, 0);
    begin_all(&mut d, &["a"], 0);
    sent(&mut d);
    report(&mut d, 1, "a", DeployState::Installed, 1);
    report(&mut d, 1, "a", DeployState::Healthy, 2);
    hook_report(&mut d, 1, "a", false, 3);
    assert_eq!(phase(&d, 1), Phase::RollingBack);
    let why = &d.records[&1].rollout.as_ref().unwrap().node("a").unwrap().reason;
    assert!(why.contains("its after_batch hook failed: exit 3"), "{why}");

    // before fails: nothing is touched, and the job fails saying why.
    let mut d = Driver::default();
    d.start_job(hooked(1), 0);
    begin_all(&mut d, &["a", "b"], 0);
    sent(&mut d);
    hook_report(&mut d, 1, "a", false, 1);
    assert_eq!(phase(&d, 1), Phase::Aborted);
    assert!(sent(&mut d).is_empty(), "no node is touched");
    assert!(!d.finished[0].succeeded);
    assert!(d.finished[0].message.contains("before hook failed: exit 3"), "{:?}", d.finished);
}

#[test]
fn a_rollback_during_a_rollback_ends_on_the_release_last_asked_for() {
    let mut d = Driver::default();
    let mut versions = Vec::new();
    for run in 1..=3 {
        d.start_job(job(run, "queue", "{rolling: {max_parallel: 2}}"), run);
        begin_all(&mut d, &["a", "b"], run);
        for node in ["a", "b"] {
            report(&mut d, run, node, DeployState::Installed, run);
            report(&mut d, run, node, DeployState::Healthy, run);
        }
        versions.push(d.records[&run].release.version.clone());
    }
    sent(&mut d);
    let targets = |back: &str| -> Vec<Target> {
        ["a", "b"].iter().map(|n| Target { node: n.to_string(), rollback_to: Some(back.to_string()) }).collect()
    };
    // Back to v1; while it moves, back to v2 instead.
    let first = d.rollback("staging", "web", Some(versions[0].clone()), false, "alice", None, 10).unwrap();
    d.startable.clear();
    d.begin(first, Rollout::fast_track(versions[0].clone(), targets(&versions[2])).map_err(|e| e.to_string()), 10);
    sent(&mut d);
    report(&mut d, first, "a", DeployState::Installed, 11);
    let second = d.rollback("staging", "web", Some(versions[1].clone()), false, "bob", None, 12).unwrap();
    assert_eq!(phase(&d, first), Phase::RollingBack, "the first rollback goes back");
    assert!(d.startable.is_empty(), "the second waits for it");
    for node in ["b", "a"] {
        if d.records[&first].inflight.contains_key(node) {
            report(&mut d, first, node, DeployState::RolledBack, 13);
        }
    }
    assert_eq!(phase(&d, first), Phase::Aborted);
    assert_eq!(d.startable, BTreeSet::from([second]));
    d.startable.clear();
    d.begin(second, Rollout::fast_track(versions[1].clone(), targets(&versions[2])).map_err(|e| e.to_string()), 14);
    for node in ["a", "b"] {
        report(&mut d, second, node, DeployState::Installed, 15);
        report(&mut d, second, node, DeployState::Healthy, 15);
    }
    assert_eq!(phase(&d, second), Phase::Succeeded);
    assert!(d.previous("staging", "web").values().all(|v| *v == versions[1]), "the service ends on v2");
}

#[test]
fn a_removal_stops_the_service_on_the_nodes_that_serve_it_and_goes_back_if_one_cannot() {
    let mut d = Driver::default();
    let remove = |d: &mut Driver, now: u64| {
        let (reply, _rx) = tokio::sync::oneshot::channel();
        let cmd = crate::scheduler::SyncCommand {
            env: "staging".into(),
            action: crate::scheduler::SyncAction::Remove { service: "web".into() },
            branch: Some("main".into()),
            by: "app web sync 2 (auto-sync)".into(),
            automatic: true,
            reply,
        };
        d.start_sync(&cmd, now)
    };
    let err = remove(&mut d, 0).unwrap_err();
    assert!(err.contains("never been deployed to staging"), "{err}");
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 1);
    begin_all(&mut d, &["a", "b"], 1);
    let v1 = d.records[&1].release.version.clone();
    for node in ["a", "b"] {
        report(&mut d, 1, node, DeployState::Installed, 2);
        report(&mut d, 1, node, DeployState::Healthy, 2);
    }
    sent(&mut d);
    assert_eq!(d.serving("staging", "web"), ["a", "b"]);

    // Both nodes stop it at once; what they serve is forgotten.
    let id = remove(&mut d, 3).unwrap();
    assert_eq!((d.records[&id].remove, d.records[&id].fast_track), (true, true));
    let targets = ["a", "b"].iter().map(|n| Target { node: n.to_string(), rollback_to: Some(v1.clone()) }).collect();
    d.startable.clear();
    d.begin(id, Rollout::fast_track(crate::rollouts::sync::REMOVED.into(), targets).map_err(|e| e.to_string()), 4);
    assert_eq!(sent(&mut d), [format!("a rollback  {id}/1"), format!("b rollback  {id}/2")], "stop, to nothing");
    report(&mut d, id, "a", DeployState::RolledBack, 5);
    assert_eq!(d.serving("staging", "web"), ["b"]);
    report(&mut d, id, "b", DeployState::RolledBack, 6);
    assert_eq!(phase(&d, id), Phase::Succeeded);
    assert!(d.serving("staging", "web").is_empty());
    assert_eq!(d.records[&id].message, "stopped on 2 node(s)");
    assert!(d.finished.len() == 1, "a removal has no job to tell");

    // Deployed again, then a removal one node cannot do: the other starts
    // its release again.
    d.start_job(job(2, "queue", "{rolling: {max_parallel: 2}}"), 7);
    begin_all(&mut d, &["a", "b"], 7);
    let v2 = d.records[&d.last_id].release.version.clone();
    let deploy = d.last_id;
    for node in ["a", "b"] {
        report(&mut d, deploy, node, DeployState::Installed, 8);
        report(&mut d, deploy, node, DeployState::Healthy, 8);
    }
    sent(&mut d);
    let id = remove(&mut d, 9).unwrap();
    let targets = ["a", "b"].iter().map(|n| Target { node: n.to_string(), rollback_to: Some(v2.clone()) }).collect();
    d.startable.clear();
    d.begin(id, Rollout::fast_track(crate::rollouts::sync::REMOVED.into(), targets).map_err(|e| e.to_string()), 10);
    sent(&mut d);
    report(&mut d, id, "a", DeployState::RolledBack, 11);
    report(&mut d, id, "b", DeployState::Failed, 12);
    assert_eq!(
        sent(&mut d),
        [format!("a rollback {v2} {id}/4"), format!("b rollback {v2} {id}/3")],
        "both go back to v2: a starts it again"
    );
    report(&mut d, id, "b", DeployState::RolledBack, 13);
    report(&mut d, id, "a", DeployState::RolledBack, 13);
    assert_eq!(phase(&d, id), Phase::RolledBack);
    assert_eq!(d.previous("staging", "web").values().collect::<Vec<_>>(), [&v2, &v2]);
}

#[test]
fn an_analysed_step_goes_on_by_its_measurements_and_a_failed_one_goes_back() {
    use super::super::analysis::{Analysing, Measurement};
    use drover_deploy::analysis::Outcome;
    let strategy = "{canary: {steps: [{nodes: 1}, {nodes: 100%}]}}\n      analysis:\n        metrics:\n          - \
                    name: errors\n            http: {url: 'http://m/'}\n            count: 2\n            success: \
                    result < 1";
    let mut d = Driver::default();
    d.start_job(job(1, "queue", strategy), 0);
    begin_all(&mut d, &["a", "b"], 1);
    let v1 = d.records[&1].release.version.clone();
    assert_eq!(sent(&mut d), [format!("a install {v1} 1/1")]);
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    // Step 0's nodes are healthy: its metrics are measured, nothing moves.
    let run = d.records[&1].analysing.expect("analysing step 0");
    assert_eq!((run.step, run.run), (0, 1));
    assert!(sent(&mut d).is_empty());
    let m = |step, run, outcome| Measurement {
        step,
        run,
        metric: "errors".into(),
        at_ms: 4,
        took_ms: 1,
        value: "0".into(),
        outcome,
        message: String::new(),
        canary: Vec::new(),
        baseline: Vec::new(),
    };
    // (what comes in, the step analysed after it, what is sent)
    d.measured(1, m(0, 9, Outcome::Failed), 4);
    assert_eq!(d.records[&1].analysing, Some(run), "a measurement of another run is dropped");
    assert_eq!(d.records[&1].measurements.len(), 0);
    d.measured(1, m(0, 1, Outcome::Successful), 5);
    assert_eq!(d.records[&1].analysing, Some(run), "one of two measurements: still measuring");
    d.measured(1, m(0, 1, Outcome::Successful), 6);
    assert_eq!(sent(&mut d), [format!("b install {v1} 1/2")], "passed: on to step 1");
    assert_eq!(d.records[&1].analysing, None);
    report(&mut d, 1, "b", DeployState::Installed, 7);
    report(&mut d, 1, "b", DeployState::Healthy, 8);
    assert_eq!(d.records[&1].analysing, Some(Analysing { step: 1, run: 2, started_ms: 8 }));
    d.measured(1, m(1, 2, Outcome::Failed), 9);
    assert_eq!(phase(&d, 1), Phase::RollingBack, "a failed measurement past its limit of 0 goes back");
    assert!(d.records[&1].rollout.as_ref().unwrap().message.contains("metric errors: 1 of 1 measurements failed"));
    assert_eq!(d.records[&1].analysing, None);
    assert_eq!(d.records[&1].measurements.len(), 3, "every measurement is kept");
}

#[test]
fn a_one_way_door_freezes_on_a_failure_and_on_its_deadline_rather_than_go_back() {
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
    begin_all(&mut d, &["a", "b"], 1);
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    report(&mut d, 1, "b", DeployState::Installed, 4);
    report(&mut d, 1, "b", DeployState::Healthy, 5);
    sent(&mut d);
    let door = |d: &mut Driver, run: u64| {
        let mut j = job(run, "queue", "{rolling: {max_parallel: 1}}");
        j.spec.irreversible = true;
        j.spec.auto_rollback = true;
        d.start_job(j, 10);
    };
    door(&mut d, 2);
    let plan = |d: &mut Driver| {
        let id = *d.startable.iter().next().unwrap();
        let rec = &d.records[&id];
        let previous = d.previous(&rec.env, &rec.service);
        let env = crate::core::environments::Spec { name: "staging".into(), ..Default::default() };
        let node = |name: &str| crate::core::environments::Node {
            name: name.into(),
            connected: true,
            draining: false,
            unready: String::new(),
            last_seen_ms: 0,
            ..Default::default()
        };
        let nodes = vec![node("a"), node("b")];
        let planned = crate::core::rollouts::plan(&rec.deploy, &rec.release.version, &env, None, &nodes, &previous);
        d.startable.remove(&id);
        d.begin(id, planned.map_err(|e| e.to_string()), 11);
        id
    };
    let id = plan(&mut d);
    sent(&mut d);
    report(&mut d, id, "a", DeployState::Installed, 12);
    report(&mut d, id, "a", DeployState::Failed, 13);
    assert_eq!(phase(&d, id), Phase::Paused, "a failure freezes it");
    assert!(sent(&mut d).is_empty(), "nothing goes back");
    let message = d.records[&id].rollout.as_ref().unwrap().message.clone();
    assert!(message.starts_with("frozen where it stands"), "{message}");
    // Its deadline passes: still frozen, still nothing sent.
    d.tick(&["a", "b"].iter().map(|n| n.to_string()).collect(), 10 + 120_000);
    assert_eq!(phase(&d, id), Phase::Paused);
    assert!(sent(&mut d).is_empty());
    // A rollback without --force is refused, with one it goes back.
    let refused = d.rollback("staging", "web", None, false, "alice", None, 200_000).unwrap_err();
    assert!(refused.contains("one-way door"), "{refused}");
    d.rollback("staging", "web", Some(d.records[&1].release.version.clone()), false, "alice", Some("broken"), 200_001)
        .unwrap();
    assert_eq!(phase(&d, id), Phase::RollingBack, "forced: the frozen one goes back first");
}

#[test]
fn an_automatic_change_to_an_older_build_is_a_downgrade() {
    let mut d = Driver::default();
    let serving = |run: &str| records::Deployed {
        node: "a".into(),
        release: ReleaseRef {
            version: format!("v-{run}"),
            sha256: "f".repeat(64),
            size: 1,
            path: "dist".into(),
            run: run.into(),
            commit: String::new(),
            url: String::new(),
        },
        rollout: 9,
        healthy: true,
        since_ms: 0,
        health_message: String::new(),
        health_ms: 0,
    };
    d.deployed.insert(("staging".into(), "web".into(), "a".into()), serving("5"));
    d.start_job(job(3, "queue", "{rolling: {max_parallel: 1}}"), 0);
    d.start_job(job(7, "queue", "{rolling: {max_parallel: 1}}"), 0);
    // (case, rollout, guarded, a downgrade)
    let cases = [("older run", 1, true, true), ("newer run", 2, true, false), ("asked for", 1, false, false)];
    for (case, id, guarded, want) in cases {
        d.records.get_mut(&id).unwrap().guard_downgrade = guarded;
        assert_eq!(d.downgrade(id).is_some(), want, "{case}");
    }
    d.records.get_mut(&1).unwrap().guard_downgrade = true;
    let why = d.downgrade(1).unwrap();
    assert!(why.starts_with("refused as a downgrade: release"), "{why}");
    assert!(why.contains("built by run 3, older than run 5's v-5, which node a serves"), "{why}");
    // A release with no run (an artifact by URL) is not compared.
    d.records.get_mut(&1).unwrap().release.run = String::new();
    assert_eq!(d.downgrade(1), None);
}

#[test]
fn a_freeze_holds_what_would_start_and_what_would_go_on_and_a_thaw_starts_the_newest() {
    let frozen = |until_ms| crate::freezes::Freeze {
        environment: "staging".into(),
        reason: "quarter close".into(),
        by: "alice".into(),
        from_ms: 0,
        until_ms,
    };
    let mut d = Driver::default();
    // A rollout under way: its first node healthy, then the freeze: the
    // second batch waits at the gate.
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
    let id = *d.startable.iter().next().unwrap();
    begin_awaiting(&mut d, id, 1);
    sent(&mut d);
    d.freezes.insert("staging".into(), frozen(0));
    report(&mut d, id, "a", DeployState::Installed, 2);
    report(&mut d, id, "a", DeployState::Healthy, 3);
    assert_eq!(d.records[&id].held_by_freeze, Some(0), "the next step waits");
    assert!(sent(&mut d).is_empty(), "b is not installed while frozen");
    let message = d.records[&id].rollout.as_ref().unwrap().message.clone();
    assert!(message.contains("step 0 done; the next waits: environment staging is frozen"), "{message}");
    d.thaw(4);
    assert!(sent(&mut d).is_empty(), "still frozen");

    // The freeze runs out: the held step goes on.
    d.freezes.insert("staging".into(), frozen(7));
    d.thaw(8);
    assert_eq!(d.records[&id].held_by_freeze, None);
    let b = sent(&mut d);
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].starts_with("b install"), "{b:?}");
    report(&mut d, id, "b", DeployState::Installed, 9);
    report(&mut d, id, "b", DeployState::Healthy, 10);
    assert_eq!(phase(&d, id), Phase::Succeeded);

    // Frozen again, two deploys come: the first would start, and waits;
    // the second queues behind it.
    d.freezes.insert("staging".into(), frozen(0));
    d.start_job(job(2, "queue", "{rolling: {max_parallel: 2}}"), 11);
    d.start_job(job(3, "queue", "{rolling: {max_parallel: 2}}"), 11);
    assert_eq!(d.startable.iter().copied().collect::<Vec<_>>(), [2]);
    // (The loop asks each startable one whether the freeze holds it.)
    assert!(d.wait_for_thaw(2, 12), "rollout 2 waits");
    d.startable.clear();
    assert!(d.records[&2].message.contains("waiting: environment staging is frozen"), "{}", d.records[&2].message);
    d.thaw(13);
    assert!(d.startable.is_empty(), "still frozen");
    // Thawed: of the two that waited, only the newest may start.
    d.freezes.clear();
    d.thaw(14);
    let (older, newer) = (d.records[&2].clone(), d.records[&3].clone());
    assert!(older.is_finished(), "the older waiting rollout ends");
    assert!(older.message.contains("superseded by rollout 3"), "{}", older.message);
    assert!(!newer.is_finished());
    assert_eq!(d.startable.iter().copied().collect::<Vec<_>>(), [3], "the newest may start");
}

/// A rolling deploy of run `run` over two nodes, one at a time, with a
/// gate at each point: `qa` before the rollout (alice approves), `ticket`
/// before the second step (a webhook), `final` before promotion (alice or
/// bob).
fn gated(run: u64) -> DeployJob {
    job(
        run,
        "queue",
        "{rolling: {max_parallel: 1}}\n      gates:\n        - {name: qa, at: before_rollout, approval: {approvers: \
         [alice]}}\n        - {name: ticket, at: before_step, confirm: {url: 'http://tickets:9000/ok', timeout: 1m}}\n        \
         - {name: final, at: before_promotion, approval: {approvers: [alice, bob]}}",
    )
}

/// Starts rollout `id` over nodes a and b, awaiting verdicts, as the loop
/// does once nothing holds it.
fn begin_awaiting(d: &mut Driver, id: u64, now: u64) {
    let rec = &d.records[&id];
    let spec = drover_deploy::rollout::Spec {
        release: rec.release.version.clone(),
        strategy: crate::core::rollouts::strategy(&rec.deploy.strategy),
        on_failure: drover_deploy::rollout::OnFailure::Rollback,
        await_verdict: true,
        waves: Vec::new(),
    };
    let targets = ["a", "b"].iter().map(|n| Target { node: n.to_string(), rollback_to: None }).collect();
    d.startable.remove(&id);
    d.begin(id, Rollout::new(spec, targets).map_err(|e| e.to_string()), now);
}

#[test]
fn gates_hold_each_point_until_the_right_person_or_the_webhook_opens_them() {
    use super::super::gates::{Answer, GateState};
    let approve = |gate: Option<&str>| Verb::Approve { gate: gate.map(str::to_owned), comment: "looks good".into() };
    let mut d = Driver::default();
    d.start_job(gated(1), 0);
    assert_eq!(d.startable.iter().copied().collect::<Vec<_>>(), [1]);
    // Before the rollout: nothing starts until alice approves.
    assert!(d.wait_at_gates(1, 1), "it waits at qa");
    d.startable.clear();
    let rec = &d.records[&1];
    assert_eq!((rec.gates.len(), rec.gates[0].name.as_str(), rec.gates[0].step), (1, "qa", None));
    assert!(rec.message.contains("waiting at gate qa (before_rollout) for one of alice"), "{}", rec.message);
    let err = d.command(1, approve(None), "mallory", 2).unwrap_err();
    assert!(err.contains("mallory may not decide gate qa of rollout 1: its approvers are alice"), "{err}");
    let err = d.command(1, approve(Some("final")), "alice", 2).unwrap_err();
    assert!(err.contains("waits at gate qa, not final"), "{err}");
    d.command(1, approve(Some("qa")), "alice", 3).unwrap();
    let g = &d.records[&1].gates[0];
    assert_eq!(
        (g.state, g.by.as_str(), g.comment.as_str(), g.decided_ms),
        (GateState::Opened, "alice", "looks good", 3)
    );
    assert!(d.startable.contains(&1), "it may start");
    assert!(!d.wait_at_gates(1, 4), "qa is open");
    begin_awaiting(&mut d, 1, 4);
    assert_eq!(sent(&mut d).len(), 1, "a installs");

    // Before the second step: the webhook's gate.
    report(&mut d, 1, "a", DeployState::Installed, 5);
    report(&mut d, 1, "a", DeployState::Healthy, 6);
    assert!(sent(&mut d).is_empty(), "b waits for the ticket");
    let g = d.records[&1].gates.last().unwrap().clone();
    assert_eq!((g.name.as_str(), g.step, g.state), ("ticket", Some(0), GateState::Waiting));
    let err = d.command(1, approve(None), "alice", 7).unwrap_err();
    assert!(err.contains("gate ticket of rollout 1 is a webhook's to open"), "{err}");
    // A stale answer (another step's) changes nothing.
    let answer = |step, opened| Answer { name: "ticket".into(), step, opened, said: "HTTP 200".into() };
    d.gate_answered(1, answer(Some(1), true), 8);
    assert!(sent(&mut d).is_empty());
    d.gate_answered(1, answer(Some(0), true), 9);
    let g = d.records[&1].gates.last().unwrap();
    assert_eq!((g.state, g.by.as_str()), (GateState::Opened, "webhook http://tickets:9000/ok"));
    assert_eq!(sent(&mut d).len(), 1, "b installs");

    // Before promotion: bob refuses, and the rollout goes back.
    report(&mut d, 1, "b", DeployState::Installed, 10);
    report(&mut d, 1, "b", DeployState::Healthy, 11);
    assert_eq!(phase(&d, 1), Phase::Progressing, "not done before the final gate");
    let err = d.command(1, Verb::Reject { gate: None, reason: " ".into() }, "bob", 12).unwrap_err();
    assert!(err.contains("say why"), "{err}");
    d.command(1, Verb::Reject { gate: Some("final".into()), reason: "not today".into() }, "bob", 12).unwrap();
    assert_eq!(phase(&d, 1), Phase::RollingBack);
    let message = &d.records[&1].rollout.as_ref().unwrap().message;
    assert!(message.contains("gate final was refused by bob: not today"), "{message}");
    let states: Vec<GateState> = d.records[&1].gates.iter().map(|g| g.state).collect();
    assert_eq!(states, [GateState::Opened, GateState::Opened, GateState::Refused]);

    // A refusal before the rollout ends it untouched.
    for node in ["b", "a"] {
        report(&mut d, 1, node, DeployState::RolledBack, 13);
    }
    sent(&mut d);
    d.start_job(gated(2), 14);
    let id = d.records.keys().copied().max().unwrap();
    assert!(d.wait_at_gates(id, 15));
    d.command(id, Verb::Reject { gate: None, reason: "freeze week".into() }, "alice", 16).unwrap();
    let rec = &d.records[&id];
    assert!(rec.is_finished() && rec.rollout.is_none(), "ended unstarted");
    assert_eq!(rec.message, "gate qa was refused by alice: freeze week");
    assert_eq!(d.finished.last().map(|f| f.succeeded), Some(false), "its job fails");
}

#[test]
fn closed_deploy_windows_hold_as_a_freeze_does_and_an_override_passes_them() {
    use crate::core::environments::{Spec, Window, WindowKind};
    let deny_always = Window {
        kind: WindowKind::Deny,
        cron: "* * * * *".into(),
        for_ms: 3_600_000,
        timezone: "UTC".into(),
        reason: "change freeze".into(),
    };
    let mut d = Driver::default();
    d.windows
        .insert("staging".into(), Spec { name: "staging".into(), windows: vec![deny_always], ..Default::default() });
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 1}}"), 0);
    assert!(d.wait_for_thaw(1, 1_000), "a closed window holds it");
    d.startable.clear();
    let message = d.records[&1].message.clone();
    assert!(message.contains("waiting:") && message.contains("change freeze"), "{message}");
    d.thaw(2_000);
    assert!(d.startable.is_empty(), "still closed");
    // An override lets this one through, and is kept as its audit.
    let err = d.command(1, Verb::Override { reason: " ".into() }, "alice", 3_000).unwrap_err();
    assert!(err.contains("--reason"), "{err}");
    d.command(1, Verb::Override { reason: "INC-4411 hotfix".into() }, "alice", 3_000).unwrap();
    assert!(d.startable.contains(&1), "it may start");
    let o = d.records[&1].overridden.clone().unwrap();
    assert_eq!((o.by.as_str(), o.reason.as_str(), o.at_ms), ("alice", "INC-4411 hotfix", 3_000));
    assert!(!d.wait_for_thaw(1, 4_000), "nothing holds it now");
}

#[test]
fn a_background_analysis_measures_the_whole_rollout_and_goes_back_or_pauses() {
    use super::super::analysis::{BACKGROUND, Measurement};
    use drover_deploy::analysis::Outcome;
    let strategy = |limit: u32| {
        format!(
            "{{canary: {{steps: [{{nodes: 1}}, {{pause: manual}}, {{nodes: 100%}}]}}}}\n      analysis:\n        run: \
             background\n        metrics:\n          - name: errors\n            http: {{url: 'http://m/'}}\n            \
             failure_limit: 1\n            inconclusive_limit: {limit}\n            success: result < 1"
        )
    };
    let m = |run, outcome| Measurement {
        step: BACKGROUND,
        run,
        metric: "errors".into(),
        at_ms: 4,
        took_ms: 1,
        value: "0".into(),
        outcome,
        message: String::new(),
        canary: Vec::new(),
        baseline: Vec::new(),
    };
    let mut d = Driver::default();
    d.start_job(job(1, "queue", &strategy(5)), 0);
    begin_all(&mut d, &["a", "b"], 1);
    let run = d.records[&1].background.expect("measuring from the start");
    assert_eq!((run.step, run.run), (BACKGROUND, 1));
    sent(&mut d);
    report(&mut d, 1, "a", DeployState::Installed, 2);
    report(&mut d, 1, "a", DeployState::Healthy, 3);
    assert_eq!(d.records[&1].analysing, None, "steps are not analysed: `run: background`");
    assert_eq!(d.records[&1].rollout.as_ref().unwrap().hold, Some(drover_deploy::rollout::Hold::Promote));
    // Many good measurements never end it; one failure is tolerated (its
    // limit is 1), a second sends it back while it waits at the pause.
    for _ in 0..50 {
        d.measured(1, m(1, Outcome::Successful), 4);
    }
    d.measured(1, m(1, Outcome::Failed), 5);
    assert_eq!(phase(&d, 1), Phase::Progressing);
    d.measured(1, m(1, Outcome::Failed), 6);
    assert_eq!(phase(&d, 1), Phase::RollingBack);
    let message = &d.records[&1].rollout.as_ref().unwrap().message;
    assert!(
        message.contains("the background analysis failed: metric errors: 2 of 52 measurements failed"),
        "{message}"
    );
    assert_eq!(d.records[&1].background, None, "it stops");

    // An inconclusive one pauses it; resuming measures again.
    let mut d = Driver::default();
    d.start_job(job(2, "queue", &strategy(0)), 0);
    begin_all(&mut d, &["a", "b"], 1);
    d.measured(1, m(1, Outcome::Error), 2);
    assert_eq!(phase(&d, 1), Phase::Paused);
    assert!(d.records[&1].rollout.as_ref().unwrap().message.contains("background analysis is inconclusive"));
    d.command(1, Verb::Resume, "alice", 3).unwrap();
    assert_eq!(d.records[&1].background.map(|b| b.run), Some(2), "a new run");
}

#[test]
fn a_metric_compared_with_a_baseline_splits_the_nodes_and_judges_the_samples() {
    use super::super::analysis::{Measurement, Split};
    use drover_deploy::analysis::Outcome;
    let strategy = "{canary: {steps: [{nodes: 1}, {nodes: 100%}]}}\n      analysis:\n        metrics:\n          - \
                    name: latency\n            prometheus: {address: 'http://p:9090', query: 'q'}\n            \
                    compare: {baseline: {node_label: node}}\n            count: 6";
    let m = |run, canary: f64, baseline: f64| Measurement {
        step: 0,
        run,
        metric: "latency".into(),
        at_ms: 4,
        took_ms: 1,
        value: String::new(),
        outcome: Outcome::Successful,
        message: String::new(),
        canary: vec![canary],
        baseline: vec![baseline],
    };
    // (case, the canary's samples, the baseline's, the phase after)
    let cases: [(&str, [f64; 6], [f64; 6], Phase); 2] = [
        (
            "noise: as fast as its baseline",
            [0.020, 0.022, 0.019, 0.021, 0.020, 0.023],
            [0.021, 0.019, 0.022, 0.020, 0.021, 0.020],
            Phase::Progressing,
        ),
        (
            "slower than its baseline",
            [0.061, 0.058, 0.065, 0.060, 0.059, 0.062],
            [0.021, 0.019, 0.022, 0.020, 0.021, 0.020],
            Phase::RollingBack,
        ),
    ];
    for (case, canary, baseline, after) in cases {
        let mut d = Driver::default();
        d.start_job(job(1, "queue", strategy), 0);
        begin_all(&mut d, &["a", "b", "c", "d"], 1);
        sent(&mut d);
        report(&mut d, 1, "a", DeployState::Installed, 2);
        report(&mut d, 1, "a", DeployState::Healthy, 3);
        let split = d.records[&1].split.clone();
        assert_eq!(split, Some(Split { canary: vec!["a".into()], baseline: vec!["d".into()] }), "{case}");
        for (c, b) in canary.iter().zip(baseline) {
            d.measured(1, m(1, *c, b), 5);
        }
        assert_eq!(phase(&d, 1), after, "{case}");
        if after == Phase::RollingBack {
            let message = &d.records[&1].rollout.as_ref().unwrap().message;
            assert!(message.contains("worse than its baseline: the canary's median 0.0605"), "{message}");
        } else {
            assert_eq!(d.records[&1].analysing, None, "{case}: passed, on to the next step");
        }
    }
}

#[test]
fn waves_across_environments_record_each_node_in_its_own_and_hold_both() {
    use drover_pipeline::deploy::Wave;
    let mut d = Driver::default();
    let wave =
        |name: &str, env: &str| Wave { name: name.into(), selector: Default::default(), environment: Some(env.into()) };
    let mut j = job(1, "queue", "{rolling: {max_parallel: 1}}");
    j.spec.waves = vec![wave("home", "staging"), wave("eu", "prod-eu")];
    d.start_job(j, 0);
    // A deploy to prod-eu alone waits for it, as one to staging would.
    let mut eu = job(2, "queue", "{rolling: {max_parallel: 1}}");
    eu.spec.environment = "prod-eu".into();
    d.start_job(eu, 1);
    assert_eq!(d.startable, BTreeSet::from([1]));
    assert!(d.records[&2].message.contains("waiting for rollout 1"), "{}", d.records[&2].message);

    let env = |name: &str| crate::core::environments::Spec { name: name.into(), ..Default::default() };
    let node =
        |name: &str| crate::core::environments::Node { name: name.into(), connected: true, ..Default::default() };
    let (staging, prod_eu) = (env("staging"), env("prod-eu"));
    let (a, e) = ([node("a")], [node("e")]);
    let over: Vec<(&crate::core::environments::Spec, &[crate::core::environments::Node])> =
        vec![(&staging, &a), (&prod_eu, &e)];
    let rec = &d.records[&1];
    assert_eq!(rec.envs(), ["staging", "prod-eu"]);
    let planned =
        crate::core::rollouts::plan_across(&rec.deploy, &rec.release.version, &over, None, &BTreeMap::new()).unwrap();
    d.startable.remove(&1);
    d.records.get_mut(&1).unwrap().node_envs = planned.node_envs;
    d.begin(1, Ok(planned.rollout), 2);
    let v1 = d.records[&1].release.version.clone();
    for (node, at) in [("a", 3), ("e", 5)] {
        report(&mut d, 1, node, DeployState::Installed, at);
        report(&mut d, 1, node, DeployState::Healthy, at + 1);
    }
    assert_eq!(phase(&d, 1), Phase::Succeeded);
    let deployed: Vec<(&str, &str)> = d.deployed.keys().map(|(env, _, node)| (env.as_str(), node.as_str())).collect();
    assert_eq!(deployed, [("prod-eu", "e"), ("staging", "a")], "each node in its own environment");
    for env in ["staging", "prod-eu"] {
        assert!(d.catalog.contains_key(&(env.to_string(), "web".to_string(), v1.clone())), "catalogued in {env}");
    }
    assert_eq!(d.startable, BTreeSet::from([2]), "the prod-eu deploy starts once it has ended");

    // A rollback in staging, whose last rollout spanned both, goes back in
    // staging only.
    d.startable.clear();
    let id = d.rollback("staging", "web", Some(v1.clone()), false, "alice", None, 10).unwrap();
    let rec = &d.records[&id];
    assert_eq!((rec.env.as_str(), rec.envs()), ("staging", vec!["staging"]));
}

#[test]
fn a_compared_canary_step_starts_as_many_baseline_nodes_afresh() {
    let mut d = Driver::default();
    d.start_job(job(1, "queue", "{rolling: {max_parallel: 4}}"), 0);
    let nodes = ["a", "b", "c", "d"];
    begin_all(&mut d, &nodes, 1);
    sent(&mut d);
    for node in nodes {
        report(&mut d, 1, node, DeployState::Installed, 2);
        report(&mut d, 1, node, DeployState::Healthy, 3);
    }
    assert_eq!(phase(&d, 1), Phase::Succeeded);
    let v1 = d.records[&1].release.version.clone();
    let compared = "{canary: {steps: [{nodes: 1}, {nodes: 100%}]}}\n      analysis: {metrics: [{name: latency, \
                    prometheus: {address: 'http://p:9090', query: up}, compare: {baseline: {node_label: node}}, count: \
                    5}]}";
    d.start_job(job(2, "queue", compared), 10);
    begin_all(&mut d, &nodes, 11);
    let v2 = d.records[&2].release.version.clone();
    assert_eq!(sent(&mut d), [format!("a install {v2} 2/1")], "the canary");
    // At the same moment, the last waiting node starts v1 afresh.
    let restarts: Vec<String> = d
        .probes
        .unsent
        .values()
        .map(|(node, a)| match &a.kind {
            DeployKind::Restart { version } => format!("{node} restart {version} {}", a.id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(restarts, [format!("d restart {v1} 2/2")]);
    // Its report is the restart's, not the machine's: d stays waiting.
    report_on(&mut d, 2, "d", 2, DeployState::Healthy, "started afresh", 12);
    assert!(d.probes.restarts.is_empty() && d.probes.unsent.is_empty());
    let machine = d.records[&2].rollout.as_ref().unwrap();
    assert_eq!(machine.node("d").unwrap().state, drover_deploy::rollout::NodeState::Waiting);
    // The canary healthy: the analysis splits off the same node.
    report(&mut d, 2, "a", DeployState::Installed, 13);
    report(&mut d, 2, "a", DeployState::Healthy, 14);
    let split = d.records[&2].split.clone().unwrap();
    assert_eq!((split.canary, split.baseline), (vec!["a".to_string()], vec!["d".to_string()]));

    // A rollout with no compared metric restarts nothing.
    d.start_job(job(3, "supersede", "{canary: {steps: [{nodes: 1}, {nodes: 100%}]}}"), 20);
    report(&mut d, 2, "a", DeployState::RolledBack, 21);
    begin_all(&mut d, &nodes, 22);
    assert!(d.probes.unsent.is_empty(), "{:?}", d.probes.unsent.keys().collect::<Vec<_>>());
}
