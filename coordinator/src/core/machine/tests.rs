//! Table tests of the run state machine: each case feeds a sequence of inputs
//! to a fresh run and checks the resulting job and run states.

use super::*;
use drover_pipeline::{JobSpec, Pipeline, StepSpec};

/// A pipeline of jobs given as (name, needs, retries), each one step of
/// `true`; the scheduler's burst tests use it too.
pub(crate) fn pipeline(jobs: &[(&str, &[&str], u32)]) -> Pipeline {
    Pipeline {
        name: "p".into(),
        env: BTreeMap::new(),
        jobs: jobs
            .iter()
            .map(|(name, needs, retries)| JobSpec {
                name: name.to_string(),
                runs_on: BTreeMap::new(),
                env: BTreeMap::new(),
                timeout: None,
                queue_timeout: None,
                retries: *retries,
                needs: needs.iter().map(|n| n.to_string()).collect(),
                steps: vec![StepSpec { name: None, run: "true".into(), condition: None }],
                artifacts: None,
                skip_artifacts_of: Vec::new(),
                secrets: Vec::new(),
                cache: None,
                condition: None,
                approval: None,
                concurrency: None,
                matrix: None,
                deploy: None,
            })
            .collect(),
        concurrency: None,
        on: Default::default(),
    }
}

fn assign(job: &str) -> Input {
    Input::Assign { job: job.into(), agent: "a1".into(), why: None }
}
fn accept(job: &str, attempt: u32) -> Input {
    Input::Accepted { job: job.into(), attempt }
}
fn done(job: &str, attempt: u32, outcome: Outcome) -> Input {
    Input::Finished { job: job.into(), attempt, outcome }
}
fn ok(job: &str, attempt: u32) -> Input {
    done(job, attempt, Outcome::Succeeded { artifact: None, cache: None })
}
fn fail(job: &str, attempt: u32) -> Input {
    done(job, attempt, Outcome::Failed { exit_code: 3, detail: String::new() })
}
fn lost(job: &str, attempt: u32) -> Input {
    done(job, attempt, Outcome::Lost { reason: "lease expired".into() })
}

struct Case {
    name: &'static str,
    jobs: &'static [(&'static str, &'static [&'static str], u32)],
    inputs: Vec<Input>,
    /// Expected (job, state, attempt) after all inputs.
    expect: &'static [(&'static str, JobState, u32)],
    run: RunState,
}

fn run_case(case: &Case) -> (Run, Vec<Effect>) {
    let mut run = Run::new(1, pipeline(case.jobs), Source::default(), 0);
    let mut all = Vec::new();
    for (i, input) in std::iter::once(Input::Start).chain(case.inputs.iter().cloned()).enumerate() {
        let (next, fx) = step(run, input, i as u64);
        run = next;
        all.extend(fx);
    }
    (run, all)
}

