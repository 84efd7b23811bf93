//! What an agent that was SIGKILLed left behind is cleaned up when it starts
//! again.

use std::time::Duration;

use crate::harness::{AgentSpec, Fleet, process_alive, step_watcher, wait_for};

#[test]
fn an_agent_killed_mid_job_kills_its_leftovers_when_it_starts_again() {
    let mut fleet = Fleet::start("leftovers");
    let first = fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let pid_file = fleet.dir.path().join("daemon.pid");
    let yaml = format!(
        "name: leftovers\njobs:\n  daemon:\n    steps:\n      - run: |\n          sleep 1000 &\n          echo $! > {}\n          sleep 1000\n",
        pid_file.display()
    );
    fleet.submit("leftovers.yml", &yaml);
    let pid: i32 = wait_for("the step to start its daemon", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let work = fleet.dir.path().join("work").join("a1");
    let workspaces = || {
        std::fs::read_dir(&work)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // The lock, and the agent's own copy of caches (.caches).
            .filter(|name| !name.starts_with('.'))
            .collect::<Vec<_>>()
    };
    assert_eq!(workspaces().len(), 1, "the attempt's workspace: {:?}", workspaces());

    // The step watcher kills a dead agent's steps (see isolation.rs); with
    // the watcher gone too, the next agent on the work dir is the fallback.
    let watcher = step_watcher(&fleet.agents[first]).expect("the agent has a step watcher");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(watcher, libc::SIGKILL) };
    wait_for("the watcher to be gone", Duration::from_secs(5), || (!process_alive(watcher)).then_some(()));
    fleet.agents[first].kill();
    assert!(process_alive(pid), "with its watcher gone, a SIGKILLed agent's daemon {pid} runs on");

    // The same name, so the same work dir.
    let again = fleet.agent("a1", "", 1);
    wait_for("the restarted agent to kill the daemon", Duration::from_secs(15), || (!process_alive(pid)).then_some(()));
    wait_for("the leftover workspace to be removed", Duration::from_secs(5), || workspaces().is_empty().then_some(()));
    // Logged once the daemon is gone, so it may come a moment later.
    let warning = wait_for("the agent to say what it killed", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&fleet.agents[again].log).unwrap();
        log.lines().find(|l| l.contains("killed processes that an earlier agent")).map(str::to_string)
    });
    assert!(warning.contains(&pid.to_string()), "{warning}");
    fleet.wait_agents(1);
}

#[test]
fn a_second_agent_on_the_same_work_dir_is_refused() {
    let mut fleet = Fleet::start("workdirlock");
    let first = fleet.agent("first", "", 1);
    // A connected agent has taken its work dir.
    fleet.wait_agents(1);
    let work = fleet.dir.path().join("work").join("first");
    let (second, _) = fleet.start_agent("second", AgentSpec { work_dir: Some(&work), ..AgentSpec::default() });
    let status = wait_for("the second agent to exit", Duration::from_secs(15), || {
        fleet.agents[second].child.try_wait().expect("wait for the second agent")
    });
    assert!(!status.success(), "{status}: {}", fleet.agents[second].log_tail());
    let log = std::fs::read_to_string(&fleet.agents[second].log).unwrap();
    let holder = fleet.agents[first].child.id();
    let expected = format!(
        "work dir {} is in use by another drover-agent (pid {holder}); give each agent its own --work-dir",
        work.canonicalize().unwrap().display()
    );
    assert!(log.contains(&expected), "expected {expected:?} in:\n{log}");
    // The first agent carries on.
    assert!(fleet.agents[first].child.try_wait().unwrap().is_none(), "{}", fleet.agents[first].log_tail());
}
