//! Logs live in segment files outside the key space: the coordinator's
//! memory stays flat however much log it keeps, any coordinator serves any
//! log from the shared `--blob-dir`, a damaged or missing segment is an
//! error naming the file and offset, and retention deletes a run's
//! segments with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Etcd, Fleet, text, wait_for};

/// The resident set of process `pid`, in KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Two jobs whose output passes the default log cap of 16 MiB.
const LOUD: &str = "name: loud\njobs:\n  a:\n    steps:\n      - run: head -c 17000000 /dev/zero | tr '\\0' x\n  b:\n    steps:\n      - run: head -c 17000000 /dev/zero | tr '\\0' y\n";

#[test]
fn coordinator_memory_stays_flat_over_runs_that_keep_16_mib_logs() {
    const WARMUP: usize = 3;
    const RUNS: usize = 20;
    let mut fleet = Fleet::start("logs-rss");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let pid = fleet.coordinator(0).child.id();
    let started = std::time::Instant::now();
    let mut baseline = 0;
    let mut after_each = Vec::new();
    let mut last = String::new();
    for i in 0..RUNS {
        last = fleet.submit("loud.yml", LOUD);
        let status = fleet.wait_run(&last, Duration::from_secs(120));
        assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
        // The first runs warm up the allocator's pools and the buffers of
        // the gRPC streams; the growth counted is what comes after.
        if i + 1 == WARMUP {
            baseline = rss_kib(pid);
        }
        after_each.push(rss_kib(pid) / 1024);
    }
    let end = rss_kib(pid);
    let growth_mib = end.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("coordinator RSS in MiB after each run: {after_each:?}");
    eprintln!(
        "coordinator RSS after {WARMUP} runs {:.0} MiB, after {RUNS} runs {:.0} MiB: {growth_mib:.1} MiB for {} runs \
         keeping 2 logs of 16 MiB each ({:.0} s)",
        baseline as f64 / 1024.0,
        end as f64 / 1024.0,
        RUNS - WARMUP,
        started.elapsed().as_secs_f64()
    );
    assert!(growth_mib < 40.0, "the coordinator grew by {growth_mib:.1} MiB keeping {} more runs' logs", RUNS - WARMUP);
    // What was kept reads back whole: the cap's worth of output, then the
    // agent's marker.
    let out = fleet.drover(&["logs", &last, "a", "--raw"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xs = out.stdout.iter().filter(|b| **b == b'x').count();
    assert!((16 << 20) - 200 < xs && xs < 16 << 20, "{xs} bytes of output kept");
    assert!(
        text(&out.stdout)
            .ends_with("[drover: log truncated at 16777216 bytes; the rest of this job's output was discarded]\n")
    );
}

/// The segment file of run `run` (all its attempts' logs), under a blob
/// directory.
fn segment(blobs: &Path, run: &str) -> PathBuf {
    blobs.join("logs").join(format!("{:010}.log", run.parse::<u64>().unwrap()))
}

#[test]
fn a_damaged_or_missing_segment_is_an_error_naming_the_file_and_offset() {
    let mut fleet = Fleet::start("logs-damaged");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit("hello.yml", "name: hello\njobs:\n  a:\n    steps:\n      - run: echo hello; echo world\n");
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    let out = fleet.drover(&["logs", &run, "a", "--raw"]);
    assert!(text(&out.stdout).contains("hello\nworld\n"), "{}", text(&out.stdout));
    // The default blob directory: blobs in the data directory.
    let file = segment(&fleet.dir.path().join("data-0").join("blobs"), &run);
    let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let out = fleet.drover(&["logs", &run, "a"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("log segment {} is corrupt at offset", file.display())), "{stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    assert!(!text(&out.stdout).contains("wOrld"), "no damaged bytes are shown: {}", text(&out.stdout));

    std::fs::remove_file(&file).unwrap();
    for args in [vec!["logs", &run, "a"], vec!["logs", &run, "a", "--follow"]] {
        let out = fleet.drover(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("log segment {} is missing", file.display())), "{args:?}: {stderr}");
        assert!(stderr.contains("at offset 0"), "{args:?}: {stderr}");
    }
}

#[test]
fn retention_deletes_a_runs_segments_and_sweeps_what_a_crash_left() {
    let mut fleet = Fleet::start_with("logs-prune", &["--keep-runs", "1", "--prune-interval", "200ms"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let blobs = fleet.dir.path().join("data-0").join("blobs");
    let quick = "name: quick\njobs:\n  a:\n    steps:\n      - run: echo hello from $DROVER_RUN_ID\n";
    let first = fleet.submit("quick.yml", quick);
    assert_eq!(fleet.wait_run(&first, Duration::from_secs(30))["state"], "succeeded");
    let first_file = segment(&blobs, &first);
    assert!(first_file.exists(), "{}", first_file.display());
    let second = fleet.submit("quick.yml", quick);
    assert_eq!(fleet.wait_run(&second, Duration::from_secs(30))["state"], "succeeded");
    wait_for("the pruned run's segments to go", Duration::from_secs(15), || (!first_file.exists()).then_some(()));
    let out = fleet.drover(&["logs", &second, "a"]);
    assert!(text(&out.stdout).contains(&format!("hello from {second}")), "{}", text(&out.stdout));

    // Files of a pruned run that a crash left behind (between the store's
    // delete and the files') are swept; a run number not handed out yet is
    // left alone, since its run may be starting.
    let orphan = segment(&blobs, &first);
    let future = segment(&blobs, "999");
    for file in [&orphan, &future] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"left behind\n").unwrap();
    }
    wait_for("the orphan segments to be swept", Duration::from_secs(15), || (!orphan.exists()).then_some(()));
    assert!(future.exists(), "{} was swept", future.display());
    assert!(segment(&blobs, &second).exists());
}

#[test]
fn a_follower_serves_logs_the_leader_wrote_and_etcd_keeps_only_their_metadata() {
    let etcd = Etcd::start("logs-shared", 1);
    let mut fleet = Fleet::start_ha("logs-shared", &etcd, 2);
    let leader = fleet.wait_leader();
    let follower = 1 - leader;
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let before = etcd.db_size();
    let run = fleet.submit(
        "loud.yml",
        "name: loud\njobs:\n  a:\n    steps:\n      - run: head -c 16000000 /dev/zero | tr '\\0' z; echo; echo end\n",
    );
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(120))["state"], "succeeded");
    // Only through the follower: it reads the leader's files from the
    // shared --blob-dir.
    let out = std::process::Command::new(crate::harness::bin("drover"))
        .args(["logs", &run, "a", "--raw"])
        .env("DROVER_COORDINATOR", fleet.url_of(follower))
        .env("DROVER_TLS_DIR", &fleet.tls)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.iter().filter(|b| **b == b'z').count(), 16_000_000);
    assert!(text(&out.stdout).ends_with("\nend\n"));
    let grown = etcd.db_size().saturating_sub(before);
    eprintln!("etcd's database grew by {} KiB for a 16 MB log", grown / 1024);
    assert!(grown < 8 << 20, "etcd's database grew by {grown} bytes for a 16 MB log");
}

