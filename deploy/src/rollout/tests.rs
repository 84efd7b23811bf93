//! Table tests of the rollout state machine: each case feeds a sequence of
//! inputs to a fresh rolling rollout and checks the resulting node states,
//! phase and step; the tests after the table check the exact effects.

use super::*;
use NodeState::*;

const RELEASE: &str = "sha256:v2";
const PREVIOUS: &str = "sha256:v1";

fn rollout(nodes: &[&str], max_parallel: u32, on_failure: OnFailure, await_verdict: bool) -> Rollout {
    let spec = Spec {
        release: RELEASE.into(),
        strategy: Strategy::Rolling(Rolling { max_parallel }),
        on_failure,
        await_verdict,
        waves: Vec::new(),
    };
    let targets = nodes.iter().map(|n| Target { node: n.to_string(), rollback_to: Some(PREVIOUS.into()) }).collect();
    Rollout::new(spec, targets).expect("a valid rollout")
}

fn installed(node: &str) -> Input {
    Input::NodeInstalled { node: node.into() }
}
fn healthy(node: &str) -> Input {
    Input::NodeHealthy { node: node.into() }
}
fn failed(node: &str) -> Input {
    Input::NodeFailed { node: node.into(), reason: "health check timed out".into() }
}
fn back(node: &str) -> Input {
    Input::NodeRolledBack { node: node.into() }
}
/// A node's install and health check both passing.
fn up(node: &str) -> [Input; 2] {
    [installed(node), healthy(node)]
}
fn pass(step: u32) -> Input {
    Input::Verdict { step, verdict: Verdict::Pass }
}
fn reject(step: u32) -> Input {
    Input::Verdict { step, verdict: Verdict::Fail { reason: "error rate 4%".into() } }
}
fn unsure(step: u32) -> Input {
    Input::Verdict { step, verdict: Verdict::Inconclusive { reason: "no data".into() } }
}
fn abort() -> Input {
    Input::Abort { reason: "aborted by alice".into() }
}

struct Case {
    name: &'static str,
    nodes: &'static [&'static str],
    max_parallel: u32,
    on_failure: OnFailure,
    await_verdict: bool,
    inputs: Vec<Input>,
    /// Expected node states after all inputs, in node order.
    expect: &'static [NodeState],
    phase: Phase,
    step: u32,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            nodes: &["a", "b", "c"],
            max_parallel: 1,
            on_failure: OnFailure::Rollback,
            await_verdict: false,
            inputs: vec![],
            expect: &[],
            phase: Phase::Progressing,
            step: 0,
        }
    }
}

/// Feeds `Start` and the case's inputs, checking on the way that an input
/// changes the rollout exactly when it yields effects, with `Persist` first.
fn run_case(case: &Case) -> (Rollout, Vec<Effect>) {
    let mut ro = rollout(case.nodes, case.max_parallel, case.on_failure, case.await_verdict);
    let mut all = Vec::new();
    for (i, input) in std::iter::once(Input::Start).chain(case.inputs.iter().cloned()).enumerate() {
        let (next, fx) = step(ro.clone(), input.clone(), i as u64);
        if next == ro {
            assert!(fx.is_empty(), "case {:?}: {input:?} changed nothing but yielded {fx:?}", case.name);
        } else {
            assert_eq!(fx.first(), Some(&Effect::Persist), "case {:?}: {input:?} yielded {fx:?}", case.name);
        }
        ro = next;
        all.extend(fx);
    }
    (ro, all)
}

