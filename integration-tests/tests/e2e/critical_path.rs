//! Critical-path-first dispatch on real agents: when ready jobs outnumber
//! free slots, the head of a long chain goes before short side jobs that
//! were queued earlier; `--dispatch fifo` keeps the queue's order.

use std::time::Duration;

use crate::harness::Fleet;

/// Six short side jobs listed first, then a chain of three.
fn pipeline(out: &std::path::Path) -> String {
    let step = |name: &str| format!("[{{run: 'date +%s%N > {}/{name}; sleep 0.3'}}]", out.display());
    let mut yaml = String::from("name: dag\njobs:\n");
    for i in 1..=6 {
        yaml.push_str(&format!("  side{i}: {{steps: {}}}\n", step(&format!("side{i}"))));
    }
    yaml.push_str(&format!("  chain1: {{steps: {}}}\n", step("chain1")));
    yaml.push_str(&format!("  chain2: {{needs: [chain1], steps: {}}}\n", step("chain2")));
    yaml.push_str(&format!("  chain3: {{needs: [chain2], steps: {}}}\n", step("chain3")));
    yaml
}

/// How many side jobs started before the chain's head, on a fleet started
/// with `flags`.
fn sides_before_the_chain(tag: &str, flags: &[&str]) -> usize {
    let mut fleet = Fleet::start_with(tag, flags);
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let run = fleet.submit("dag.yml", &pipeline(&out));
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded");
    let stamp = |name: &str| -> u128 { std::fs::read_to_string(out.join(name)).unwrap().trim().parse().unwrap() };
    let head = stamp("chain1");
    (1..=6).filter(|i| stamp(&format!("side{i}")) < head).count()
}

#[test]
fn the_head_of_the_longest_chain_goes_first_unless_fifo() {
    assert!(sides_before_the_chain("cp", &[]) <= 1, "critical path: the chain starts in the first pair");
    assert!(sides_before_the_chain("fifo", &["--dispatch", "fifo"]) >= 4, "fifo: the side jobs listed first go first");
}
