//! Clients that ride through a coordinator restart: `drover run --follow`
//! and `drover logs --follow` against a single coordinator on the embedded
//! store, which is SIGKILLed mid-run and started again on the same address.
//! They wait (up to `--reconnect-timeout`), say so once on stderr, and go on
//! exactly where they stopped; a run that ended while they were away is
//! reported with its exit code; and when the coordinator stays away they
//! give up with exit 3.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Fleet, Proc, bin, lines, wait_for, wait_for_or_report};

/// A `drover` started in the background against the fleet, its stdout and
/// stderr in files of the test directory; killed if the test ends first.
struct Client {
    proc: Proc,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Client {
    fn start(fleet: &Fleet, tag: &str, args: &[&str]) -> Client {
        let (stdout, stderr) =
            (fleet.dir.path().join(format!("{tag}.stdout")), fleet.dir.path().join(format!("{tag}.stderr")));
        let child = Command::new(bin("drover"))
            .args(args)
            .env("DROVER_COORDINATOR", fleet.url())
            .env("DROVER_TLS_DIR", &fleet.tls)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("start drover");
        Client { proc: Proc { child, name: tag.to_string(), log: stderr.clone() }, stdout, stderr }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the client to exit and returns its exit code.
    fn wait(&mut self, timeout: Duration, fleet: &Fleet) -> Option<i32> {
        let what = format!("drover {} to exit", self.proc.name);
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let child = &mut self.proc.child;
        let status = wait_for_or_report(
            &what,
            timeout,
            || child.try_wait().expect("wait for drover"),
            || {
                let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
                format!("stdout:\n{}\nstderr:\n{}\n{}", read(stdout), read(stderr), fleet.logs())
            },
        );
        status.code()
    }

    /// The run id from "submitted run N" on stderr.
    fn run_id(&self) -> String {
        wait_for("drover to say which run it submitted", Duration::from_secs(20), || {
            self.stderr().lines().find_map(|l| l.strip_prefix("submitted run ").map(|r| r.trim().to_string()))
        })
    }
}

fn write_pipeline(fleet: &Fleet, name: &str, yaml: &str) -> String {
    let path = fleet.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

fn marks(fleet: &Fleet) -> PathBuf {
    let m = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&m).unwrap();
    m
}

/// The numbered lines `prefix N` in `out`, in the order shown.
fn numbered(out: &str, prefix: &str) -> Vec<u32> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).collect()
}

/// How many lines the step has printed, by its progress file.
fn progress(marks: &Path) -> usize {
    lines(&marks.join("progress")).len()
}

#[test]
fn follows_ride_through_a_coordinator_restart_without_losing_or_repeating_a_line() {
    let mut fleet = Fleet::start("reconnect");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    // 30 numbered lines over about 6 seconds; each also goes to a file, so
    // the test knows how far the step is while the coordinator is down.
    let path = write_pipeline(
        &fleet,
        "count.yml",
        &format!(
            "name: count\njobs:\n  count:\n    steps:\n      - run: |\n          for i in $(seq 1 30); do echo line $i; echo $i >> {}/progress; sleep 0.2; done\n",
            m.display()
        ),
    );
    let mut follow = Client::start(&fleet, "run-follow", &["run", "--follow", &path]);
    let run = follow.run_id();
    wait_for("the job to print line 3", Duration::from_secs(30), || (progress(&m) >= 3).then_some(()));
    let mut logs = Client::start(&fleet, "logs-follow", &["logs", &run, "count", "--follow"]);
    wait_for("both clients to show line 5", Duration::from_secs(30), || {
        (numbered(&follow.stdout(), "count | line ").contains(&5) && numbered(&logs.stdout(), "line ").contains(&5))
            .then_some(())
    });

    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    let at_kill = progress(&m);
    wait_for("both clients to say they are reconnecting", Duration::from_secs(20), || {
        (follow.stderr().contains("reconnecting to the coordinator") && logs.stderr().contains("reconnecting"))
            .then_some(())
    });
    // The step goes on printing while nobody stores its output: the agent
    // keeps it until the coordinator is back.
    wait_for("the step to print 5 more lines with the coordinator down", Duration::from_secs(20), || {
        (progress(&m) >= at_kill + 5).then_some(())
    });
    assert_eq!(follow.proc.child.try_wait().unwrap(), None, "the follow waits: {}", follow.stderr());
    fleet.start_coordinator(0, &addr);

    let code = follow.wait(Duration::from_secs(60), &fleet);
    let (stdout, stderr) = (follow.stdout(), follow.stderr());
    assert_eq!(code, Some(0), "{stdout}{stderr}{}", fleet.logs());
    assert_eq!(numbered(&stdout, "count | line "), (1..=30).collect::<Vec<_>>(), "every line once, in order: {stdout}");
    // The job's states are not shown again when the new stream replays the
    // run from its start.
    let states: Vec<&str> = stdout.lines().filter_map(|l| l.split_once(" [count] ").map(|(_, s)| s)).collect();
    for state in &states {
        assert_eq!(states.iter().filter(|s| *s == state).count(), 1, "{state:?} once: {stdout}");
    }
    assert!(states.contains(&"running on a1 (attempt 1)"), "{stdout}");
    assert!(states.iter().any(|s| s.starts_with("succeeded in ")), "{stdout}");
    assert_eq!(stdout.matches(&format!("run {run} succeeded")).count(), 1, "{stdout}");
    assert_eq!(stderr.matches("reconnecting to the coordinator…").count(), 1, "said once: {stderr}");
    assert!(stderr.contains("s left)"), "{stderr}");
    assert_eq!(stderr.matches("reconnected to the coordinator at").count(), 1, "{stderr}");

    let code = logs.wait(Duration::from_secs(30), &fleet);
    let (stdout, stderr) = (logs.stdout(), logs.stderr());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(numbered(&stdout, "line "), (1..=30).collect::<Vec<_>>(), "every line once, in order: {stdout}");
    assert_eq!(stderr.matches("reconnecting to the coordinator…").count(), 1, "said once: {stderr}");
    assert_eq!(fleet.status(&run)["state"], "succeeded");
}