#[test]
fn rollout_table() {
    let cases = vec![
        Case {
            name: "start installs the first batch only",
            nodes: &["a", "b", "c", "d", "e"],
            max_parallel: 2,
            expect: &[Installing, Installing, Waiting, Waiting, Waiting],
            ..Case::default()
        },
        Case {
            name: "happy path in batches, the last one short",
            nodes: &["a", "b", "c", "d", "e"],
            max_parallel: 2,
            inputs: [up("a"), up("b"), up("c"), up("d"), up("e")].concat(),
            expect: &[Healthy, Healthy, Healthy, Healthy, Healthy],
            phase: Phase::Succeeded,
            step: 2,
            ..Case::default()
        },
        Case {
            name: "a batch waits for its slowest node",
            nodes: &["a", "b", "c"],
            max_parallel: 2,
            inputs: [&up("a")[..], &[installed("b")]].concat(),
            expect: &[Healthy, Checking, Waiting],
            ..Case::default()
        },
        Case {
            name: "a batch larger than the node set is one batch",
            nodes: &["a", "b"],
            max_parallel: 5,
            inputs: [up("b"), up("a")].concat(),
            expect: &[Healthy, Healthy],
            phase: Phase::Succeeded,
            ..Case::default()
        },
        Case {
            name: "a failure mid-rollout sends the touched nodes back, last first, two at a time",
            nodes: &["a", "b", "c", "d", "e"],
            max_parallel: 2,
            inputs: [&up("a")[..], &up("b"), &[installed("c"), failed("c")]].concat(),
            expect: &[RollbackQueued, RollbackQueued, RollingBack, RollingBack, Waiting],
            phase: Phase::RollingBack,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "going back takes the next node as one comes back",
            nodes: &["a", "b", "c", "d", "e"],
            max_parallel: 2,
            inputs: [&up("a")[..], &up("b"), &[installed("c"), failed("c"), back("d")]].concat(),
            expect: &[RollbackQueued, RollingBack, RollingBack, RolledBack, Waiting],
            phase: Phase::RollingBack,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "a failure ends RolledBack once every touched node is back",
            nodes: &["a", "b", "c", "d", "e"],
            max_parallel: 2,
            inputs: [
                &up("a")[..],
                &up("b"),
                &[installed("c"), failed("c"), back("d"), back("c"), back("b"), back("a")],
            ]
            .concat(),
            expect: &[RolledBack, RolledBack, RolledBack, RolledBack, Waiting],
            phase: Phase::RolledBack,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "a node of an earlier batch that turns unhealthy sends the rollout back",
            inputs: [&up("a")[..], &[installed("b"), failed("a")]].concat(),
            expect: &[RollbackQueued, RollingBack, Waiting],
            phase: Phase::RollingBack,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "a node that cannot go back ends the rollout Failed, after the others",
            nodes: &["a", "b"],
            inputs: [&up("a")[..], &[failed("b"), failed("b"), back("a")]].concat(),
            expect: &[RolledBack, RollbackFailed],
            phase: Phase::Failed,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "on_failure pause holds where it stands",
            on_failure: OnFailure::Pause,
            inputs: [&up("a")[..], &[installed("b"), failed("b")]].concat(),
            expect: &[Healthy, Failed, Waiting],
            phase: Phase::Paused,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "resume after a failure tries the failed node again",
            on_failure: OnFailure::Pause,
            inputs: [&up("a")[..], &[installed("b"), failed("b"), Input::Resume], &up("b"), &up("c")].concat(),
            expect: &[Healthy, Healthy, Healthy],
            phase: Phase::Succeeded,
            step: 2,
            ..Case::default()
        },
        Case {
            name: "abort after a paused failure goes back",
            on_failure: OnFailure::Pause,
            inputs: [&up("a")[..], &[failed("b"), abort(), back("b"), back("a")]].concat(),
            expect: &[RolledBack, RolledBack, Waiting],
            phase: Phase::Aborted,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "pause lets the nodes in flight finish but starts no batch",
            max_parallel: 2,
            inputs: [&[Input::Pause][..], &up("a"), &up("b")].concat(),
            expect: &[Healthy, Healthy, Waiting],
            phase: Phase::Paused,
            ..Case::default()
        },
        Case {
            name: "resume starts the batch the pause held",
            max_parallel: 2,
            inputs: [&[Input::Pause][..], &up("a"), &up("b"), &[Input::Resume]].concat(),
            expect: &[Healthy, Healthy, Installing],
            step: 1,
            ..Case::default()
        },
        Case {
            name: "a failure during a pause still goes back",
            max_parallel: 2,
            inputs: vec![Input::Pause, failed("a")],
            expect: &[RollingBack, RollingBack, Waiting],
            phase: Phase::RollingBack,
            ..Case::default()
        },
        Case {
            name: "abort goes back, last updated first, and ends Aborted",
            inputs: [&up("a")[..], &[installed("b"), abort()]].concat(),
            expect: &[RollbackQueued, RollingBack, Waiting],
            phase: Phase::RollingBack,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "abort ends Aborted once the nodes are back",
            inputs: [&up("a")[..], &[installed("b"), abort(), back("b"), back("a")]].concat(),
            expect: &[RolledBack, RolledBack, Waiting],
            phase: Phase::Aborted,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "with await_verdict a healthy step waits for its verdict",
            await_verdict: true,
            inputs: up("a").to_vec(),
            expect: &[Healthy, Waiting, Waiting],
            ..Case::default()
        },
        Case {
            name: "a passing verdict starts the next step; the last one finishes",
            nodes: &["a", "b"],
            await_verdict: true,
            inputs: [&up("a")[..], &[pass(0)], &up("b"), &[pass(1)]].concat(),
            expect: &[Healthy, Healthy],
            phase: Phase::Succeeded,
            step: 1,
            ..Case::default()
        },
        Case {
            name: "a failing verdict goes back",
            await_verdict: true,
            inputs: [&up("a")[..], &[reject(0), back("a")]].concat(),
            expect: &[RolledBack, Waiting, Waiting],
            phase: Phase::RolledBack,
            ..Case::default()
        },
        Case {
            name: "an inconclusive verdict pauses",
            await_verdict: true,
            inputs: [&up("a")[..], &[unsure(0)]].concat(),
            expect: &[Healthy, Waiting, Waiting],
            phase: Phase::Paused,
            ..Case::default()
        },
        // Inputs that do not apply change nothing (run_case checks that
        // they yield no effects either).
        Case {
            name: "reports about unknown or waiting nodes change nothing",
            inputs: vec![healthy("zz"), failed("zz"), installed("b"), healthy("b"), failed("c"), back("a")],
            expect: &[Installing, Waiting, Waiting],
            ..Case::default()
        },
        Case {
            name: "reports out of order change nothing",
            inputs: vec![healthy("a"), installed("a"), installed("a")],
            expect: &[Checking, Waiting, Waiting],
            ..Case::default()
        },
        Case {
            name: "a verdict before the step is healthy, for another step, or not awaited changes nothing",
            await_verdict: true,
            inputs: [&[pass(0)][..], &up("a"), &[pass(1), reject(1), unsure(7)]].concat(),
            expect: &[Healthy, Waiting, Waiting],
            ..Case::default()
        },
        Case {
            name: "a verdict nobody asked for changes nothing",
            inputs: [&up("a")[..], &[reject(1), reject(0)]].concat(),
            expect: &[Healthy, Installing, Waiting],
            step: 1,
            ..Case::default()
        },
        Case {
            name: "start twice, resume while running, pause and abort while going back change nothing",
            nodes: &["a", "b"],
            inputs: vec![Input::Start, Input::Resume, failed("a"), Input::Pause, Input::Resume, abort(), healthy("a")],
            expect: &[RollingBack, Waiting],
            phase: Phase::RollingBack,
            ..Case::default()
        },
        Case {
            name: "an install's late reports after its node began going back are stale",
            nodes: &["a", "b"],
            max_parallel: 2,
            inputs: vec![installed("a"), failed("b"), healthy("a"), installed("b")],
            expect: &[RollingBack, RollingBack],
            phase: Phase::RollingBack,
            ..Case::default()
        },
        Case {
            name: "nothing changes after the rollout finished",
            nodes: &["a"],
            inputs: [&up("a")[..], &[abort(), failed("a"), Input::Pause, Input::Start, back("a")]].concat(),
            expect: &[Healthy],
            phase: Phase::Succeeded,
            ..Case::default()
        },
    ];
    for case in &cases {
        let (ro, _) = run_case(case);
        let states: Vec<NodeState> = ro.nodes.iter().map(|n| n.state).collect();
        assert_eq!(states, case.expect, "case {:?}", case.name);
        assert_eq!((ro.phase, ro.step), (case.phase, case.step), "case {:?}: {}", case.name, ro.message);
    }
}

