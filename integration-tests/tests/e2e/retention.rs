//! Finished runs are pruned by age and count, and etcd's history is
//! compacted, so a long-lived coordinator does not grow without end.

use std::time::Duration;

use crate::harness::{Etcd, Fleet, text, wait_for};

/// The run ids `drover runs` lists.
fn listed(fleet: &Fleet) -> Vec<String> {
    let out = fleet.drover(&["runs"]);
    assert!(out.status.success(), "drover runs: {}", text(&out.stderr));
    text(&out.stdout).lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
}

const QUICK: &str = "name: quick\njobs:\n  a:\n    steps:\n      - run: echo hello from $DROVER_RUN_ID\n";

#[test]
fn finished_runs_beyond_the_count_are_pruned_with_their_logs_and_running_ones_stay() {
    let mut fleet = Fleet::start_with("keep-count", &["--keep-runs", "2", "--prune-interval", "200ms"]);
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let (gate, done) = (fleet.dir.path().join("gate"), fleet.dir.path().join("done"));
    let slow = fleet.submit(
        "slow.yml",
        &format!(
            "name: slow\njobs:\n  wait:\n    steps:\n      - run: while [ ! -e {} ]; do sleep 0.1; done; touch {}\n",
            gate.display(),
            done.display()
        ),
    );
    let mut quick = Vec::new();
    for i in 0..3 {
        let run = fleet.submit(&format!("quick{i}.yml"), QUICK);
        assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
        quick.push(run);
    }
    // The oldest finished run goes; the running one (older still) stays.
    let want = vec![quick[2].clone(), quick[1].clone(), slow.clone()];
    wait_for("the oldest finished run to be pruned", Duration::from_secs(15), || {
        (listed(&fleet) == want).then_some(())
    });
    let out = fleet.drover(&["status", &quick[0]]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("run {} no longer exists: finished runs are pruned", quick[0])),
        "{}",
        text(&out.stderr)
    );
    let out = fleet.drover(&["logs", &quick[0], "a"]);
    assert!(!out.status.success(), "logs of a pruned run: {}", text(&out.stdout));
    // The runs kept still have their logs.
    let out = fleet.drover(&["logs", &quick[2], "a"]);
    assert!(text(&out.stdout).contains(&format!("hello from {}", quick[2])), "{}", text(&out.stdout));

    // Once the slow run finishes it counts too, and as the oldest finished
    // run it goes at once (maybe before anyone sees its final state): only
    // the newest two remain.
    std::fs::write(&gate, "").unwrap();
    wait_for("the slow job to finish", Duration::from_secs(30), || done.exists().then_some(()));
    let want = vec![quick[2].clone(), quick[1].clone()];
    wait_for("the finished slow run to be pruned", Duration::from_secs(15), || (listed(&fleet) == want).then_some(()));
    // New runs still get new numbers, never a pruned one's.
    let next = fleet.submit("next.yml", QUICK);
    assert!(next.parse::<u64>().unwrap() > quick[2].parse::<u64>().unwrap());
}

#[test]
fn finished_runs_older_than_the_retention_are_pruned() {
    let mut fleet = Fleet::start_with("keep-for", &["--keep-runs-for", "5s", "--prune-interval", "200ms"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit("quick.yml", QUICK);
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    assert_eq!(listed(&fleet), vec![run.clone()], "kept while younger than the retention");
    wait_for("the run to age out", Duration::from_secs(15), || listed(&fleet).is_empty().then_some(()));
}

#[test]
fn the_leader_compacts_etcd_and_runs_carry_on() {
    let etcd = Etcd::start("compaction", 1);
    let mut fleet = Fleet::start_ha_with(
        "compaction",
        &etcd,
        1,
        &["--etcd-compaction-interval", "1s", "--prune-interval", "200ms"],
    );
    fleet.wait_leader();
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let first = fleet.submit("quick.yml", QUICK);
    assert_eq!(fleet.wait_run(&first, Duration::from_secs(30))["state"], "succeeded");
    let seen = etcd.revision();
    wait_for("etcd's history to be compacted past the run", Duration::from_secs(15), || {
        etcd.is_compacted(seen - 1).then_some(())
    });
    // Everything the leader and its watchers read still works afterwards.
    let second = fleet.submit("quick.yml", QUICK);
    assert_eq!(fleet.wait_run(&second, Duration::from_secs(30))["state"], "succeeded");
    let out = fleet.drover(&["logs", &first, "a"]);
    assert!(text(&out.stdout).contains(&format!("hello from {first}")), "{}", text(&out.stdout));
}
