//! Deploy jobs in the run machine. A deploy job holds no agent slot: its
//! work is a rollout over an environment's nodes, which the rollout
//! controller drives. So once it is ready it does not queue; it goes
//! straight to Running with a new attempt (so that a report about an older
//! rollout of the job is recognisably stale), and [`Effect::StartDeploy`]
//! tells the driver to start the rollout once that is persisted. The
//! rollout's end comes back as `Input::DeployFinished`. A deploy job is
//! never retried: going back is the rollout's own business, and a second
//! rollout of the same release would find the nodes where the first left
//! them.

use super::{Effect, JobRecord, JobState, Run, settle};

/// The deploy job `name` is ready: Running, a new attempt, its rollout
/// asked for.
pub(super) fn start(run: &mut Run, name: &str, now_ms: u64, fx: &mut Vec<Effect>) {
    let Some(j) = run.jobs.get_mut(name) else { return };
    j.state = JobState::Running;
    j.attempt += 1;
    j.agent = None;
    j.placement = None;
    j.waiting_for.clear();
    j.blocked_until_ms = None;
    j.exit_code = None;
    j.message = "rolling out".into();
    j.started_ms = Some(now_ms);
    fx.push(Effect::PersistJob(name.to_string()));
    fx.push(Effect::StartDeploy { job: name.to_string(), attempt: j.attempt });
}

/// What stops job `name`, which is being cancelled: its agent's attempt
/// killed, or, for a deploy job (which has no agent), its rollout aborted.
pub(super) fn stop(name: &str, j: &JobRecord, reason: &str) -> Effect {
    match &j.agent {
        Some(agent) => Effect::SendCancel { job: name.to_string(), attempt: j.attempt, agent: agent.clone() },
        None => Effect::CancelDeploy { job: name.to_string(), attempt: j.attempt, reason: reason.to_string() },
    }
}

/// The rollout of attempt `attempt` of deploy job `name` ended.
pub(super) fn finished(
    run: &mut Run,
    name: &str,
    attempt: u32,
    succeeded: bool,
    message: String,
    now_ms: u64,
    fx: &mut Vec<Effect>,
) {
    let is_deploy = run.spec(name).is_some_and(|s| s.deploy.is_some());
    let Some(j) = run.jobs.get_mut(name) else { return };
    if !is_deploy || j.attempt != attempt || !matches!(j.state, JobState::Running | JobState::Cancelling) {
        return;
    }
    j.state = match (succeeded, j.state) {
        (true, _) => JobState::Succeeded,
        (false, JobState::Cancelling) => JobState::Cancelled,
        (false, _) => JobState::Failed,
    };
    j.exit_code = Some(if succeeded { 0 } else { 1 });
    j.finished_ms = Some(now_ms);
    j.message = message;
    fx.push(Effect::PersistJob(name.to_string()));
    settle::settle(run, Some(name), now_ms, fx);
}

#[cfg(test)]
mod tests {
    use super::super::{Input, JobState, Run, Source, step};
    use super::*;

    fn run() -> Run {
        let text = "name: d\njobs:\n  build:\n    artifacts: {paths: [dist]}\n    steps: [{run: make}]\n  deploy:\n    \
                    needs: [build]\n    deploy:\n      environment: staging\n      artifact: build:dist/app.tar.gz\n      \
                    service:\n        name: web\n        command: ./app\n        port: 8080\n        health: {tcp: true, \
                    interval: 1s, healthy_after: 2, timeout: 30s}\n  after:\n    needs: [deploy]\n    steps: [{run: \
                    echo}]\n";
        let pipeline = drover_pipeline::parse("ci.yml", text).unwrap_or_else(|e| panic!("{e}"));
        let (run, _) = step(Run::new(1, pipeline, Source::default(), 0), Input::Start, 0);
        // build runs and succeeds.
        let (run, _) = step(run, Input::Assign { job: "build".into(), agent: "a".into(), why: None }, 1);
        let (run, _) = step(run, Input::Accepted { job: "build".into(), attempt: 1 }, 2);
        let ok = super::super::Outcome::Succeeded { artifact: None, cache: None };
        let (run, fx) = step(run, Input::Finished { job: "build".into(), attempt: 1, outcome: ok }, 3);
        assert!(fx.contains(&Effect::StartDeploy { job: "deploy".into(), attempt: 1 }), "{fx:?}");
        assert!(!fx.contains(&Effect::Enqueue("deploy".into())), "a deploy job takes no slot: {fx:?}");
        run
    }

    #[test]
    fn a_deploy_job_runs_as_its_rollout_and_ends_as_it_did() {
        // (case, reports in order, the job's end state, whether `after` queued)
        type Case = (&'static str, Vec<(u32, bool)>, JobState, bool);
        let cases: Vec<Case> = vec![
            ("the rollout succeeded", vec![(1, true)], JobState::Succeeded, true),
            ("the rollout failed", vec![(1, false)], JobState::Failed, false),
            ("a stale attempt's report changes nothing", vec![(7, true)], JobState::Running, false),
            ("the first report counts", vec![(1, false), (1, true)], JobState::Failed, false),
        ];
        for (case, reports, want, after_queued) in cases {
            let mut run = run();
            assert_eq!(run.jobs["deploy"].state, JobState::Running, "{case}");
            let mut all = Vec::new();
            for (attempt, succeeded) in reports {
                let input =
                    Input::DeployFinished { job: "deploy".into(), attempt, succeeded, message: "said so".into() };
                let (next, fx) = step(run, input, 10);
                run = next;
                all.extend(fx);
            }
            assert_eq!(run.jobs["deploy"].state, want, "{case}");
            assert_eq!(all.contains(&Effect::Enqueue("after".into())), after_queued, "{case}: {all:?}");
        }
    }

    #[test]
    fn cancelling_a_run_aborts_its_rollout_and_the_job_ends_cancelled() {
        let run = run();
        let (run, fx) = step(run, Input::Cancel, 5);
        assert!(
            fx.iter().any(|e| matches!(e, Effect::CancelDeploy { job, attempt: 1, .. } if job == "deploy")),
            "{fx:?}"
        );
        assert_eq!(run.jobs["deploy"].state, JobState::Cancelling);
        let input =
            Input::DeployFinished { job: "deploy".into(), attempt: 1, succeeded: false, message: "aborted".into() };
        let (run, _) = step(run, input, 6);
        assert_eq!(run.jobs["deploy"].state, JobState::Cancelled);
        assert!(run.record.state.is_terminal(), "{:?}", run.record.state);
    }
}