#[test]
fn effects_of_a_rolling_update() {
    let install = |node: &str| Effect::Install { node: node.into(), release: RELEASE.into() };
    let check = |node: &str| Effect::CheckHealth { node: node.into() };
    let ro = rollout(&["a", "b", "c"], 2, OnFailure::Rollback, false);
    let (ro, fx) = step(ro, Input::Start, 10);
    assert_eq!(fx, vec![Effect::Persist, install("a"), install("b")]);
    assert_eq!(ro.started_ms, Some(10));
    let (ro, fx) = step(ro, installed("a"), 11);
    assert_eq!(fx, vec![Effect::Persist, check("a")]);
    let (ro, fx) = step(ro, healthy("a"), 12);
    assert_eq!(fx, vec![Effect::Persist], "b is not healthy yet");
    let (ro, _) = step(ro, installed("b"), 13);
    let (ro, fx) = step(ro, healthy("b"), 14);
    assert_eq!(fx, vec![Effect::Persist, install("c")]);
    let (ro, _) = step(ro, installed("c"), 15);
    let (ro, fx) = step(ro, healthy("c"), 16);
    assert_eq!(fx, vec![Effect::Persist, Effect::Finished(Phase::Succeeded)]);
    assert_eq!((ro.steps(), ro.finished_ms), (2, Some(16)));
}

