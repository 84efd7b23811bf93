//! A deploy job's rollout, decided before anything moves: whether the
//! environment lets this run deploy, which of its nodes take part and in
//! what order, and the [`drover_deploy::rollout::Rollout`] the rollout
//! controller will drive. Pure: the caller hands in the environment, its
//! nodes as the fleet sees them, and each node's last healthy release.
//!
//! - **Who may deploy.** An environment with `branches` takes runs of those
//!   branches only; a run with no branch (a file submitted as it is) is
//!   refused there.
//! - **Which nodes.** The environment's nodes that are connected and ready,
//!   in name order (so a rerun takes them in the same order). None is a
//!   refusal that says how many are known but away, and what the selector
//!   asks for: a rollout over no node would look like a deploy that worked.
//! - **The spec.** The pipeline's strategy maps one to one onto the rollout
//!   machine's (a timed pause in milliseconds); `auto_rollback: false`
//!   pauses on a failure instead of going back.
//!
//! Approvals are the job's own `approval:` (and the environment's, which
//! the controller adds to it); they are decided before this is called.

use std::collections::BTreeMap;

use drover_deploy::rollout::{self, OnFailure, Rollout, SpecError, Target};
use drover_pipeline::deploy::{CanaryStep, DeploySpec, Pause, Share, Strategy};

use super::environments::{Node, Spec as Environment};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "environment {env} takes deploys from the branches {allowed} only, and this run is {from}; run it from one \
         of them, or add the branch with `drover env apply`"
    )]
    Branch { env: String, allowed: String, from: String },
    #[error(
        "environment {env} has no node to deploy to: no connected, ready agent has the labels {selector}{away}; \
         start an agent whose certificate has them (`drover certs issue-agent --labels ...`), or change the \
         environment's selector"
    )]
    NoNodes { env: String, selector: String, away: String },
    #[error(
        "node(s) {nodes} of environment {env} are in no wave: each node must be in one; add a last wave without a \
         selector (`{{name: rest}}`) to take every node left, or widen a wave's selector"
    )]
    NoWave { env: String, nodes: String },
    #[error(
        "wave {wave} has no connected, ready node of environment {env} with the labels {selector}; start one, or \
         change the wave's selector (`drover agents` shows each agent's labels)"
    )]
    EmptyWave { env: String, wave: String, selector: String },
    #[error("cannot roll out: {0}")]
    Spec(#[from] SpecError),
}

/// The rollout machine's strategy for the pipeline's.
pub fn strategy(strategy: &Strategy) -> rollout::Strategy {
    match strategy {
        Strategy::Rolling(r) => rollout::Strategy::Rolling(rollout::Rolling { max_parallel: r.max_parallel }),
        Strategy::BlueGreen => rollout::Strategy::BlueGreen,
        Strategy::Canary(c) => rollout::Strategy::Canary(rollout::Canary {
            steps: c
                .steps
                .iter()
                .map(|s| match *s {
                    CanaryStep::Nodes(Share::Percent(p)) => rollout::CanaryStep::Nodes(rollout::Share::Percent(p)),
                    CanaryStep::Nodes(Share::Count(n)) => rollout::CanaryStep::Nodes(rollout::Share::Count(n)),
                    CanaryStep::Pause(Pause::Manual) => rollout::CanaryStep::Pause(rollout::Pause::Manual),
                    CanaryStep::Pause(Pause::For(d)) => rollout::CanaryStep::Pause(rollout::Pause::For(
                        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    )),
                })
                .collect(),
        }),
    }
}

/// The rollout of `deploy`'s `release` (the artifact's digest) over `env`,
/// whose nodes are `nodes`, for a run of `branch`. `previous` gives each
/// node's last healthy release of the service, to go back to.
pub fn plan(
    deploy: &DeploySpec,
    release: &str,
    env: &Environment,
    branch: Option<&str>,
    nodes: &[Node],
    previous: &BTreeMap<String, String>,
) -> Result<Rollout, PlanError> {
    plan_across(deploy, release, &[(env, nodes)], branch, previous).map(|planned| planned.rollout)
}

/// A rollout planned over one environment or several, and where each node
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub rollout: Rollout,
    /// The environment of each node not in the first (the deploy's own).
    pub node_envs: BTreeMap<String, String>,
}

