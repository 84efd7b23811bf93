//! High availability on a real etcd: several coordinators, leader failover
//! with nothing lost or run twice, fencing of a paused leader, etcd outages
//! and member loss, and clients that find the leader on their own.

use std::path::Path;
use std::time::Duration;

use crate::harness::{AgentSpec, Etcd, Fleet, free_port, http_get, lines, text, wait_for, wait_for_or_report};

/// A chain of `n` jobs; each appends "name attempt agent" to the marker file
/// and then takes `secs` seconds.
fn chain(marks: &Path, n: usize, secs: f32) -> String {
    let mut yaml = String::from("name: chain\njobs:\n");
    for i in 0..n {
        let needs = if i == 0 { String::new() } else { format!("    needs: [j{}]\n", i - 1) };
        yaml.push_str(&format!(
            "  j{i}:\n{needs}    steps:\n      - run: |\n          echo \"j{i} $DROVER_ATTEMPT $DROVER_AGENT\" >> {m}/ran\n          sleep {secs}\n          echo \"j{i}\" >> {m}/done\n",
            m = marks.display()
        ));
    }
    yaml
}

/// Each job ran exactly once, on its first attempt.
fn assert_each_ran_once(marks: &Path, n: usize) {
    let ran = lines(&marks.join("ran"));
    for i in 0..n {
        let runs: Vec<&String> = ran.iter().filter(|l| l.starts_with(&format!("j{i} "))).collect();
        assert_eq!(runs.len(), 1, "j{i} ran {} times: {ran:?}", runs.len());
        assert!(runs[0].starts_with(&format!("j{i} 1 ")), "j{i} on its first attempt: {ran:?}");
    }
    assert_eq!(lines(&marks.join("done")).len(), n);
}

fn marks(fleet: &Fleet) -> std::path::PathBuf {
    let m = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&m).unwrap();
    m
}

#[test]
fn the_leader_killed_mid_run_fails_over_and_every_job_runs_once() {
    let etcd = Etcd::start("kill", 1);
    let mut fleet = Fleet::start_ha("kill", &etcd, 3);
    let leader = fleet.wait_leader();
    fleet.agent("a1", "", 2);
    fleet.agent("a2", "", 2);
    fleet.wait_agents(2);
    let m = marks(&fleet);
    let path = fleet.dir.path().join("chain.yml");
    std::fs::write(&path, chain(&m, 4, 1.0)).unwrap();
    // A `drover run --follow` in progress keeps following through the
    // failover.
    let follow = std::process::Command::new(crate::harness::bin("drover"))
        .args(["run", "--follow", path.to_str().unwrap()])
        .env("DROVER_COORDINATOR", fleet.url())
        .env("DROVER_TLS_DIR", &fleet.tls)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("j1 to start", Duration::from_secs(30), || {
        lines(&m.join("ran")).iter().any(|l| l.starts_with("j1 ")).then_some(())
    });
    fleet.kill_coordinator(leader);
    let out = follow.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}{}", text(&out.stderr), fleet.logs());
    assert!(stdout.contains("[j3] succeeded"), "{stdout}");
    assert_eq!(stdout.matches("[j1] succeeded").count(), 1, "{stdout}");
    let run = stdout.split_whitespace().nth(1).unwrap().to_string();
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_each_ran_once(&m, 4);
    let new_leader = fleet.wait_leader();
    assert_ne!(new_leader, leader);
    // Logs of the job that was running during the failover are complete.
    let out = fleet.drover(&["logs", &run, "j1"]);
    assert!(text(&out.stdout).contains("==> [1/1] step 1"), "{}", text(&out.stdout));
}