#[test]
fn going_back_reverses_the_order_to_each_nodes_previous_release() {
    let spec = Spec {
        release: RELEASE.into(),
        strategy: Strategy::Rolling(Rolling { max_parallel: 1 }),
        on_failure: OnFailure::Rollback,
        await_verdict: false,
        waves: Vec::new(),
    };
    let targets = vec![
        Target { node: "a".into(), rollback_to: Some("sha256:v1".into()) },
        Target { node: "b".into(), rollback_to: None },
        Target { node: "c".into(), rollback_to: Some("sha256:v0".into()) },
    ];
    let mut ro = Rollout::new(spec, targets).unwrap();
    for input in [[Input::Start].as_slice(), &up("a"), &up("b"), &[installed("c")]].concat() {
        ro = step(ro, input, 1).0;
    }
    let rollback = |node: &str, to: Option<&str>| Effect::Rollback { node: node.into(), to: to.map(Into::into) };
    let (ro, fx) = step(ro, failed("c"), 2);
    assert_eq!(fx, vec![Effect::Persist, rollback("c", Some("sha256:v0"))]);
    assert_eq!(ro.message, "node c failed: health check timed out");
    assert_eq!(ro.node("c").unwrap().reason, "health check timed out");
    let (ro, fx) = step(ro, back("c"), 3);
    assert_eq!(fx, vec![Effect::Persist, rollback("b", None)]);
    let (ro, fx) = step(ro, back("b"), 4);
    assert_eq!(fx, vec![Effect::Persist, rollback("a", Some("sha256:v1"))]);
    let (ro, fx) = step(ro, back("a"), 5);
    assert_eq!(fx, vec![Effect::Persist, Effect::Finished(Phase::RolledBack)]);
    assert_eq!(ro.finished_ms, Some(5));
}