/// As [`plan`], over `envs`: the deploy's own environment first, then each
/// other one its waves name, each with its nodes. Every environment must
/// admit `branch`; the deploy's own must have a node; a wave takes the
/// nodes of its environment (the deploy's own when it names none) that no
/// earlier wave took, and every node of every environment must be in one.
pub fn plan_across(
    deploy: &DeploySpec,
    release: &str,
    envs: &[(&Environment, &[Node])],
    branch: Option<&str>,
    previous: &BTreeMap<String, String>,
) -> Result<Planned, PlanError> {
    let (home, _) = *envs.first().expect("the deploy's own environment");
    for (env, _) in envs {
        if !env.admits(branch) {
            return Err(PlanError::Branch {
                env: env.name.clone(),
                allowed: env.branches.join(", "),
                from: branch.map_or_else(|| "from no branch".to_owned(), |b| format!("of branch {b}")),
            });
        }
    }
    let ready: Vec<(&str, Vec<&Node>)> = envs.iter().map(|(env, nodes)| (env.name.as_str(), ready_of(nodes))).collect();
    if ready[0].1.is_empty() {
        let nodes = envs[0].1;
        let away = match nodes.len() {
            0 => String::new(),
            1 => " (one agent has them, but it is not connected and ready)".to_owned(),
            n => format!(" ({n} agents have them, but none is connected and ready)"),
        };
        let selector = home.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        return Err(PlanError::NoNodes { env: home.name.clone(), selector, away });
    }
    let spec = rollout::Spec {
        release: release.to_owned(),
        strategy: strategy(&deploy.strategy),
        // A one-way door freezes where it stands rather than go back.
        on_failure: if deploy.auto_rollback && !deploy.irreversible { OnFailure::Rollback } else { OnFailure::Pause },
        // Each step's gate is judged outside the machine: by its metrics,
        // and held while the environment is frozen (`crate::freezes`).
        await_verdict: true,
        waves: Vec::new(),
    };
    let (ordered, waves) = in_waves(deploy, ready)?;
    let spec = rollout::Spec { waves, ..spec };
    let node_envs = ordered
        .iter()
        .filter(|(env, _)| *env != home.name)
        .map(|(env, n)| (n.name.clone(), (*env).to_owned()))
        .collect();
    let targets = ordered
        .iter()
        .map(|(_, n)| Target { node: n.name.clone(), rollback_to: previous.get(&n.name).cloned() })
        .collect();
    Ok(Planned { rollout: Rollout::new(spec, targets)?, node_envs })
}

/// Nodes in the order they roll out, each with its environment.
type Placed<'n> = Vec<(&'n str, &'n Node)>;

/// The nodes of `nodes` that are connected and ready, in name order.
fn ready_of(nodes: &[Node]) -> Vec<&Node> {
    let mut ready: Vec<&Node> = nodes.iter().filter(|n| n.connected && n.ready()).collect();
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    ready
}