#[test]
fn lifecycle_table() {
    let cases = vec![
        Case {
            name: "roots queue, dependents wait",
            jobs: &[("a", &[], 0), ("b", &["a"], 0), ("c", &[], 0)],
            inputs: vec![],
            expect: &[("a", JobState::Queued, 0), ("b", JobState::Pending, 0), ("c", JobState::Queued, 0)],
            run: RunState::Running,
        },
        Case {
            name: "success unlocks the dependent and finishes the run",
            jobs: &[("a", &[], 0), ("b", &["a"], 0)],
            inputs: vec![assign("a"), accept("a", 1), ok("a", 1), assign("b"), accept("b", 1), ok("b", 1)],
            expect: &[("a", JobState::Succeeded, 1), ("b", JobState::Succeeded, 1)],
            run: RunState::Succeeded,
        },
        Case {
            name: "failure skips dependents transitively, independent job finishes",
            jobs: &[("a", &[], 0), ("b", &["a"], 0), ("c", &["b"], 0), ("d", &[], 0)],
            inputs: vec![assign("a"), assign("d"), accept("a", 1), fail("a", 1), ok("d", 1)],
            expect: &[
                ("a", JobState::Failed, 1),
                ("b", JobState::Skipped, 0),
                ("c", JobState::Skipped, 0),
                ("d", JobState::Succeeded, 1),
            ],
            run: RunState::Failed,
        },
        Case {
            name: "a retry after a failure runs a second attempt",
            jobs: &[("a", &[], 1)],
            inputs: vec![assign("a"), accept("a", 1), fail("a", 1), assign("a"), accept("a", 2), ok("a", 2)],
            expect: &[("a", JobState::Succeeded, 2)],
            run: RunState::Succeeded,
        },
        Case {
            name: "retries run out",
            jobs: &[("a", &[], 1)],
            inputs: vec![assign("a"), fail("a", 1), assign("a"), fail("a", 2)],
            expect: &[("a", JobState::Failed, 2)],
            run: RunState::Failed,
        },
        Case {
            name: "a lost attempt without retries fails the job",
            jobs: &[("a", &[], 0)],
            inputs: vec![assign("a"), accept("a", 1), lost("a", 1)],
            expect: &[("a", JobState::Failed, 1)],
            run: RunState::Failed,
        },
        Case {
            name: "a lost attempt is retried",
            jobs: &[("a", &[], 1)],
            inputs: vec![assign("a"), accept("a", 1), lost("a", 1)],
            expect: &[("a", JobState::Queued, 1)],
            run: RunState::Running,
        },
        Case {
            name: "an attempt that never started is requeued without using a retry",
            jobs: &[("a", &[], 0)],
            inputs: vec![
                assign("a"),
                done("a", 1, Outcome::NotStarted { reason: "agent went away".into() }),
                assign("a"),
                accept("a", 2),
                ok("a", 2),
            ],
            expect: &[("a", JobState::Succeeded, 2)],
            run: RunState::Succeeded,
        },
        Case {
            name: "a stale report from an old attempt changes nothing",
            jobs: &[("a", &[], 1)],
            inputs: vec![assign("a"), accept("a", 1), lost("a", 1), assign("a"), accept("a", 2), ok("a", 1)],
            expect: &[("a", JobState::Running, 2)],
            run: RunState::Running,
        },
        Case {
            name: "a report for a job that is not running changes nothing",
            jobs: &[("a", &[], 0), ("b", &["a"], 0)],
            inputs: vec![ok("b", 0), ok("a", 0)],
            expect: &[("a", JobState::Queued, 0), ("b", JobState::Pending, 0)],
            run: RunState::Running,
        },
        Case {
            name: "cancel: queued jobs cancel at once, running ones after the agent confirms",
            jobs: &[("a", &[], 0), ("b", &[], 0), ("c", &["a"], 0)],
            inputs: vec![assign("a"), accept("a", 1), Input::Cancel],
            expect: &[("a", JobState::Cancelling, 1), ("b", JobState::Cancelled, 0), ("c", JobState::Cancelled, 0)],
            run: RunState::Running,
        },
        Case {
            name: "cancel completes when the running attempt ends, whatever its outcome",
            jobs: &[("a", &[], 3)],
            inputs: vec![assign("a"), accept("a", 1), Input::Cancel, fail("a", 1)],
            expect: &[("a", JobState::Cancelled, 1)],
            run: RunState::Cancelled,
        },
        Case {
            name: "nothing changes after the run finished",
            jobs: &[("a", &[], 0)],
            inputs: vec![assign("a"), ok("a", 1), Input::Cancel, assign("a")],
            expect: &[("a", JobState::Succeeded, 1)],
            run: RunState::Succeeded,
        },
        Case {
            name: "diamond waits for both needs",
            jobs: &[("a", &[], 0), ("b", &[], 0), ("c", &["a", "b"], 0)],
            inputs: vec![assign("a"), assign("b"), ok("a", 1)],
            expect: &[("a", JobState::Succeeded, 1), ("b", JobState::Assigned, 1), ("c", JobState::Pending, 0)],
            run: RunState::Running,
        },
    ];
    for case in &cases {
        let (run, _) = run_case(case);
        for (job, state, attempt) in case.expect {
            let j = &run.jobs[*job];
            assert_eq!((j.state, j.attempt), (*state, *attempt), "case {:?}, job {job}: {j:?}", case.name);
        }
        assert_eq!(run.record.state, case.run, "case {:?}", case.name);
    }
}