#[test]
fn verdicts_are_asked_for_and_asked_again_after_a_pause() {
    let ro = rollout(&["a", "b"], 1, OnFailure::Rollback, true);
    let (ro, _) = step(ro, Input::Start, 1);
    let (ro, _) = step(ro, installed("a"), 2);
    let (ro, fx) = step(ro, healthy("a"), 3);
    assert_eq!(fx, vec![Effect::Persist, Effect::AwaitVerdict { step: 0 }]);
    let (ro, fx) = step(ro, unsure(0), 4);
    assert_eq!(fx, vec![Effect::Persist]);
    assert_eq!((ro.phase, ro.message.as_str()), (Phase::Paused, "step 0's verdict is inconclusive: no data"));
    // A verdict that arrives during the pause is dropped; resuming asks again.
    let (ro, fx) = step(ro, pass(0), 5);
    assert!(fx.is_empty(), "{fx:?}");
    let (ro, fx) = step(ro, Input::Resume, 6);
    assert_eq!(fx, vec![Effect::Persist, Effect::AwaitVerdict { step: 0 }]);
    let (ro, fx) = step(ro, pass(0), 7);
    assert_eq!(fx, vec![Effect::Persist, Effect::Install { node: "b".into(), release: RELEASE.into() }]);
    assert_eq!(ro.step, 1);
}

#[test]
fn abort_before_start_touches_no_node() {
    let ro = rollout(&["a", "b"], 1, OnFailure::Rollback, false);
    let (ro, fx) = step(ro, abort(), 7);
    assert_eq!(fx, vec![Effect::Persist, Effect::Finished(Phase::Aborted)]);
    assert_eq!((ro.phase, ro.message.as_str(), ro.finished_ms), (Phase::Aborted, "aborted by alice", Some(7)));
    assert!(ro.nodes.iter().all(|n| n.state == Waiting));
}