#[test]
fn a_run_that_fails_while_the_follow_is_away_is_reported_with_exit_1() {
    let mut fleet = Fleet::start("reconnect-away");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    let path = write_pipeline(
        &fleet,
        "fails.yml",
        &format!(
            "name: fails\njobs:\n  doomed:\n    steps:\n      - run: |\n          for i in 1 2 3; do echo line $i; done\n          while [ ! -e {m}/go ]; do sleep 0.05; done\n          echo failing now\n          exit 7\n",
            m = m.display()
        ),
    );
    let mut follow = Client::start(&fleet, "run-follow", &["run", "--follow", &path]);
    let run = follow.run_id();
    wait_for("the follow to show line 3", Duration::from_secs(30), || {
        numbered(&follow.stdout(), "doomed | line ").contains(&3).then_some(())
    });
    // The client is away (stopped) while the coordinator restarts and the
    // run ends; when it resumes, its stream is gone.
    follow.proc.signal(libc::SIGSTOP);
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    std::fs::write(m.join("go"), "").unwrap();
    fleet.start_coordinator(0, &addr);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}{}", fleet.logs());
    follow.proc.signal(libc::SIGCONT);

    let code = follow.wait(Duration::from_secs(60), &fleet);
    let (stdout, stderr) = (follow.stdout(), follow.stderr());
    assert_eq!(code, Some(1), "a failed run exits 1: {stdout}{stderr}");
    assert_eq!(numbered(&stdout, "doomed | line "), vec![1, 2, 3], "{stdout}");
    assert_eq!(stdout.matches("doomed | failing now").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("[doomed] failed").count(), 1, "{stdout}");
    assert!(stdout.contains(&format!("run {run} failed")), "{stdout}");
    assert!(stderr.contains(&format!("run {run} failed")), "{stderr}");
}

#[test]
fn a_follow_gives_up_with_exit_3_when_the_coordinator_stays_away() {
    let mut fleet = Fleet::start("reconnect-gone");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let path = write_pipeline(
        &fleet,
        "long.yml",
        "name: long\njobs:\n  long:\n    steps:\n      - run: echo started; sleep 60\n",
    );
    let mut follow = Client::start(&fleet, "run-follow", &["--reconnect-timeout", "2s", "run", "--follow", &path]);
    let run = follow.run_id();
    wait_for("the follow to show the step's output", Duration::from_secs(30), || {
        follow.stdout().contains("long | started").then_some(())
    });
    let killed = Instant::now();
    fleet.kill_coordinator(0);
    let code = follow.wait(Duration::from_secs(20), &fleet);
    let took = killed.elapsed();
    let stderr = follow.stderr();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "gave up after {took:?}: {stderr}");
    assert_eq!(stderr.matches("reconnecting to the coordinator… (2s left)").count(), 1, "said once: {stderr}");
    assert!(
        stderr.contains("gave up reconnecting to the coordinator after 2s (--reconnect-timeout)"),
        "says it gave up: {stderr}"
    );
    assert!(stderr.contains(&format!("`drover status {run}`")), "says how to look at the run again: {stderr}");
}