#[test]
fn effects_of_assign_and_finish() {
    let run = Run::new(1, pipeline(&[("a", &[], 0), ("b", &["a"], 0)]), Source::default(), 0);
    let (run, fx) = step(run, Input::Start, 1);
    assert_eq!(fx, vec![Effect::PersistJob("a".into()), Effect::Enqueue("a".into()), Effect::PersistRun]);
    let (run, fx) = step(run, assign("a"), 2);
    assert_eq!(
        fx,
        vec![Effect::PersistJob("a".into()), Effect::SendAssign { job: "a".into(), attempt: 1, agent: "a1".into() }]
    );
    let (run, fx) = step(run, ok("a", 1), 3);
    assert_eq!(
        fx,
        vec![
            Effect::Release { job: "a".into(), attempt: 1, agent: "a1".into() },
            Effect::PersistJob("a".into()),
            Effect::PersistJob("b".into()),
            Effect::Enqueue("b".into()),
        ]
    );
    let (run, _) = step(run, assign("b"), 4);
    let (run, fx) = step(run, fail("b", 1), 5);
    assert!(fx.contains(&Effect::RunFinished(RunState::Failed)), "{fx:?}");
    assert_eq!(run.record.finished_ms, Some(5));
    assert_eq!(run.jobs["b"].message, "attempt 1 failed (exit 3)");
}

#[test]
fn cancel_sends_kill_to_the_agent_holding_the_attempt() {
    let run = Run::new(1, pipeline(&[("a", &[], 0)]), Source::default(), 0);
    let (run, _) = step(run, Input::Start, 1);
    let (run, _) = step(run, assign("a"), 2);
    let (_, fx) = step(run, Input::Cancel, 3);
    assert!(fx.contains(&Effect::SendCancel { job: "a".into(), attempt: 1, agent: "a1".into() }), "{fx:?}");
}

#[test]
fn retry_message_counts_down() {
    let run = Run::new(1, pipeline(&[("a", &[], 2)]), Source::default(), 0);
    let (run, _) = step(run, Input::Start, 1);
    let (run, _) = step(run, assign("a"), 2);
    let (run, _) = step(run, lost("a", 1), 3);
    assert_eq!(run.jobs["a"].message, "attempt 1 lost (lease expired), retrying: attempt 2 of 3");
    assert_eq!(run.jobs["a"].state, JobState::Queued);
}

#[test]
fn recover_rederives_what_a_torn_write_left_out() {
    // A success was stored but the dependent's update was not.
    let run = Run::new(
        1,
        pipeline(&[("a", &[], 0), ("b", &["a"], 0), ("c", &["x"], 0), ("x", &[], 0)]),
        Source::default(),
        0,
    );
    let (mut run, _) = step(run, Input::Start, 1);
    run.jobs.get_mut("a").unwrap().state = JobState::Succeeded;
    run.jobs.get_mut("x").unwrap().state = JobState::Failed;
    let (run, fx) = step(run, Input::Recover, 2);
    assert_eq!(run.jobs["b"].state, JobState::Queued);
    assert_eq!(run.jobs["c"].state, JobState::Skipped);
    assert!(fx.contains(&Effect::Enqueue("b".into())), "{fx:?}");
    // Nothing left to do: recovering again changes nothing.
    let (run2, fx) = step(run.clone(), Input::Recover, 3);
    assert_eq!(run2, run);
    assert!(fx.is_empty(), "{fx:?}");

    // All jobs done but the run record not updated: the run finishes.
    let run = Run::new(2, pipeline(&[("a", &[], 0)]), Source::default(), 0);
    let (mut run, _) = step(run, Input::Start, 1);
    run.jobs.get_mut("a").unwrap().state = JobState::Succeeded;
    let (run, fx) = step(run, Input::Recover, 2);
    assert_eq!(run.record.state, RunState::Succeeded);
    assert!(fx.contains(&Effect::RunFinished(RunState::Succeeded)));

    // A requested cancel that was only half written is redone.
    let run = Run::new(3, pipeline(&[("a", &[], 0), ("b", &[], 0)]), Source::default(), 0);
    let (run, _) = step(run, Input::Start, 1);
    let (mut run, _) = step(run, assign("a"), 2);
    run.record.cancel_requested = true;
    let (run, fx) = step(run, Input::Recover, 3);
    assert_eq!(run.jobs["a"].state, JobState::Cancelling);
    assert_eq!(run.jobs["b"].state, JobState::Cancelled);
    assert!(fx.iter().any(|e| matches!(e, Effect::SendCancel { .. })), "{fx:?}");
}