#[test]
fn a_finished_runs_logs_are_sealed_into_the_blob_store_and_still_read() {
    let flags = ["--seal-logs-after", "100ms", "--prune-interval", "200ms", "--blob-grace", "500ms"];
    let mut fleet = Fleet::start_with("logs-sealed", &flags);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let blobs = fleet.dir.path().join("data-0").join("blobs");
    let run = fleet.submit("hello.yml", "name: hello\njobs:\n  a:\n    steps:\n      - run: echo hello; echo sealed\n");
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    let file = segment(&blobs, &run);
    wait_for("the run's segments to be sealed", Duration::from_secs(15), || (!file.exists()).then_some(()));
    // Read back from the blob store, checked, with and without --follow.
    for args in [vec!["logs", &run, "a", "--raw"], vec!["logs", &run, "a", "--raw", "--follow"]] {
        let out = fleet.drover(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("hello\nsealed\n"), "{args:?}: {}", text(&out.stdout));
    }
    // One blob holds it, which the sweep keeps past its grace (500ms here):
    // proving that nothing happens takes a wait, over several passes.
    let count = || walk(&blobs.join("sha256")).into_iter().filter(|p| p.is_file()).count();
    assert_eq!(count(), 1, "the sealed log is one blob");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(), 1, "the sweep keeps a blob a sealed log names");
    let out = fleet.drover(&["logs", &run, "a", "--raw"]);
    assert!(text(&out.stdout).contains("hello\nsealed\n"), "{}", text(&out.stdout));
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}