#[test]
fn a_coordinator_stopped_with_sigterm_exits_at_once_though_a_follow_is_open() {
    let mut fleet = Fleet::start("sigterm-follow");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let path = fleet.dir.path().join("slow.yml");
    std::fs::write(&path, "name: slow\njobs:\n  a: {steps: [{run: 'echo started; sleep 4; echo done'}]}\n").unwrap();
    let mut follow = Client::start(&fleet, "follow", &["run", "--follow", path.to_str().unwrap()]);
    wait_for("the follow to show the step", Duration::from_secs(30), || {
        follow.stdout().contains("started").then_some(())
    });
    let addr = fleet.addrs[0].clone();
    let stopped = Instant::now();
    fleet.coordinator(0).signal(libc::SIGTERM);
    let exited = wait_for("the coordinator to exit", Duration::from_secs(10), || {
        fleet.coordinators[0].as_mut().unwrap().child.try_wait().unwrap()
    });
    let took = stopped.elapsed();
    assert!(exited.success(), "{exited}");
    assert!(took < Duration::from_secs(5), "shutdown waited {took:?} for the open follow");
    // The follow waits for it to come back and sees the run to its end.
    fleet.start_coordinator(0, &addr);
    assert_eq!(follow.wait(Duration::from_secs(60), &fleet), Some(0), "{}", follow.stderr());
    let out = follow.stdout();
    assert_eq!(out.matches("started").count(), 1, "{out}");
    assert!(out.contains("done"), "{out}");
}

/// A pipeline whose build packs 100 MB of random bytes that its test
/// needs; each records the sha256 it saw under `m`.
fn big_artifact(name: &str, m: &std::path::Path) -> String {
    format!(
        "name: {name}
jobs:
  build:
    steps: [{{run: 'head -c 100000000 /dev/urandom > big.bin; sha256sum big.bin > {m}/built'}}]
    artifacts: {{paths: [big.bin]}}
  test:
    needs: [build]
    steps: [{{run: 'sha256sum big.bin > {m}/received'}}]
",
        m = m.display()
    )
}

#[test]
fn an_artifact_download_resumes_where_a_coordinator_restart_broke_it() {
    let mut fleet = Fleet::start("download-resume");
    let agent = fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    // 100 MB: long enough to download that the restart lands mid-way.
    let run = fleet.submit("resume.yml", &big_artifact("resume", &m));
    let log = fleet.agents[agent].log.clone();
    wait_for("the download to start", Duration::from_secs(120), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("downloading artifacts").then_some(())
    });
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    fleet.start_coordinator(0, &addr);
    let status = fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(
        std::fs::read_to_string(m.join("received")).unwrap(),
        std::fs::read_to_string(m.join("built")).unwrap(),
        "the same bytes, whole"
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("resuming"),
        "the download resumed rather than starting again:\n{}",
        fleet.agents[agent].log_tail()
    );
    assert_eq!(fleet.job(&run, "test")["attempt"], 1, "one attempt: the download went on");
}

#[test]
fn an_artifact_upload_resumes_where_a_coordinator_restart_broke_it() {
    let mut fleet = Fleet::start("upload-resume");
    let agent = fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let m = marks(&fleet);
    // 100 MB of random bytes, which no archive shrinks: long enough to
    // upload that the restart lands mid-way.
    let run = fleet.submit("resume-up.yml", &big_artifact("resume-up", &m));
    // The coordinator writes an upload into {blob-dir}/tmp/partial-SHA256
    // (its blob dir is data-0/blobs by default).
    let tmp = fleet.dir.path().join("data-0").join("blobs").join("tmp");
    let partial = || -> Option<(PathBuf, u64)> {
        std::fs::read_dir(&tmp).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("partial-").then(|| (e.path(), e.metadata().map_or(0, |meta| meta.len())))
        })
    };
    let (path, _) = wait_for("the upload to pass 10 MB", Duration::from_secs(120), || {
        partial().filter(|(_, len)| *len > 10_000_000)
    });
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    let kept = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("the upload ended before the kill ({e}); the test needs it mid-way"))
        .len();
    assert!(kept > 10_000_000 && kept < 100_000_000, "the partial upload holds {kept} bytes");
    fleet.start_coordinator(0, &addr);
    let status = fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(
        std::fs::read_to_string(m.join("received")).unwrap(),
        std::fs::read_to_string(m.join("built")).unwrap(),
        "the same bytes, whole"
    );
    assert_eq!(fleet.job(&run, "build")["attempt"], 1, "one attempt: the upload went on");
    // It went on from the very byte the killed coordinator had kept, not
    // from 0: the agent says so, and so does the new coordinator.
    let said = std::fs::read_to_string(&fleet.agents[agent].log).unwrap_or_default();
    let resumed_at: Vec<u64> = said
        .lines()
        .filter_map(|l| l.split_once("resuming an upload at byte ")?.1.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(resumed_at, vec![kept], "resumed once, at the byte kept:\n{}", fleet.agents[agent].log_tail());
    let coordinator = std::fs::read_to_string(&fleet.coordinator(0).log).unwrap_or_default();
    assert!(
        coordinator.contains(&format!("resuming an upload at byte {kept}")),
        "the coordinator went on from byte {kept}:\n{}",
        fleet.coordinator(0).log_tail()
    );
    assert!(partial().is_none(), "the partial upload was renamed into place");
}