#[test]
fn a_paused_leader_steps_down_and_its_late_writes_are_refused() {
    let etcd = Etcd::start("pause", 1);
    let mut fleet = Fleet::start_ha("pause", &etcd, 2);
    let leader = fleet.wait_leader();
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    let run = fleet.submit("chain.yml", &chain(&m, 3, 1.0));
    wait_for("j0 to start", Duration::from_secs(30), || (!lines(&m.join("ran")).is_empty()).then_some(()));
    fleet.coordinator(leader).signal(libc::SIGSTOP);
    // Past the election TTL, the other coordinator leads.
    let other = 1 - leader;
    wait_for("the other coordinator to lead", Duration::from_secs(30), || {
        std::fs::read_to_string(&fleet.coordinator(other).log)
            .unwrap_or_default()
            .contains("elected leader")
            .then_some(())
    });
    fleet.coordinator(leader).signal(libc::SIGCONT);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_each_ran_once(&m, 3);
    // The old leader noticed and stepped down; only one leads.
    wait_for("the old leader to step down", Duration::from_secs(20), || {
        std::fs::read_to_string(&fleet.coordinator(leader).log)
            .unwrap_or_default()
            .contains("stepped down")
            .then_some(())
    });
    assert_eq!(fleet.leader(), Some(other));
}

#[test]
fn etcd_down_for_30_seconds_then_back_and_the_run_completes() {
    let mut etcd = Etcd::start("outage", 1);
    // An agent that cannot renew a lease kills the attempt at 80% of the
    // lease TTL (it cannot tell a store outage from being cut off, and two
    // attempts of a job must never overlap): a job rides through a store
    // outage shorter than that. The liveness tests cover the fence itself.
    let mut fleet = Fleet::start_ha_with("outage", &etcd, 1, &["--lease-ttl", "60s"]);
    fleet.wait_leader();
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    // The second job runs across the whole outage.
    let mut yaml = chain(&m, 3, 0.5);
    yaml = yaml.replacen("sleep 0.5\n          echo \"j1\"", "sleep 35\n          echo \"j1\"", 1);
    let run = fleet.submit("chain.yml", &yaml);
    wait_for("j1 to start", Duration::from_secs(30), || {
        lines(&m.join("ran")).iter().any(|l| l.starts_with("j1 ")).then_some(())
    });
    etcd.kill(0);
    // etcd is dead (killed and reaped) from here.
    let killed = std::time::Instant::now();
    let last = std::cell::RefCell::new(String::new());
    wait_for_or_report(
        "`drover status` to exit 3 with store unavailable",
        Duration::from_secs(10),
        || {
            let out = fleet.drover(&["status", &run]);
            let stderr = text(&out.stderr);
            *last.borrow_mut() = format!("{}: {}{stderr}", out.status, text(&out.stdout));
            (out.status.code() == Some(3) && stderr.contains("store unavailable")).then_some(())
        },
        || format!("last answer: {}", last.borrow()),
    );
    // The outage lasts 30 seconds: that is the scenario, not a wait.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(killed.elapsed()));
    etcd.restart(0);
    let status = fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_each_ran_once(&m, 3);
}

