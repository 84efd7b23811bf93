//! The embedded store under the faults that used to lose data quietly: its
//! directory deleted under a running coordinator, and a full disk. Writes
//! stop with the reason, no second coordinator can take the path, and the
//! coordinator exits non-zero so that a supervisor restarts it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Fleet, Tmpfs, text, wait_for};

/// Waits for coordinator `i` to exit by itself; returns its exit code.
fn wait_exit(fleet: &mut Fleet, i: usize, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        let proc = fleet.coordinators[i].as_mut().expect("coordinator started");
        if let Some(status) = proc.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "coordinator {i} still runs after {within:?}:\n{}", proc.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_deleted_data_directory_stops_writes_and_no_second_coordinator_takes_it() {
    let mut fleet = Fleet::start_with("deleted-dir", &["--store-fail-exit", "3s"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit("p.yml", "name: p\njobs:\n  a: {steps: [{run: echo before}]}\n");
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");

    let data = fleet.dir.path().join("data-0");
    std::fs::remove_dir_all(&data).unwrap();
    let path = fleet.dir.path().join("p.yml");
    let refused = wait_for("a submit to be refused", Duration::from_secs(5), || {
        let out = fleet.drover(&["run", path.to_str().unwrap()]);
        (!out.status.success()).then_some(out)
    });
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("was deleted"), "{stderr}");

    // A second coordinator on the same path (made again) cannot start.
    let out = Command::new(crate::harness::bin("drover-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-dir")
        .arg(fleet.coordinator_tls())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a second coordinator started on a deleted directory's path: {stderr}");
    assert!(stderr.contains("is in use by another drover-coordinator on this host"), "{stderr}");

    // The first exits non-zero with the reason once --store-fail-exit passed.
    let code = wait_exit(&mut fleet, 0, Duration::from_secs(20));
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(&fleet.coordinator(0).log).unwrap();
    assert!(log.contains("the store stopped") && log.contains("was deleted"), "{log}");
}

#[test]
fn a_full_disk_stops_the_coordinator_and_a_restart_elsewhere_loses_nothing() {
    let mut fleet = Fleet::start_with("full-disk", &["--store-fail-exit", "2s"]);
    // Put coordinator 0's data on a 5 MB file system.
    let addr = fleet.addrs[0].clone();
    // Up and leading, so its data directory exists.
    fleet.wait_leader();
    fleet.kill_coordinator(0);
    let data = fleet.dir.path().join("data-0");
    std::fs::remove_dir_all(&data).unwrap();
    let small = match Tmpfs::mount(&data, "5m") {
        Ok(m) => m,
        Err(e) => {
            // Mounting needs root (CAP_SYS_ADMIN), which CI has.
            eprintln!("skipped: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    fleet.start_coordinator(0, &addr);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let mut finished = Vec::new();
    for i in 0..3 {
        let run =
            fleet.submit("small.yml", &format!("name: small\njobs:\n  a: {{steps: [{{run: echo small-{i}}}]}}\n"));
        assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
        finished.push(run);
    }
    // 6 MB of output fills the disk.
    let big = fleet.submit(
        "big.yml",
        "name: big\njobs:\n  a: {steps: [{run: \"head -c 6000000 /dev/zero | tr '\\\\0' x; echo; echo end\"}]}\n",
    );
    let code = wait_exit(&mut fleet, 0, Duration::from_secs(60));
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(&fleet.coordinator(0).log).unwrap();
    assert!(log.contains("the store stopped"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");

    // Move the data to a roomy disk and start again on it.
    let roomy = fleet.dir.path().join("data-0-roomy");
    let out = Command::new("cp").arg("-a").arg(&data).arg(&roomy).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(small);
    std::fs::remove_dir_all(&data).ok();
    std::fs::rename(&roomy, &data).unwrap();
    fleet.start_coordinator(0, &addr);
    for (i, run) in finished.iter().enumerate() {
        assert_eq!(fleet.status(run)["state"], "succeeded", "run {run}");
        let out = fleet.drover(&["logs", run, "a"]);
        assert!(text(&out.stdout).contains(&format!("\nsmall-{i}\n")), "{}", text(&out.stdout));
    }
    let status = fleet.wait_run(&big, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.logs());
    let out = fleet.drover(&["logs", &big, "a", "--raw"]);
    let log = text(&out.stdout);
    let xs = log.bytes().filter(|b| *b == b'x').count();
    assert_eq!(xs, 6_000_000, "every byte of the output, once");
    assert!(log.ends_with("\nend\n"), "{}", &log[log.len().saturating_sub(200)..]);
}