/// The nodes `ready` (of each environment, the deploy's own first) in the
/// order of `deploy`'s waves, each wave's in name order, with their
/// environment, and how many each wave has: a node is in the first wave
/// of its environment whose selector its labels match; a wave with no
/// selector takes every node of its environment left. No waves: the
/// deploy's own environment's, as they are, in one.
fn in_waves<'n>(
    deploy: &'n DeploySpec,
    mut ready: Vec<(&'n str, Vec<&'n Node>)>,
) -> Result<(Placed<'n>, Vec<u32>), PlanError> {
    if deploy.waves.is_empty() {
        let (home, nodes) = ready.swap_remove(0);
        return Ok((nodes.into_iter().map(|n| (home, n)).collect(), Vec::new()));
    }
    let (mut ordered, mut sizes): (Vec<(&str, &Node)>, Vec<u32>) = (Vec::new(), Vec::new());
    let home = ready[0].0;
    for wave in &deploy.waves {
        let env = wave.environment.as_deref().unwrap_or(home);
        // The caller hands in every environment the waves name; one
        // missing has no node.
        let mut none = Vec::new();
        let (env, left) = match ready.iter_mut().find(|(name, _)| *name == env) {
            Some((name, left)) => (*name, left),
            None => (env, &mut none),
        };
        let (taken, rest): (Vec<&Node>, Vec<&Node>) = std::mem::take(left)
            .into_iter()
            .filter(|n| !ordered.iter().any(|(_, o)| o.name == n.name))
            .partition(|n| super::environments::selects(&wave.selector, &n.labels));
        *left = rest;
        if taken.is_empty() {
            let selector = wave.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let selector = if selector.is_empty() { "(any: every node left)".to_owned() } else { selector };
            return Err(PlanError::EmptyWave { env: env.to_owned(), wave: wave.name.clone(), selector });
        }
        sizes.push(u32::try_from(taken.len()).unwrap_or(u32::MAX));
        ordered.extend(taken.into_iter().map(|n| (env, n)));
    }
    // A node that is in two environments counts once.
    for (env, left) in &ready {
        let left: Vec<&str> =
            left.iter().filter(|n| !ordered.iter().any(|(_, o)| o.name == n.name)).map(|n| n.name.as_str()).collect();
        if !left.is_empty() {
            return Err(PlanError::NoWave { env: (*env).to_owned(), nodes: left.join(", ") });
        }
    }
    Ok((ordered, sizes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(strategy: &str, extra: &str) -> DeploySpec {
        let text = format!(
            "name: d\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps: [{{run: make}}]\n  deploy:\n    \
             needs: [build]\n    deploy:\n      environment: staging\n      artifact: build:dist/app.tar.gz\n      \
             service:\n        name: web\n        command: ./app\n        port: 8080\n        health: {{tcp: true, \
             interval: 1s, healthy_after: 2, timeout: 30s}}\n      strategy: {strategy}\n{extra}"
        );
        let pipeline = drover_pipeline::parse("ci.yml", &text).unwrap_or_else(|e| panic!("{e}"));
        pipeline.job("deploy").and_then(|j| j.deploy.clone()).expect("a deploy job")
    }

    fn env(branches: &[&str]) -> Environment {
        Environment {
            name: "staging".into(),
            selector: BTreeMap::from([("role".to_string(), "web".to_string())]),
            require_approval: false,
            approvers: vec![],
            branches: branches.iter().map(|b| b.to_string()).collect(),
            description: String::new(),
            windows: vec![],
            deploy_role: None,
        }
    }

    fn node(name: &str, connected: bool) -> Node {
        Node { name: name.into(), connected, ..Default::default() }
    }

    #[test]
    fn a_rollout_takes_the_ready_nodes_in_order_with_their_way_back() {
        let d = deploy("{canary: {steps: [{nodes: 50%}, {pause: 30s}, {nodes: 100%}]}}", "");
        let nodes = [node("web-3", true), node("web-1", true), node("web-2", false)];
        let previous = BTreeMap::from([("web-1".to_string(), "sha256:old".to_string())]);
        let ro = plan(&d, "sha256:new", &env(&[]), Some("main"), &nodes, &previous).unwrap();
        let order: Vec<(&str, Option<&str>)> =
            ro.nodes.iter().map(|n| (n.name.as_str(), n.rollback_to.as_deref())).collect();
        assert_eq!(order, [("web-1", Some("sha256:old")), ("web-3", None)], "web-2 is away");
        assert_eq!(
            ro.spec.strategy,
            rollout::Strategy::Canary(rollout::Canary {
                steps: vec![
                    rollout::CanaryStep::Nodes(rollout::Share::Percent(50)),
                    rollout::CanaryStep::Pause(rollout::Pause::For(30_000)),
                    rollout::CanaryStep::Nodes(rollout::Share::Percent(100)),
                ]
            })
        );
        assert_eq!((ro.spec.release.as_str(), ro.spec.on_failure), ("sha256:new", OnFailure::Rollback));
        let paused =
            plan(&deploy("{blue_green: {}}", "      auto_rollback: false\n"), "r", &env(&[]), None, &nodes, &previous)
                .unwrap();
        assert_eq!((paused.spec.strategy, paused.spec.on_failure), (rollout::Strategy::BlueGreen, OnFailure::Pause));
    }

    #[test]
    fn a_deploy_the_environment_cannot_take_is_refused_with_why() {
        let d = deploy("{rolling: {max_parallel: 1}}", "");
        let none = BTreeMap::new();
        // (case, environment, branch, nodes, what the error says)
        type Case = (&'static str, Environment, Option<&'static str>, Vec<Node>, &'static str);
        let cases: Vec<Case> = vec![
            ("no node at all", env(&[]), Some("main"), vec![], "no connected, ready agent has the labels role=web;"),
            (
                "its nodes are away",
                env(&[]),
                Some("main"),
                vec![node("a", false), node("b", false)],
                "(2 agents have them, but none is connected and ready)",
            ),
            (
                "a branch it does not take",
                env(&["main", "release/*"]),
                Some("dev"),
                vec![node("a", true)],
                "of branch dev",
            ),
            ("no branch at all", env(&["main"]), None, vec![node("a", true)], "this run is from no branch"),
        ];
        for (case, e, branch, nodes, want) in cases {
            let err = plan(&d, "r", &e, branch, &nodes, &none).unwrap_err();
            assert!(err.to_string().contains(want), "{case}: {err}");
        }
        let ok = plan(&d, "r", &env(&["release/*"]), Some("release/2"), &[node("a", true)], &none);
        assert!(ok.is_ok(), "a branch its globs take");
    }

    #[test]
    fn waves_order_the_nodes_by_their_labels_or_refuse_with_why() {
        let waves = "      waves:\n        - {name: canary, selector: {group: canary}}\n        - {name: eu, selector: \
                     {region: eu}}\n        - {name: rest}\n";
        let d = deploy("{rolling: {max_parallel: 1}}", waves);
        let labelled = |name: &str, labels: &[(&str, &str)]| Node {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..node(name, true)
        };
        let nodes = [
            labelled("a", &[("region", "us")]),
            labelled("b", &[("region", "eu")]),
            labelled("c", &[("region", "eu"), ("group", "canary")]),
            labelled("d", &[("region", "eu")]),
        ];
        let none = BTreeMap::new();
        let ro = plan(&d, "r", &env(&[]), None, &nodes, &none).unwrap();
        let order: Vec<&str> = ro.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(order, ["c", "b", "d", "a"], "the canary first, then eu, then the rest");
        assert_eq!(ro.spec.waves, [1, 2, 1]);
        assert_eq!(ro.node_waves(), [0, 1, 1, 2]);
        assert_eq!((ro.steps(), ro.wave_of(0), ro.wave_of(2), ro.wave_of(3)), (4, 0, 1, 2));

        let no_rest = deploy(
            "{rolling: {max_parallel: 1}}",
            "      waves:\n        - {name: canary, selector: {group: canary}}\n        - {name: eu, selector: \
             {region: eu}}\n",
        );
        let err = plan(&no_rest, "r", &env(&[]), None, &nodes, &none).unwrap_err().to_string();
        assert!(err.contains("node(s) a of environment staging are in no wave"), "{err}");
        let err = plan(&d, "r", &env(&[]), None, &nodes[..2], &none).unwrap_err().to_string();
        assert!(
            err.contains(
                "wave canary has no connected, ready node of environment staging with the labels group=canary"
            ),
            "{err}"
        );
    }

    #[test]
    fn waves_across_environments_take_each_environments_nodes() {
        let waves = "      waves:\n        - {name: canary, selector: {group: canary}}\n        - {name: eu, environment: \
                     prod-eu}\n        - {name: rest}\n";
        let d = deploy("{rolling: {max_parallel: 1}}", waves);
        let labelled = |name: &str, labels: &[(&str, &str)]| Node {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..node(name, true)
        };
        let staging = env(&[]);
        let eu = Environment { name: "prod-eu".into(), ..env(&[]) };
        let home = [labelled("s1", &[("group", "canary")]), labelled("s2", &[])];
        // e1 is in both environments: the eu wave takes it, once.
        let away = node("e3", false);
        let euro = [labelled("e2", &[]), labelled("e1", &[]), away];
        let previous = BTreeMap::from([("e1".to_string(), "old".to_string())]);
        let over = |eu_nodes: &[Node]| -> Vec<(Environment, Vec<Node>)> {
            vec![(staging.clone(), home.to_vec()), (eu.clone(), eu_nodes.to_vec())]
        };
        let run = |over: &[(Environment, Vec<Node>)], branch: Option<&str>| {
            let refs: Vec<(&Environment, &[Node])> = over.iter().map(|(e, n)| (e, n.as_slice())).collect();
            plan_across(&d, "r", &refs, branch, &previous)
        };
        let p = run(&over(&euro), None).unwrap();
        let order: Vec<(&str, Option<&str>)> =
            p.rollout.nodes.iter().map(|n| (n.name.as_str(), n.rollback_to.as_deref())).collect();
        assert_eq!(order, [("s1", None), ("e1", Some("old")), ("e2", None), ("s2", None)]);
        assert_eq!(p.rollout.spec.waves, [1, 2, 1]);
        let envs =
            BTreeMap::from([("e1".to_string(), "prod-eu".to_string()), ("e2".to_string(), "prod-eu".to_string())]);
        assert_eq!(p.node_envs, envs, "a node of the deploy's own environment is not listed");

        // (case, the eu environment's nodes, its branch filter, the branch, what the refusal says)
        let shared = [labelled("s2", &[])];
        type Case<'a> = (&'a str, &'a [Node], &'a [&'a str], Option<&'a str>, &'a str);
        let cases: [Case<'_>; 3] = [
            ("no eu node", &[], &[], None, "wave eu has no connected, ready node of environment prod-eu"),
            ("a branch eu does not take", &euro, &["main"], Some("dev"), "environment prod-eu takes deploys from"),
            (
                "the shared node taken by eu leaves rest empty",
                &shared,
                &[],
                None,
                "wave rest has no connected, ready node of environment staging",
            ),
        ];
        for (case, eu_nodes, branches, branch, want) in cases {
            let mut over = over(eu_nodes);
            over[1].0.branches = branches.iter().map(|b| b.to_string()).collect();
            let err = run(&over, branch).unwrap_err().to_string();
            assert!(err.contains(want), "{case}: {err}");
        }
    }
}