#[test]
fn losing_one_etcd_member_of_three_goes_unnoticed() {
    let mut etcd = Etcd::start("member", 3);
    let mut fleet = Fleet::start_ha("member", &etcd, 2);
    fleet.wait_leader();
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    let run = fleet.submit("chain.yml", &chain(&m, 3, 0.5));
    wait_for("j0 to start", Duration::from_secs(30), || (!lines(&m.join("ran")).is_empty()).then_some(()));
    etcd.kill(0);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_each_ran_once(&m, 3);
    let out = fleet.drover(&["cluster"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("DOWN"), "the dead member shows: {}", text(&out.stdout));
}

/// What `drover agents -o json` says of agent `name`, and the id of each
/// coordinator by URL (`drover cluster -o json`).
fn agent_view(fleet: &Fleet, name: &str) -> serde_json::Value {
    let out = fleet.drover(&["agents", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    agents.as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap_or_default()
}

fn coordinator_id(fleet: &Fleet, i: usize) -> String {
    let out = fleet.drover(&["cluster", "-o", "json"]);
    let cluster: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = cluster["coordinators"].as_array().unwrap();
    let me = members.iter().find(|m| m["url"] == fleet.url_of(i)).unwrap_or_else(|| panic!("{cluster:#}"));
    me["id"].as_str().unwrap().to_string()
}

#[test]
fn a_follower_carries_its_agents_to_the_leader_and_keeps_them_through_a_failover() {
    let etcd = Etcd::start("relay", 1);
    let mut fleet = Fleet::start_ha_with("relay", &etcd, 3, &["--metrics-listen", "127.0.0.1:0"]);
    let leader = fleet.wait_leader();
    let carrier = (leader + 1) % 3;
    let carrier_id = coordinator_id(&fleet, carrier);
    let carrier_url = fleet.url_of(carrier);
    let (agent, _) =
        fleet.start_agent("carried", AgentSpec { urls: Some(&carrier_url), slots: 2, ..AgentSpec::default() });
    fleet.wait_agents(1);
    // The leader holds the session, carried by the follower the agent
    // dialled: the agent is not sent to the leader.
    assert_eq!(agent_view(&fleet, "carried")["via"], carrier_id.as_str(), "{}", fleet.logs());
    // Each coordinator counts what it carries.
    let carried_gauge = |fleet: &Fleet, i: usize| {
        let (_, body) = http_get(fleet.metrics[i].as_deref()?, "/metrics")?;
        body.lines().find_map(|l| l.strip_prefix("drover_agents_carried ")).map(str::to_string)
    };
    assert_eq!(carried_gauge(&fleet, carrier).as_deref(), Some("1"));
    assert_eq!(carried_gauge(&fleet, leader).as_deref(), Some("0"));
    let out = fleet.drover(&["agents"]);
    assert!(text(&out.stdout).contains(&format!("connected via {carrier_id}")), "{}", text(&out.stdout));
    // Its artifacts go up and come down through the follower too.
    let m = marks(&fleet);
    let yaml = format!(
        "name: carried
jobs:
  build:
    steps: [{{run: 'head -c 100000 /dev/urandom > made.bin; sha256sum made.bin > {m}/built'}}]
    artifacts: {{paths: [made.bin]}}
  test:
    needs: [build]
    steps: [{{run: 'sha256sum made.bin > {m}/received'}}]
",
        m = m.display()
    );
    let run = fleet.submit("carried.yml", &yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    let built = std::fs::read_to_string(m.join("built")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("received")).unwrap(), built);
    assert_eq!(fleet.job(&run, "test")["agent"], "carried");

    // The leader dies while the carrier is paused, so the third
    // coordinator leads: once the carrier is back it carries the agent to
    // the new leader, over a new link.
    let other = 3 - leader - carrier;
    let other_id = coordinator_id(&fleet, other);
    fleet.coordinator(carrier).signal(libc::SIGSTOP);
    fleet.kill_coordinator(leader);
    let asked = |args: &[&str]| {
        let mut cmd = fleet.drover_command(args);
        cmd.env("DROVER_COORDINATOR", fleet.url_of(other));
        cmd.output().unwrap()
    };
    wait_for("the third coordinator to lead", Duration::from_secs(30), || {
        let out = asked(&["cluster", "-o", "json"]);
        let cluster: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (cluster["leader_id"] == other_id.as_str()).then_some(())
    });
    fleet.coordinator(carrier).signal(libc::SIGCONT);
    let carried_by = |via: &str| {
        let out = asked(&["agents", "-o", "json"]);
        let agents: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let me = agents.as_array()?.iter().find(|a| a["name"] == "carried")?.clone();
        (me["connected"] == true && me["via"] == via).then_some(())
    };
    wait_for("the agent carried to the new leader", Duration::from_secs(30), || carried_by(&carrier_id));
    let once = "name: once\njobs:\n  a:\n    steps:\n      - run: echo once\n";
    let run = fleet.submit("once.yml", once);
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());

    // That leader dies too: the carrier is the one left, and leads; the
    // agent it asks back is now its own, connected where it was.
    fleet.kill_coordinator(other);
    let want = carrier_url.clone();
    wait_for("the carrier to lead", Duration::from_secs(30), || {
        (fleet.leader().map(|l| fleet.url_of(l)) == Some(want.clone())).then_some(())
    });
    wait_for("the agent served by the carrier", Duration::from_secs(30), || {
        let view = agent_view(&fleet, "carried");
        (view["connected"] == true && view["via"] == "").then_some(())
    });
    let run = fleet.submit("twice.yml", &once.replace("once", "twice"));
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(fleet.job(&run, "a")["agent"], "carried");
    // It was asked back over the connection it had, each time, and the
    // carrier carries nothing now.
    let log = std::fs::read_to_string(&fleet.agents[agent].log).unwrap_or_default();
    assert!(log.contains("the follower carrying the session asks us back"), "{log}");
    assert_eq!(carried_gauge(&fleet, carrier).as_deref(), Some("0"), "{}", fleet.logs());
}

#[test]
fn the_cli_works_when_the_first_endpoint_is_dead() {
    let etcd = Etcd::start("cli", 1);
    let mut fleet = Fleet::start_ha("cli", &etcd, 2);
    fleet.wait_leader();
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let dead = format!("https://127.0.0.1:{}", free_port());
    let urls = format!("{dead},{}", fleet.url());
    let path = fleet.dir.path().join("one.yml");
    std::fs::write(&path, "name: one\njobs:\n  a:\n    steps:\n      - run: echo hi\n").unwrap();
    let out = std::process::Command::new(crate::harness::bin("drover"))
        .args(["--coordinator", &urls, "run", "--follow", path.to_str().unwrap()])
        .env("DROVER_TLS_DIR", &fleet.tls)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("a | hi"), "{}", text(&out.stdout));
}

#[test]
fn a_watch_behind_a_compaction_relists_and_misses_nothing() {
    let etcd = Etcd::start("compact", 1);
    let mut fleet = Fleet::start_ha("compact", &etcd, 1);
    fleet.wait_leader();
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "talk.yml",
        "name: talk\njobs:\n  talk:\n    steps:\n      - run: for i in $(seq 1 40); do echo line $i; sleep 0.05; done\n",
    );
    wait_for("some output", Duration::from_secs(20), || {
        text(&fleet.drover(&["logs", &run, "talk"]).stdout).contains("line 5").then_some(())
    });
    // The run's history from its creation is gone: a follower that replays
    // it must relist instead.
    etcd.compact();
    let out = fleet.drover(&["logs", &run, "talk", "--follow"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stdout);
    let got: Vec<&str> = log.lines().filter(|l| l.starts_with("line")).collect();
    let want: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(got, want, "{log}");
}

#[test]
fn artifacts_survive_a_leader_failover_with_a_shared_blob_dir() {
    let etcd = Etcd::start("artifacts-ha", 1);
    let mut fleet = Fleet::start_ha("artifacts-ha", &etcd, 2);
    let leader = fleet.wait_leader();
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    let (gate, waiting) = (m.join("gate"), m.join("waiting"));
    // build's artifacts are stored by the first leader; test is assigned,
    // with build's artifacts as its input, by the second.
    let yaml = format!(
        "name: ha-artifacts
jobs:
  build:
    steps: [{{run: 'head -c 100000 /dev/urandom > made.bin; sha256sum made.bin > {m}/built'}}]
    artifacts: {{paths: [made.bin]}}
  wait:
    needs: [build]
    steps: [{{run: 'touch {waiting}; while [ ! -e {gate} ]; do sleep 0.05; done'}}]
  test:
    needs: [build, wait]
    steps: [{{run: 'sha256sum made.bin > {m}/received'}}]
",
        m = m.display(),
        waiting = waiting.display(),
        gate = gate.display()
    );
    let run = fleet.submit("ha.yml", &yaml);
    wait_for("wait to run, after build stored its artifacts", Duration::from_secs(30), || {
        waiting.exists().then_some(())
    });
    fleet.kill_coordinator(leader);
    std::fs::write(&gate, "").unwrap();
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_ne!(fleet.wait_leader(), leader);
    let built = std::fs::read_to_string(m.join("built")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("received")).unwrap(), built);
    // And the new leader serves them to the CLI.
    let dest = fleet.dir.path().join("got");
    let out = fleet.drover(&["artifacts", "get", &run, "build", "-o", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dest.join("made.bin").exists());
}