#[test]
fn bad_specs_are_refused() {
    let spec = |release: &str, strategy: Strategy| Spec {
        release: release.into(),
        strategy,
        on_failure: OnFailure::Rollback,
        await_verdict: false,
        waves: Vec::new(),
    };
    let rolling = |max_parallel| Strategy::Rolling(Rolling { max_parallel });
    let targets = |names: &[&str]| -> Vec<Target> {
        names.iter().map(|n| Target { node: n.to_string(), rollback_to: None }).collect()
    };
    let canary = |steps| Strategy::Canary(Canary { steps });
    type Case = (&'static str, Spec, Vec<Target>, SpecError);
    let cases: Vec<Case> = vec![
        ("an empty node set", spec(RELEASE, rolling(1)), targets(&[]), SpecError::NoNodes),
        ("a node twice", spec(RELEASE, rolling(1)), targets(&["a", "b", "a"]), SpecError::DuplicateNode("a".into())),
        ("no parallelism", spec(RELEASE, rolling(0)), targets(&["a"]), SpecError::NoParallelism),
        ("no release", spec("", rolling(1)), targets(&["a"]), SpecError::NoRelease),
        (
            "a canary that starts with a pause",
            spec(RELEASE, canary(vec![CanaryStep::Pause(Pause::Manual)])),
            targets(&["a"]),
            SpecError::CanaryStart,
        ),
        (
            "a canary share of 0%",
            spec(RELEASE, canary(vec![CanaryStep::Nodes(Share::Percent(0))])),
            targets(&["a"]),
            SpecError::BadShare(1),
        ),
    ];
    for (name, spec, targets, want) in cases {
        assert_eq!(Rollout::new(spec, targets), Err(want), "case {name:?}");
    }
}

#[test]
fn a_record_whose_strategy_makes_no_plan_is_left_alone() {
    // Rollout::new refuses it, but a record read back from the store could
    // still carry one; stepping it must not panic or move anything.
    let mut ro = rollout(&["a"], 1, OnFailure::Rollback, false);
    ro.spec.strategy = Strategy::Rolling(Rolling { max_parallel: 0 });
    let (next, fx) = step(ro.clone(), Input::Start, 1);
    assert_eq!((next, fx), (ro, vec![]));
}

fn canary_rollout(nodes: &[&str], steps: Vec<CanaryStep>) -> Rollout {
    let spec = Spec {
        release: RELEASE.into(),
        strategy: Strategy::Canary(Canary { steps }),
        on_failure: OnFailure::Rollback,
        await_verdict: false,
        waves: Vec::new(),
    };
    let targets = nodes.iter().map(|n| Target { node: n.to_string(), rollback_to: Some(PREVIOUS.into()) }).collect();
    Rollout::new(spec, targets).expect("a valid canary")
}

fn feed(mut ro: Rollout, inputs: Vec<(Input, u64)>) -> (Rollout, Vec<Effect>) {
    let mut all = Vec::new();
    for (input, at) in inputs {
        let (next, fx) = step(ro, input, at);
        ro = next;
        all.extend(fx);
    }
    (ro, all)
}

#[test]
fn a_canary_goes_by_shares_with_timed_and_manual_pauses() {
    let nodes = ["a", "b", "c", "d"];
    // 25%: a; pause 30s; 50%: b; manual; then the rest.
    let steps = vec![
        CanaryStep::Nodes(Share::Percent(25)),
        CanaryStep::Pause(Pause::For(30_000)),
        CanaryStep::Nodes(Share::Percent(50)),
        CanaryStep::Pause(Pause::Manual),
        CanaryStep::Nodes(Share::Percent(100)),
    ];
    let at = |input: Input, ms: u64| (input, ms);
    let (ro, fx) = feed(
        canary_rollout(&nodes, steps.clone()),
        vec![at(Input::Start, 0), at(installed("a"), 1), at(healthy("a"), 2)],
    );
    assert_eq!(ro.hold, Some(Hold::Until(30_002)), "{}", ro.message);
    assert!(fx.contains(&Effect::WaitUntil { step: 0, until_ms: 30_002 }), "{fx:?}");
    assert_eq!(ro.nodes.iter().map(|n| n.state).collect::<Vec<_>>(), [Healthy, Waiting, Waiting, Waiting]);

    // A tick before the time changes nothing; one after starts step 1.
    let (early, fx) = step(ro.clone(), Input::Tick, 30_001);
    assert_eq!((early.clone(), fx), (ro.clone(), vec![]));
    let (ro, _) = feed(early, vec![at(Input::Tick, 30_002), at(installed("b"), 30_003), at(healthy("b"), 30_004)]);
    assert_eq!(ro.hold, Some(Hold::Promote));
    assert_eq!(ro.step, 1);
    // A promotion goes on to every node left.
    let (ro, fx) = step(ro, Input::Promote { full: false }, 40_000);
    assert!(fx.contains(&Effect::Install { node: "c".into(), release: RELEASE.into() }), "{fx:?}");
    assert!(fx.contains(&Effect::Install { node: "d".into(), release: RELEASE.into() }), "{fx:?}");
    let (ro, fx) =
        feed(ro, vec![at(installed("c"), 1), at(installed("d"), 1), at(healthy("c"), 1), at(healthy("d"), 50_000)]);
    assert_eq!((ro.phase, ro.finished_ms), (Phase::Succeeded, Some(50_000)));
    assert!(fx.contains(&Effect::Finished(Phase::Succeeded)));

    // Promoting with `full` from the first pause skips the manual one too.
    let (ro, _) = feed(
        canary_rollout(&nodes, steps.clone()),
        vec![at(Input::Start, 0), at(installed("a"), 1), at(healthy("a"), 2)],
    );
    let (ro, fx) = step(ro, Input::Promote { full: true }, 3);
    let installs = fx.iter().filter(|e| matches!(e, Effect::Install { .. })).count();
    assert_eq!((installs, ro.step, ro.hold), (3, 2, None), "b, c and d at once: {fx:?}");

    // A failure during a pause goes back, as many at once as a step moved.
    let (ro, _) = feed(
        canary_rollout(&nodes, steps),
        vec![
            at(Input::Start, 0),
            at(installed("a"), 1),
            at(healthy("a"), 2),
            at(Input::Tick, 40_000),
            at(installed("b"), 3),
            at(healthy("b"), 4),
        ],
    );
    assert_eq!(ro.hold, Some(Hold::Promote));
    let (ro, fx) = step(ro, failed("a"), 5);
    assert_eq!((ro.phase, ro.hold), (Phase::RollingBack, None));
    let backs: Vec<&Effect> = fx.iter().filter(|e| matches!(e, Effect::Rollback { .. })).collect();
    assert_eq!(
        backs,
        [
            &Effect::Rollback { node: "b".into(), to: Some(PREVIOUS.into()) },
            &Effect::Rollback { node: "a".into(), to: Some(PREVIOUS.into()) }
        ],
        "the last updated first, as many at once as the largest step moves (the last moves two)"
    );
    let (ro, _) = feed(ro, vec![at(back("b"), 6), at(back("a"), 7)]);
    assert_eq!(ro.phase, Phase::RolledBack);
    // A promotion when nothing waits changes nothing.
    let (ro2, fx) = step(ro.clone(), Input::Promote { full: false }, 8);
    assert_eq!((ro2, fx), (ro, vec![]));
}

fn blue_green(nodes: &[&str]) -> Rollout {
    let spec = Spec {
        release: RELEASE.into(),
        strategy: Strategy::BlueGreen,
        on_failure: OnFailure::Rollback,
        await_verdict: false,
        waves: Vec::new(),
    };
    let targets = nodes.iter().map(|n| Target { node: n.to_string(), rollback_to: Some(PREVIOUS.into()) }).collect();
    Rollout::new(spec, targets).expect("a valid blue-green")
}

#[test]
fn blue_green_switches_every_node_only_once_every_node_is_healthy() {
    let at = |input: Input| (input, 1);
    let (ro, fx) =
        feed(blue_green(&["a", "b"]), vec![at(Input::Start), at(installed("a")), at(installed("b")), at(healthy("a"))]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Switch { .. })), "not while b's green is unproven: {fx:?}");
    let (ro, fx) = step(ro, healthy("b"), 2);
    let switches: Vec<&Effect> = fx.iter().filter(|e| matches!(e, Effect::Switch { .. })).collect();
    assert_eq!(switches, [&Effect::Switch { node: "a".into() }, &Effect::Switch { node: "b".into() }]);
    let (done, fx) = feed(ro.clone(), vec![at(Input::NodeSwitched { node: "a".into() })]);
    assert_eq!(done.phase, Phase::Progressing, "one switched is not all: {fx:?}");
    let (done, fx) = step(done, Input::NodeSwitched { node: "b".into() }, 3);
    assert_eq!(done.phase, Phase::Succeeded);
    assert!(fx.contains(&Effect::Finished(Phase::Succeeded)));

    // One node failing to switch sends both back at once, the switched one too.
    let (back_ro, fx) = feed(ro, vec![at(Input::NodeSwitched { node: "a".into() }), at(failed("b"))]);
    assert_eq!(back_ro.phase, Phase::RollingBack);
    let backs = fx.iter().filter(|e| matches!(e, Effect::Rollback { .. })).count();
    assert_eq!(backs, 2, "all at once: {fx:?}");

    // A green that never gets healthy: nothing was switched, both go back.
    let (ro, fx) =
        feed(blue_green(&["a", "b"]), vec![at(Input::Start), at(installed("a")), at(healthy("a")), at(failed("b"))]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Switch { .. })), "{fx:?}");
    assert_eq!(ro.nodes.iter().map(|n| n.state).collect::<Vec<_>>(), [RollingBack, RollingBack]);
}

#[test]
fn a_fast_track_rollback_goes_to_the_target_on_every_node_at_once() {
    let targets =
        ["a", "b", "c"].iter().map(|n| Target { node: n.to_string(), rollback_to: Some(RELEASE.into()) }).collect();
    let ro = Rollout::fast_track(PREVIOUS.into(), targets).unwrap();
    let (ro, fx) = step(ro, Input::Start, 0);
    let installs: Vec<&Effect> = fx.iter().filter(|e| matches!(e, Effect::Install { .. })).collect();
    assert_eq!(installs.len(), 3, "every node at once: {fx:?}");
    assert!(installs.iter().all(|e| matches!(e, Effect::Install { release, .. } if release == PREVIOUS)));
    assert_eq!(ro.steps(), 1);
}
