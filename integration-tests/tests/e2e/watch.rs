//! `drover watch RUN`: the live view attached to a run mid-way and after
//! its end, as JSON lines too; Ctrl-C stops watching, not the run (exit
//! 130, saying how to find the run again).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Fleet, text, wait_for};

/// A job that waits for the file `go` in `dir`, printing before and after.
fn waiting_pipeline(dir: &std::path::Path) -> String {
    format!(
        "name: watched\njobs:\n  slow:\n    steps:\n      - run: |\n          echo waiting\n          while [ ! -e {go} ]; do sleep 0.05; done\n          echo released\n  after:\n    needs: [slow]\n    steps: [{{run: 'echo done'}}]\n",
        go = dir.join("go").display()
    )
}

/// `drover args` started in the background against the fleet, with its
/// stdout read line by line into a channel.
fn spawn(fleet: &Fleet, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = fleet.drover_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Reads lines until one contains `what`; returns all read so far.
fn read_until(rx: &mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l| l.contains(what)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {what:?} within 30s; got {seen:#?}"),
        }
    }
}

#[test]
fn watch_attaches_mid_run_and_after_the_end() {
    let mut fleet = Fleet::start("watch");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let file = fleet.dir.path().join("watched.yml");
    std::fs::write(&file, waiting_pipeline(fleet.dir.path())).unwrap();
    // Piped, `drover run` prints the run's number and returns.
    let out = fleet.drover(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    assert!(run.parse::<u64>().is_ok(), "a run number: {run:?}");
    wait_for("the job to run", Duration::from_secs(30), || {
        (fleet.job(&run, "slow")["state"] == "running").then_some(())
    });

    // Mid-run: what happened so far, then the rest live.
    let (mut watch, rx) = spawn(&fleet, &["watch", &run]);
    let mut seen = Vec::new();
    read_until(&rx, "slow | waiting", &mut seen);
    std::fs::write(fleet.dir.path().join("go"), "").unwrap();
    let status = watch.wait().unwrap();
    seen.extend(rx.iter());
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    for want in ["[slow] running", "slow | released", "[after] succeeded", &format!("run {run} succeeded")] {
        assert!(seen.iter().any(|l| l.contains(want)), "{want:?} in {seen:#?}");
    }

    // After the end: the whole run again, and its exit code.
    let out = fleet.drover(&["watch", &run]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("slow | waiting") && stdout.contains("after | done"), "{stdout}");

    // As JSON lines: a run event first, then jobs and logs; each line parses.
    let out = fleet.drover(&["watch", &run, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events: Vec<Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(events[0]["event"], "run", "{events:#?}");
    assert_eq!(events[0]["id"], run.as_str());
    let logs: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == "slow")
        .filter_map(|e| e["line"].as_str())
        .collect();
    assert!(logs.contains(&"waiting") && logs.contains(&"released"), "{events:#?}");
}

#[test]
fn ctrl_c_stops_watching_and_leaves_the_run_running() {
    let mut fleet = Fleet::start("watch-int");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let file = fleet.dir.path().join("watched.yml");
    std::fs::write(&file, waiting_pipeline(fleet.dir.path())).unwrap();
    let (follow, rx) = spawn(&fleet, &["run", "--follow", file.to_str().unwrap()]);
    let mut seen = Vec::new();
    read_until(&rx, "slow | waiting", &mut seen);
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(follow.id() as i32, libc::SIGINT) };
    let out = follow.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let run =
        stderr.lines().find_map(|l| l.strip_prefix("submitted run ")).expect("the run's number").trim().to_string();
    assert!(
        stderr.contains(&format!("`drover watch {run}` follows it again, `drover cancel {run}` cancels it")),
        "{stderr}"
    );
    assert_eq!(fleet.status(&run)["state"], "running", "the run goes on");
    std::fs::write(fleet.dir.path().join("go"), "").unwrap();
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded");
}
