//! Scheduling on a real fleet: DAG order, parallelism, label routing,
//! failure, retries, lost agents, cancel, timeout, big logs and a
//! coordinator restart.

use std::path::Path;
use std::time::Duration;

use crate::harness::{AgentSpec, Fleet, http_get, lines, process_alive, text, wait_for};

fn marker(fleet: &Fleet) -> String {
    fleet.dir.path().join("marks").to_string_lossy().into_owned()
}

fn millis(line: &str, field: usize) -> u64 {
    line.split_whitespace().nth(field).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad mark {line:?}"))
}

#[test]
fn dag_order_and_parallelism_across_two_agents() {
    let mut fleet = Fleet::start("dag");
    fleet.agent("a1", "os=linux", 1);
    fleet.agent("a2", "os=linux", 1);
    fleet.wait_agents(2);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    // Each job records: name agent start_ms end_ms.
    let job = |name: &str, needs: &str| {
        format!(
            "  {name}:\n{needs}    steps:\n      - run: |\n          s=$(date +%s%3N); sleep 1; e=$(date +%s%3N)\n          echo \"{name} $DROVER_AGENT $s $e\" >> {marks}/log\n"
        )
    };
    let yaml = format!(
        "name: dag\njobs:\n{}{}{}",
        job("left", ""),
        job("right", ""),
        job("join", "    needs: [left, right]\n")
    );
    let run = fleet.submit("dag.yml", &yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let log = lines(&Path::new(&marks).join("log"));
    assert_eq!(log.len(), 3, "{log:?}");
    let find = |name: &str| log.iter().find(|l| l.starts_with(&format!("{name} "))).cloned().unwrap();
    let (left, right, join) = (find("left"), find("right"), find("join"));
    let agent = |l: &str| l.split_whitespace().nth(1).unwrap().to_string();
    assert_ne!(agent(&left), agent(&right), "parallel jobs should spread over both agents: {log:?}");
    // left and right overlap in time.
    assert!(millis(&left, 2) < millis(&right, 3) && millis(&right, 2) < millis(&left, 3), "no overlap: {log:?}");
    // join starts after both ended.
    assert!(millis(&join, 2) >= millis(&left, 3) && millis(&join, 2) >= millis(&right, 3), "order: {log:?}");
}

#[test]
fn label_routing_and_waiting_for_a_matching_agent() {
    let mut fleet = Fleet::start("labels");
    fleet.agent("linux1", "os=linux", 2);
    fleet.wait_agents(1);
    let yaml = "name: labels\njobs:\n  on-linux:\n    runs-on: {os: linux}\n    steps:\n      - run: echo $DROVER_AGENT\n  on-mac:\n    runs-on: {os: mac, arch: arm64}\n    steps:\n      - run: echo $DROVER_AGENT\n";
    let run = fleet.submit("labels.yml", yaml);
    // The mac job waits and says what for.
    let waiting = wait_for("on-mac to report what it waits for", Duration::from_secs(20), || {
        let job = fleet.job(&run, "on-mac");
        let w = job["waiting_for"].as_str().unwrap_or_default().to_string();
        (job["state"] == "queued" && !w.is_empty()).then_some(w)
    });
    assert!(waiting.contains("arch=arm64,os=mac") && waiting.contains("no connected agent matches"), "{waiting}");
    let out = fleet.drover(&["status", &run]);
    assert!(text(&out.stdout).contains("waiting for an agent with labels arch=arm64,os=mac"), "{}", text(&out.stdout));
    assert_eq!(fleet.job(&run, "on-linux")["agent"], "linux1");
    fleet.agent("mac1", "os=mac,arch=arm64", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(fleet.job(&run, "on-mac")["agent"], "mac1");
    assert_eq!(fleet.job(&run, "on-linux")["agent"], "linux1");
}

#[test]
fn failure_skips_dependents_and_independent_jobs_finish() {
    let mut fleet = Fleet::start("fail");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let path = fleet.dir.path().join("fail.yml");
    std::fs::write(
        &path,
        "name: fail\njobs:\n  broken:\n    steps:\n      - run: echo about to fail; exit 3\n      - run: echo never\n  after:\n    needs: [broken]\n    steps:\n      - run: echo never\n  later:\n    needs: [after]\n    steps:\n      - run: echo never\n  independent:\n    steps:\n      - run: sleep 0.5; echo fine\n",
    )
    .unwrap();
    let out = fleet.drover(&["run", "--follow", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1: {stdout}{}", text(&out.stderr));
    assert!(stdout.contains("broken | about to fail"), "logs are prefixed by job: {stdout}");
    assert!(stdout.contains("[broken] failed"), "{stdout}");
    assert!(!stdout.contains("never"), "{stdout}");
    let run = stdout.split_whitespace().nth(1).unwrap().to_string();
    let status = fleet.status(&run);
    assert_eq!(status["state"], "failed");
    let job = |name: &str| fleet.job(&run, name);
    assert_eq!(job("broken")["state"], "failed");
    assert_eq!(job("broken")["exit_code"], 3);
    assert_eq!(job("after")["state"], "skipped");
    assert_eq!(job("later")["state"], "skipped");
    assert_eq!(job("independent")["state"], "succeeded");
}

#[test]
fn a_failed_attempt_is_retried() {
    let mut fleet = Fleet::start("retry");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    let yaml = format!(
        "name: retry\njobs:\n  flaky:\n    retries: 1\n    steps:\n      - run: |\n          mkdir -p {marks}\n          echo \"attempt $DROVER_ATTEMPT\" >> {marks}/attempts\n          if [ \"$DROVER_ATTEMPT\" = 1 ]; then exit 1; fi\n"
    );
    let run = fleet.submit("retry.yml", &yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(lines(&Path::new(&marks).join("attempts")), vec!["attempt 1", "attempt 2"]);
    assert_eq!(fleet.job(&run, "flaky")["attempt"], 2);
}

#[test]
fn an_agent_killed_mid_job_loses_the_attempt_and_it_runs_again_elsewhere() {
    let mut fleet = Fleet::start("lost");
    let first = fleet.agent("doomed", "", 1);
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = format!(
        "name: lost\njobs:\n  long:\n    retries: 1\n    steps:\n      - run: |\n          echo \"start $DROVER_AGENT $DROVER_ATTEMPT\" >> {marks}/log\n          if [ \"$DROVER_AGENT\" = doomed ]; then sleep 20; fi\n          echo \"done $DROVER_AGENT $DROVER_ATTEMPT\" >> {marks}/log\n"
    );
    let run = fleet.submit("lost.yml", &yaml);
    wait_for("the job to start on doomed", Duration::from_secs(20), || {
        lines(&Path::new(&marks).join("log")).iter().any(|l| l == "start doomed 1").then_some(())
    });
    fleet.agents[first].kill();
    fleet.agent("survivor", "", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(40));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    let job = fleet.job(&run, "long");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["agent"], "survivor", "{job}");
    let log = lines(&Path::new(&marks).join("log"));
    assert!(log.contains(&"done survivor 2".to_string()), "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("done")).count(), 1, "reported once: {log:?}");
    // The lost attempt gave back the dead agent's slot.
    wait_for("doomed to show as departed with 0/1 slots in use", Duration::from_secs(10), || {
        let out = text(&fleet.drover(&["agents"]).stdout);
        let row = out.lines().find(|l| l.split_whitespace().next() == Some("doomed"))?.to_string();
        (row.split_whitespace().any(|w| w == "0/1") && row.contains(" ago")).then_some(())
    });
}

#[test]
fn cancel_kills_the_step_and_its_children() {
    let mut fleet = Fleet::start("cancel");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = format!(
        "name: cancel\njobs:\n  forever:\n    steps:\n      - run: |\n          sleep 1000 &\n          echo $! > {marks}/child.pid\n          wait\n  after:\n    needs: [forever]\n    steps:\n      - run: echo never\n"
    );
    let run = fleet.submit("cancel.yml", &yaml);
    let pid: i32 = wait_for("the step to start its child", Duration::from_secs(20), || {
        std::fs::read_to_string(Path::new(&marks).join("child.pid")).ok().and_then(|s| s.trim().parse().ok())
    });
    assert!(process_alive(pid));
    let out = fleet.drover(&["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("run {run} cancelling"));
    let status = fleet.wait_run(&run, Duration::from_secs(20));
    assert_eq!(status["state"], "cancelled", "{status:#}");
    // Cancelling a finished run says so, and is no error.
    let out = fleet.drover(&["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("run {run} already finished (cancelled); nothing to cancel"));
    assert_eq!(fleet.job(&run, "forever")["state"], "cancelled");
    assert_eq!(fleet.job(&run, "after")["state"], "cancelled");
    wait_for("the background sleep to be gone", Duration::from_secs(10), || (!process_alive(pid)).then_some(()));
}

#[test]
fn a_job_past_its_timeout_is_killed_and_fails() {
    let mut fleet = Fleet::start("timeout");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = format!(
        "name: timeout\njobs:\n  slow:\n    timeout: 2s\n    steps:\n      - run: |\n          sleep 300 &\n          echo $! > {marks}/child.pid\n          sleep 300\n"
    );
    let started = std::time::Instant::now();
    let run = fleet.submit("timeout.yml", &yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "failed", "{status:#}");
    let job = fleet.job(&run, "slow");
    assert!(job["message"].as_str().unwrap().contains("timed out after 2s"), "{job}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let pid: i32 = std::fs::read_to_string(Path::new(&marks).join("child.pid")).unwrap().trim().parse().unwrap();
    wait_for("the timed-out step's child to be gone", Duration::from_secs(10), || (!process_alive(pid)).then_some(()));
}

#[test]
fn a_log_of_100000_lines_arrives_complete_and_in_order() {
    let mut fleet = Fleet::start("biglog");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let yaml = "name: biglog\njobs:\n  print:\n    steps:\n      - run: seq 1 100000\n      - run: head -c 300000 /dev/zero | tr '\\0' x\n";
    let run = fleet.submit("biglog.yml", yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let out = fleet.drover(&["logs", &run, "print"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stdout);
    let numbers: Vec<&str> = log.lines().filter(|l| !l.starts_with("==>") && !l.starts_with('x')).collect();
    assert_eq!(numbers.len(), 100_000);
    for (i, line) in numbers.iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string(), "line {i}");
    }
    // A 300,000-byte line without a newline arrives whole.
    let long = log.lines().find(|l| l.starts_with('x')).unwrap_or_default();
    assert_eq!(long.len(), 300_000);

    // A reader that stops early (`| head`) ends the CLI quietly, as it
    // would any Unix tool: SIGPIPE's status, no panic, no error message.
    let drover = crate::harness::bin("drover");
    for args in [format!("logs {run} print"), format!("status {run}")] {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {} {args} | head -n 1 >/dev/null", drover.display())])
            .env("DROVER_COORDINATOR", fleet.url())
            .env("DROVER_TLS_DIR", &fleet.tls)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(stderr.is_empty(), "drover {args} | head: {stderr}");
        // `status` may fit in the pipe before head exits: 0 is fine then.
        assert!([Some(0), Some(141)].contains(&out.status.code()), "drover {args} | head: {:?}", out.status);
        if args.starts_with("logs") {
            assert_eq!(out.status.code(), Some(141), "a 100,000-line log cannot fit in a pipe");
        }
    }
}

#[test]
fn a_log_over_its_cap_is_truncated_with_a_marker_and_the_job_still_succeeds() {
    let mut fleet = Fleet::start_with("logcap", &["--log-cap", "64K"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit("cap.yml", "name: cap\njobs:\n  loud:\n    steps:\n      - run: seq 1 100000\n");
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let out = fleet.drover(&["logs", &run, "loud"]);
    let log = text(&out.stdout);
    assert!(log.contains("[drover: log truncated at 65536 bytes"), "{}", &log[log.len().saturating_sub(200)..]);
    assert!(log.len() < 65536 + 200, "{}", log.len());
}

#[test]
fn a_coordinator_restarted_mid_run_loses_nothing() {
    let mut fleet = Fleet::start("restart");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = format!(
        "name: restart\njobs:\n  first:\n    steps:\n      - run: |\n          echo \"start $DROVER_ATTEMPT\" >> {marks}/first\n          for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\n          echo \"done $DROVER_ATTEMPT\" >> {marks}/first\n  second:\n    needs: [first]\n    steps:\n      - run: echo second ran >> {marks}/second\n"
    );
    let run = fleet.submit("restart.yml", &yaml);
    wait_for("first to start", Duration::from_secs(20), || {
        (!lines(&Path::new(&marks).join("first")).is_empty()).then_some(())
    });
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    fleet.start_coordinator(0, &addr);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(lines(&Path::new(&marks).join("first")), vec!["start 1", "done 1"], "first ran once");
    assert_eq!(lines(&Path::new(&marks).join("second")), vec!["second ran"]);
    let out = fleet.drover(&["logs", &run, "first"]);
    let log = text(&out.stdout);
    for i in 1..=6 {
        assert_eq!(log.matches(&format!("tick {i}\n")).count(), 1, "tick {i} once in the log: {log}");
    }
}

#[test]
fn step_environment_and_live_follow() {
    let mut fleet = Fleet::start("env");
    fleet.agent("envagent", "", 1);
    fleet.wait_agents(1);
    let path = fleet.dir.path().join("env.yml");
    std::fs::write(
        &path,
        "name: env\nenv: {GREETING: hello, MODE: debug}\njobs:\n  show:\n    env: {MODE: release}\n    steps:\n      - run: echo \"$DROVER_RUN_ID|$DROVER_JOB|$DROVER_ATTEMPT|$DROVER_AGENT|$GREETING|$MODE\"; test \"$PWD\" = \"$DROVER_WORKSPACE\"\n",
    )
    .unwrap();
    let out = fleet.drover(&["run", "--follow", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let run = stdout.split_whitespace().nth(1).unwrap();
    assert!(stdout.contains(&format!("show | {run}|show|1|envagent|hello|release")), "{stdout}");
    assert!(stdout.contains("[show] running on envagent (attempt 1)"), "{stdout}");
    assert!(stdout.contains("[show] succeeded"), "{stdout}");
    assert!(stdout.contains(&format!("run {run} succeeded")), "{stdout}");
}

#[test]
fn a_partitioned_agent_loses_its_attempt_and_kills_it_when_it_hears_back() {
    let mut fleet = Fleet::start("partition");
    let extra = ["--metrics-listen", "127.0.0.1:0"];
    let (paused, metrics) = fleet.start_agent("paused", AgentSpec { extra: &extra, ..AgentSpec::default() });
    let metrics = metrics.expect("the agent printed its metrics address");
    fleet.wait_agents(1);
    let marks = marker(&fleet);
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = format!(
        "name: partition\njobs:\n  work:\n    retries: 1\n    steps:\n      - run: |\n          echo \"start $DROVER_AGENT $DROVER_ATTEMPT\" >> {marks}/log\n          if [ \"$DROVER_AGENT\" = paused ]; then sleep 30 & echo $! > {marks}/pid; wait; fi\n          echo \"done $DROVER_AGENT $DROVER_ATTEMPT\" >> {marks}/log\n"
    );
    let run = fleet.submit("partition.yml", &yaml);
    let pid: i32 = wait_for("the step to start on paused", Duration::from_secs(20), || {
        std::fs::read_to_string(Path::new(&marks).join("pid")).ok().and_then(|s| s.trim().parse().ok())
    });
    // The agent stops renewing its lease, but its step keeps running.
    fleet.agents[paused].signal(libc::SIGSTOP);
    fleet.agent("other", "", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(40));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    let job = fleet.job(&run, "work");
    assert_eq!((job["attempt"].as_u64(), job["agent"].as_str()), (Some(2), Some("other")), "{job}");
    assert!(process_alive(pid), "the partitioned agent's step still runs");
    // When the agent hears back, it kills the attempt it no longer owns.
    fleet.agents[paused].signal(libc::SIGCONT);
    wait_for("the stale attempt to be killed", Duration::from_secs(20), || (!process_alive(pid)).then_some(()));
    let log = lines(&Path::new(&marks).join("log"));
    assert_eq!(log, vec!["start paused 1", "start other 2", "done other 2"], "{log:?}");
    // The agent is back and settled: it holds nothing any more (the gauge
    // still said 1 when it was stopped), and the coordinator lists it as
    // connected with its slot free.
    wait_for("paused to be connected again and hold no attempt", Duration::from_secs(20), || {
        let (_, body) = http_get(&metrics, "/metrics")?;
        let sample =
            |name: &str| body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
        (sample("drover_agent_attempts_running") == Some(0.0) && sample("drover_agent_connected") == Some(1.0))
            .then_some(())
    });
    wait_for("`drover agents` to show paused as connected with 0/1 slots in use", Duration::from_secs(10), || {
        let out = text(&fleet.drover(&["agents"]).stdout);
        let row = out.lines().find(|l| l.split_whitespace().next() == Some("paused"))?.to_string();
        let words: Vec<&str> = row.split_whitespace().collect();
        (words.contains(&"0/1") && words.contains(&"connected")).then_some(())
    });
    // What it said on its way back (the stale attempt in its heartbeats)
    // changed nothing.
    let job = fleet.job(&run, "work");
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(2)), "{job}");
}

#[test]
fn logs_follow_streams_a_running_job_until_it_ends() {
    let mut fleet = Fleet::start("logsfollow");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "slow.yml",
        "name: slow\njobs:\n  talk:\n    steps:\n      - run: for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done\n",
    );
    wait_for("the job to run", Duration::from_secs(20), || {
        (fleet.job(&run, "talk")["state"] == "running").then_some(())
    });
    let out = fleet.drover(&["logs", &run, "talk", "--follow"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stdout);
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("line")).collect();
    assert_eq!(lines, vec!["line 1", "line 2", "line 3", "line 4", "line 5"], "{log}");
    assert_eq!(fleet.job(&run, "talk")["state"], "succeeded");
    // A missing job is an error that names the jobs there are.
    let out = fleet.drover(&["logs", &run, "nope"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("its jobs are: talk"), "{}", text(&out.stderr));
}

#[test]
fn agents_lists_connected_and_departed_agents_across_a_restart() {
    let mut fleet = Fleet::start("agents");
    fleet.agent("stays", "os=linux,arch=arm64", 3);
    let leaving = fleet.agent("leaves", "os=linux", 1);
    fleet.wait_agents(2);
    fleet.agents[leaving].kill();
    let row = |out: &str, name: &str| out.lines().find(|l| l.starts_with(name)).map(str::to_string);
    wait_for("the departed agent to show as not connected", Duration::from_secs(20), || {
        let out = text(&fleet.drover(&["agents"]).stdout);
        row(&out, "leaves").filter(|l| l.contains(" ago")).map(|_| ())
    });
    // A new coordinator process still knows both, from the store.
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    fleet.start_coordinator(0, &addr);
    fleet.wait_agents(1);
    let out = text(&fleet.drover(&["agents"]).stdout);
    let stays = row(&out, "stays").unwrap_or_else(|| panic!("{out}"));
    assert!(stays.contains("arch=arm64,os=linux") && stays.contains("0/3") && stays.contains("connected"), "{out}");
    let leaves = row(&out, "leaves").unwrap_or_else(|| panic!("{out}"));
    assert!(leaves.contains("0/1") && leaves.contains(" ago"), "{out}");
}

#[test]
fn a_draining_agent_finishes_its_job_takes_no_new_work_and_exits() {
    let mut fleet = Fleet::start("drain");
    let a1 = fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let dir = fleet.dir.path().to_path_buf();
    let (gate, marks) = (dir.join("gate"), dir.join("marks"));
    let long = fleet.submit(
        "long.yml",
        &format!(
            "name: long\njobs:\n  long:\n    steps:\n      - run: |\n          echo started >> {m}\n          while [ ! -e {g} ]; do sleep 0.1; done\n          echo finished on $DROVER_AGENT >> {m}\n",
            m = marks.display(),
            g = gate.display()
        ),
    );
    wait_for("long to start", Duration::from_secs(20), || (!lines(&marks).is_empty()).then_some(()));

    // SIGTERM: the agent drains. It says so, and gets no new work although
    // it has a free slot.
    fleet.agents[a1].signal(libc::SIGTERM);
    fleet.wait_draining("a1");
    let next = fleet.submit("next.yml", "name: next\njobs:\n  next:\n    steps:\n      - run: echo next ran\n");
    let waiting = wait_for("next to say what it waits for", Duration::from_secs(10), || {
        let w = fleet.job(&next, "next")["waiting_for"].as_str().unwrap_or_default().to_string();
        w.contains("draining").then_some(w)
    });
    assert!(waiting.contains("the matching agents are draining: a1"), "{waiting}");

    // The running job finishes on its first attempt and is reported; then
    // the agent exits on its own, successfully.
    std::fs::write(&gate, "").unwrap();
    let status = fleet.wait_run(&long, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(fleet.job(&long, "long")["attempt"], 1);
    assert_eq!(lines(&marks), vec!["started", "finished on a1"]);
    let exit =
        wait_for("the drained agent to exit", Duration::from_secs(20), || fleet.agents[a1].child.try_wait().unwrap());
    assert!(exit.success(), "{exit}\n{}", fleet.agents[a1].log_tail());
    assert_eq!(fleet.job(&next, "next")["state"], "queued", "nothing went to the draining agent");

    // Another agent takes the waiting job.
    fleet.agent("a2", "", 1);
    assert_eq!(fleet.wait_run(&next, Duration::from_secs(30))["state"], "succeeded");
    assert_eq!(fleet.job(&next, "next")["agent"], "a2");
}

#[test]
fn a_second_signal_stops_a_draining_agent_at_once_and_its_job_runs_again_elsewhere() {
    let mut fleet = Fleet::start("drain-now");
    let a1 = fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let pids = fleet.dir.path().join("pids");
    let run = fleet.submit(
        "slow.yml",
        &format!(
            "name: slow\njobs:\n  slow:\n    retries: 1\n    steps:\n      - run: |\n          sleep 1000 &\n          echo \"$DROVER_ATTEMPT $!\" >> {p}\n          [ \"$DROVER_ATTEMPT\" = 2 ] || wait\n",
            p = pids.display()
        ),
    );
    let pid: i32 = wait_for("the job to start", Duration::from_secs(20), || {
        lines(&pids).first().and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    });
    fleet.agents[a1].signal(libc::SIGTERM);
    fleet.wait_draining("a1");
    fleet.agents[a1].signal(libc::SIGINT);
    wait_for("the agent to stop", Duration::from_secs(20), || fleet.agents[a1].child.try_wait().unwrap());
    assert!(!process_alive(pid), "the step's daemon was killed with the attempt");
    // The attempt is lost and the job runs again where retries allow.
    fleet.agent("a2", "", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(40));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    let job = fleet.job(&run, "slow");
    assert_eq!((job["attempt"].as_u64(), job["agent"].as_str()), (Some(2), Some("a2")), "{job}");
}

#[test]
fn a_draining_agent_that_cannot_report_stops_at_its_drain_timeout() {
    let mut fleet = Fleet::start("drain-timeout");
    let (a1, _) = fleet.start_agent("a1", AgentSpec { extra: &["--drain-timeout", "2s"], ..AgentSpec::default() });
    fleet.wait_agents(1);
    let pids = fleet.dir.path().join("pids");
    fleet.submit(
        "slow.yml",
        &format!(
            "name: slow\njobs:\n  slow:\n    steps:\n      - run: sleep 1000 & echo $! >> {p}; wait\n",
            p = pids.display()
        ),
    );
    let pid: i32 = wait_for("the job to start", Duration::from_secs(20), || lines(&pids).first()?.parse().ok());
    // With no coordinator to report to, the drain can never complete on its
    // own: the timeout ends it, and the step goes with the agent.
    fleet.kill_coordinator(0);
    fleet.agents[a1].signal(libc::SIGTERM);
    let exit = wait_for("the agent to stop at its drain timeout", Duration::from_secs(20), || {
        fleet.agents[a1].child.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit}\n{}", fleet.agents[a1].log_tail());
    assert!(!process_alive(pid), "the step was killed");
    assert!(fleet.agents[a1].log_tail().contains("drain timeout reached"), "{}", fleet.agents[a1].log_tail());
}