fn waiting(job: &str, blocked: bool) -> Input {
    Input::Waiting { job: job.into(), reason: "an agent with labels gpu=a100".into(), blocked }
}

#[test]
fn blocked_jobs_fail_at_their_queue_timeout_unless_an_agent_comes() {
    const MIN: u64 = 60_000;
    struct Blocked {
        name: &'static str,
        /// The job's own `queue-timeout:`, and the run's default (0: none).
        job_timeout: Option<u64>,
        run_timeout_ms: u64,
        /// (time in ms, input), after Start at 0.
        inputs: Vec<(u64, Input)>,
        /// (job, state, blocked until) at the end.
        expect: &'static [(&'static str, JobState, Option<u64>)],
        run: RunState,
        /// What the failed job's message says, if one failed.
        message: Option<&'static str>,
    }
    let cases = vec![
        Blocked {
            name: "blocked: the deadline is the default 10 minutes on",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(1000, waiting("a", true))],
            expect: &[("a", JobState::Queued, Some(1000 + 10 * MIN)), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
        Blocked {
            name: "still blocked later: the deadline does not move",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(1000, waiting("a", true)), (5000, waiting("a", true))],
            expect: &[("a", JobState::Queued, Some(1000 + 10 * MIN)), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
        Blocked {
            name: "past the deadline: the job fails, its dependents are skipped, the run ends",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(0, waiting("a", true)), (10 * MIN - 1, Input::Deadlines), (10 * MIN, Input::Deadlines)],
            expect: &[("a", JobState::Failed, None), ("b", JobState::Skipped, None)],
            run: RunState::Failed,
            message: Some("no agent with labels gpu=a100 connected within 10m"),
        },
        Blocked {
            name: "an agent with the labels connects: no deadline, nothing fails",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(0, waiting("a", true)), (MIN, waiting("a", false)), (20 * MIN, Input::Deadlines)],
            expect: &[("a", JobState::Queued, None), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
        Blocked {
            name: "blocked again after the agent left: a fresh deadline",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(0, waiting("a", true)), (MIN, waiting("a", false)), (2 * MIN, waiting("a", true))],
            expect: &[("a", JobState::Queued, Some(12 * MIN)), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
        Blocked {
            name: "the run's default",
            job_timeout: None,
            run_timeout_ms: 30_000,
            inputs: vec![(0, waiting("a", true)), (30_000, Input::Deadlines)],
            expect: &[("a", JobState::Failed, None), ("b", JobState::Skipped, None)],
            run: RunState::Failed,
            message: Some("within 30s"),
        },
        Blocked {
            name: "the job's own timeout wins over the run's",
            job_timeout: Some(90_000),
            run_timeout_ms: 30_000,
            inputs: vec![(0, waiting("a", true)), (30_000, Input::Deadlines)],
            expect: &[("a", JobState::Queued, Some(90_000)), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
        Blocked {
            name: "assigned before the deadline: the deadline is gone",
            job_timeout: None,
            run_timeout_ms: 0,
            inputs: vec![(0, waiting("a", true)), (MIN, assign("a")), (11 * MIN, Input::Deadlines)],
            expect: &[("a", JobState::Assigned, None), ("b", JobState::Pending, None)],
            run: RunState::Running,
            message: None,
        },
    ];
    for case in cases {
        let mut p = pipeline(&[("a", &[], 0), ("b", &["a"], 0)]);
        p.jobs[0].queue_timeout = case.job_timeout.map(Duration::from_millis);
        p.jobs[0].runs_on = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
        let mut run = Run::new(1, p, Source::default(), 0);
        run.record.queue_timeout_ms = case.run_timeout_ms;
        run = step(run, Input::Start, 0).0;
        for (at, input) in case.inputs {
            run = step(run, input, at).0;
        }
        for (job, state, until) in case.expect {
            assert_eq!(run.jobs[*job].state, *state, "{}: {job}", case.name);
            assert_eq!(run.jobs[*job].blocked_until_ms, *until, "{}: {job}", case.name);
        }
        assert_eq!(run.record.state, case.run, "{}", case.name);
        if let Some(message) = case.message {
            assert!(run.jobs["a"].message.contains(message), "{}: {}", case.name, run.jobs["a"].message);
        }
    }
}

/// `if:` conditions: when the jobs a job needs have finished, its condition
/// queues or skips it; a skip by condition fails nothing, and dependents
/// decide by their own conditions.
#[test]
fn conditions_decide_whether_a_job_runs() {
    const FILE: &str = "
name: p
env: {DEPLOY: 'yes'}
jobs:
  build: {steps: [{run: make}]}
  test: {needs: [build], steps: [{run: make test}]}
  deploy: {needs: [test], if: \"env.DEPLOY == 'yes'\", steps: [{run: ./deploy}]}
  docs: {needs: [build], if: \"env.DEPLOY == 'no'\", steps: [{run: make docs}]}
  after-docs: {needs: [docs], steps: [{run: 'true'}]}
  cleanup: {needs: [test], if: always(), steps: [{run: ./cleanup}]}
  report: {needs: [test], if: failure(), steps: [{run: ./report}]}
  fixup: {needs: [test], if: \"always() && needs.test.result == 'failure'\", steps: [{run: ./fixup}]}
  quiet: {needs: [test], if: \"needs.test.result == 'failure'\", steps: [{run: 'true'}]}
";
    let pipeline = drover_pipeline::parse("ci.yml", FILE).unwrap_or_else(|e| panic!("{e}"));
    let outcome = |inputs: Vec<Input>| -> (BTreeMap<String, (JobState, String)>, RunState) {
        let mut run = Run::new(1, pipeline.clone(), Source::default(), 0);
        for (i, input) in std::iter::once(Input::Start).chain(inputs).enumerate() {
            run = step(run, input, i as u64).0;
        }
        let states = run.jobs.iter().map(|(n, j)| (n.clone(), (j.state, j.message.clone()))).collect();
        (states, run.record.state)
    };
    use JobState::*;
    // (case, inputs, expected states, run state)
    type Expect = &'static [(&'static str, JobState)];
    let build_ok = || vec![assign("build"), accept("build", 1), ok("build", 1)];
    let cases: Vec<(&str, Vec<Input>, Expect, RunState)> = vec![
        (
            "after build: test queued, docs skipped by its condition, and after-docs for its need",
            build_ok(),
            &[("test", Queued), ("docs", Skipped), ("after-docs", Skipped), ("deploy", Pending), ("cleanup", Pending)],
            RunState::Running,
        ),
        (
            "test succeeds: deploy and cleanup run, report and fixup are skipped",
            [build_ok(), vec![assign("test"), accept("test", 1), ok("test", 1)]].concat(),
            &[("deploy", Queued), ("cleanup", Queued), ("report", Skipped), ("fixup", Skipped)],
            RunState::Running,
        ),
        (
            "test fails: deploy is skipped, cleanup, report and fixup run",
            [build_ok(), vec![assign("test"), accept("test", 1), fail("test", 1)]].concat(),
            // quiet: no status function, so `success() &&` is implied.
            &[("deploy", Skipped), ("cleanup", Queued), ("report", Queued), ("fixup", Queued), ("quiet", Skipped)],
            RunState::Running,
        ),
        (
            "build fails: failure() and always() still run once their needs have finished",
            vec![assign("build"), accept("build", 1), fail("build", 1)],
            &[("test", Skipped), ("deploy", Skipped), ("docs", Skipped), ("cleanup", Queued), ("report", Queued)],
            RunState::Running,
        ),
    ];
    for (case, inputs, expect, run_state) in cases {
        let (states, got_run) = outcome(inputs);
        for (job, state) in expect {
            assert_eq!(states[*job].0, *state, "{case}: {job} ({})", states[*job].1);
        }
        assert_eq!(got_run, run_state, "{case}");
    }
    let (states, _) = outcome(build_ok());
    assert_eq!(states["docs"].1, "skipped: its condition `env.DEPLOY == 'no'` is false");
    assert_eq!(states["after-docs"].1, "skipped: needs docs, which skipped");

    // Everything after a success, with jobs skipped by their conditions:
    // the run succeeded.
    let mut inputs = build_ok();
    inputs.extend([assign("test"), accept("test", 1), ok("test", 1)]);
    for job in ["deploy", "cleanup"] {
        inputs.extend([assign(job), accept(job, 1), ok(job, 1)]);
    }
    let (states, run_state) = outcome(inputs);
    assert_eq!(states["report"].0, Skipped);
    assert_eq!(run_state, RunState::Succeeded, "skips by condition fail nothing");
}

/// `approval:`: a job whose needs let it run waits, pending, until someone
/// decides; approved it queues, rejected it fails and its dependents are
/// skipped. A decision on a job that does not wait changes nothing.
#[test]
fn an_approval_gate_holds_a_job_until_someone_decides() {
    const FILE: &str = "
name: p
jobs:
  build: {steps: [{run: make}]}
  deploy: {needs: [build], approval: {approvers: [alice]}, steps: [{run: ./deploy}]}
  notify: {needs: [deploy], steps: [{run: 'true'}]}
";
    let pipeline = drover_pipeline::parse("ci.yml", FILE).unwrap_or_else(|e| panic!("{e}"));
    let decide = |approve: bool| Input::Decide {
        job: "deploy".into(),
        approve,
        by: "alice".into(),
        comment: if approve { String::new() } else { "not today".into() },
    };
    let run_with = |inputs: Vec<Input>| {
        let mut run = Run::new(1, pipeline.clone(), Source::default(), 0);
        for (i, input) in std::iter::once(Input::Start).chain(inputs).enumerate() {
            run = step(run, input, i as u64).0;
        }
        run
    };
    let built = vec![assign("build"), accept("build", 1), ok("build", 1)];
    // A decision before the gate is reached changes nothing.
    let early = run_with(vec![decide(true)]);
    assert_eq!(early.jobs["deploy"].state, JobState::Pending);
    assert_eq!(early.jobs["deploy"].approval, None);

    let waiting = run_with(built.clone());
    let deploy = &waiting.jobs["deploy"];
    assert_eq!(deploy.state, JobState::Pending);
    assert!(deploy.waiting_for.starts_with("approval by alice (`drover approve 1 deploy`"), "{}", deploy.waiting_for);
    assert_eq!(waiting.record.state, RunState::Running);

    let approved = run_with([built.clone(), vec![decide(true)]].concat());
    assert_eq!(approved.jobs["deploy"].state, JobState::Queued);
    assert_eq!(approved.jobs["deploy"].approval.as_ref().unwrap().text(), "approved by alice");

    let rejected = run_with([built, vec![decide(false), decide(true)]].concat());
    assert_eq!(rejected.jobs["deploy"].state, JobState::Failed, "the second decision changes nothing");
    assert_eq!(rejected.jobs["deploy"].message, "rejected by alice: not today");
    assert_eq!(rejected.jobs["notify"].state, JobState::Skipped);
    assert_eq!(rejected.record.state, RunState::Failed);
}

/// An approval with a `timeout:` that nobody decides fails its job at the
/// deadline; the run has that deadline until then.
#[test]
fn an_approval_nobody_decides_in_time_fails_its_job() {
    const FILE: &str = "
name: p
jobs:
  deploy: {approval: {approvers: [alice], timeout: 1h}, steps: [{run: ./deploy}]}
";
    let pipeline = drover_pipeline::parse("ci.yml", FILE).unwrap_or_else(|e| panic!("{e}"));
    let run = Run::new(1, pipeline, Source::default(), 0);
    let (run, fx) = step(run, Input::Start, 1000);
    assert!(fx.contains(&Effect::Deadline), "{fx:?}");
    assert_eq!(run.next_deadline(), Some(1000 + 3_600_000));
    let (run, _) = step(run, Input::Deadlines, 1000 + 3_599_999);
    assert_eq!(run.jobs["deploy"].state, JobState::Pending, "not yet");
    let (run, _) = step(run, Input::Deadlines, 1000 + 3_600_000);
    assert_eq!(run.jobs["deploy"].state, JobState::Failed);
    assert_eq!(run.jobs["deploy"].message, "nobody approved it within 1h");
    assert_eq!(run.record.state, RunState::Failed);
    assert_eq!(run.next_deadline(), None);
}

#[test]
fn a_matrix_waits_as_one_and_fails_fast_when_asked() {
    let file = |fail_fast: bool| {
        format!(
            "
name: p
jobs:
  t:
    matrix: {{os: [a, b, c]}}
    fail-fast: {fail_fast}
    steps: [{{run: make}}]
  after: {{needs: [t], if: \"always() && needs.t.result == 'failure'\", steps: [{{run: ./report}}]}}
  next: {{needs: [t], steps: [{{run: 'true'}}]}}
"
        )
    };
    let (a, b, c) = ("t (os=a)", "t (os=b)", "t (os=c)");
    use JobState::*;
    type Expect = &'static [(&'static str, JobState)];
    // (case, fail-fast, inputs, expected states)
    let cases: Vec<(&str, bool, Vec<Input>, Expect)> = vec![
        (
            "one expansion done: what needs the matrix still waits",
            true,
            vec![assign(a), ok(a, 1)],
            &[("t (os=a)", Succeeded), ("t (os=b)", Queued), ("after", Pending), ("next", Pending)],
        ),
        (
            "all done: what needs the matrix runs",
            true,
            vec![assign(a), ok(a, 1), assign(b), ok(b, 1), assign(c), ok(c, 1)],
            &[("next", Queued), ("after", Skipped)],
        ),
        (
            "fail-fast: a failure cancels the queued and the running ones",
            true,
            vec![assign(a), assign(b), accept(b, 1), fail(a, 1)],
            &[("t (os=a)", Failed), ("t (os=b)", Cancelling), ("t (os=c)", Cancelled), ("after", Pending)],
        ),
        (
            "fail-fast: once the running one stops, the matrix's result is failure",
            true,
            vec![assign(a), assign(b), accept(b, 1), fail(a, 1), done(b, 1, Outcome::Cancelled)],
            &[("t (os=b)", Cancelled), ("after", Queued), ("next", Skipped)],
        ),
        (
            "without fail-fast the others go on",
            false,
            vec![assign(a), assign(b), fail(a, 1)],
            &[("t (os=a)", Failed), ("t (os=b)", Assigned), ("t (os=c)", Queued), ("after", Pending)],
        ),
    ];
    for (case, fail_fast, inputs, expect) in cases {
        let pipeline = drover_pipeline::parse("ci.yml", &file(fail_fast)).unwrap_or_else(|e| panic!("{e}"));
        let mut run = Run::new(1, pipeline, Source::default(), 0);
        for (i, input) in std::iter::once(Input::Start).chain(inputs).enumerate() {
            run = step(run, input, i as u64).0;
        }
        for (job, state) in expect {
            assert_eq!(run.jobs[*job].state, *state, "{case}: {job} ({})", run.jobs[*job].message);
        }
    }
}

#[test]
fn a_cancelled_run_still_runs_the_jobs_that_ask_to() {
    const FILE: &str = "
name: p
jobs:
  build: {steps: [{run: make}]}
  watch: {if: always(), steps: [{run: ./watch}]}
  deploy: {needs: [build], steps: [{run: ./deploy}]}
  cleanup: {needs: [build], if: always(), steps: [{run: ./cleanup}]}
  report: {needs: [build], if: cancelled(), steps: [{run: ./report}]}
  notify: {needs: [build], if: failure(), steps: [{run: ./notify}]}
  after: {needs: [cleanup], steps: [{run: 'true'}]}
";
    let pipeline = drover_pipeline::parse("ci.yml", FILE).unwrap_or_else(|e| panic!("{e}"));
    use JobState::*;
    type Expect = &'static [(&'static str, JobState)];
    let start = || vec![assign("build"), accept("build", 1), assign("watch"), accept("watch", 1), Input::Cancel];
    let then = |more: Vec<Input>| start().into_iter().chain(more).collect::<Vec<_>>();
    // (case, inputs, expected states, run state)
    let cases: Vec<(&str, Vec<Input>, Expect, RunState)> = vec![
        (
            "on cancel: the running build is told to stop, a running always() job goes on, and jobs that ask to \
             run when cancelled wait for their needs",
            start(),
            &[
                ("build", Cancelling),
                ("watch", Running),
                ("deploy", Cancelled),
                ("cleanup", Pending),
                ("report", Pending),
                ("notify", Pending),
                ("after", Cancelled),
            ],
            RunState::Running,
        ),
        (
            "once the build has stopped: always() and cancelled() run, failure() does not",
            then(vec![done("build", 1, Outcome::Cancelled)]),
            &[("build", Cancelled), ("cleanup", Queued), ("report", Queued), ("notify", Cancelled)],
            RunState::Running,
        ),
        (
            "they finish as their attempts do, and the run ends cancelled",
            then(vec![
                done("build", 1, Outcome::Cancelled),
                ok("watch", 1),
                assign("cleanup"),
                ok("cleanup", 1),
                assign("report"),
                fail("report", 1),
            ]),
            &[("watch", Succeeded), ("cleanup", Succeeded), ("report", Failed)],
            RunState::Cancelled,
        ),
        (
            "a recovery while cancelling leaves them be",
            then(vec![done("build", 1, Outcome::Cancelled), Input::Recover]),
            &[("cleanup", Queued), ("report", Queued), ("watch", Running)],
            RunState::Running,
        ),
    ];
    for (case, inputs, expect, state) in cases {
        let mut run = Run::new(1, pipeline.clone(), Source::default(), 0);
        for (i, input) in std::iter::once(Input::Start).chain(inputs).enumerate() {
            run = step(run, input, i as u64).0;
        }
        for (job, want) in expect {
            assert_eq!(run.jobs[*job].state, *want, "{case}: {job} ({})", run.jobs[*job].message);
        }
        assert_eq!(run.record.state, state, "{case}");
    }
}

#[test]
fn a_run_finishes_with_its_last_job_whatever_order_its_jobs_finish_in() {
    let names = ["a", "b", "c", "d", "e"];
    let jobs: Vec<(&str, &[&str], u32)> = names.iter().map(|n| (*n, &[][..], 0)).collect();
    // (the order the jobs finish in, by index)
    let orders: [[usize; 5]; 4] = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 3, 0, 4, 2]];
    for order in orders {
        let mut run = Run::new(1, pipeline(&jobs), Source::default(), 0);
        (run, _) = step(run, Input::Start, 0);
        for name in names {
            (run, _) = step(run, assign(name), 1);
            (run, _) = step(run, accept(name, 1), 2);
        }
        for (k, &i) in order.iter().enumerate() {
            let (next, fx) = step(run, ok(names[i], 1), 3 + k as u64);
            run = next;
            let finished = fx.iter().any(|e| matches!(e, Effect::RunFinished(RunState::Succeeded)));
            assert_eq!(finished, k == names.len() - 1, "order {order:?}, after {} finished", names[i]);
        }
        assert_eq!(run.record.state, RunState::Succeeded, "{order:?}");
    }
}
