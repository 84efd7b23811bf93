//! What a job cannot do to its agent: see the agent's environment, read its
//! TLS key (with `--run-as`), or outlive it (a SIGKILLed agent's step
//! watcher kills its steps); and an agent the coordinator refuses for its
//! name stops with the reason instead of retrying for ever.

use std::time::{Duration, Instant};

use crate::harness::{AgentSpec, Fleet, lines, process_alive, step_watcher, text, wait_for};

/// What the agent's environment holds and no step may see.
const SECRET: &str = "AGENT_SECRET_MARKER";
const SECRET_VALUE: &str = "do-not-leak-7d1c0f";

/// The job's log, once its run has finished.
fn finished_log(fleet: &Fleet, run: &str, job: &str) -> String {
    let status = fleet.wait_run(run, Duration::from_secs(60));
    let out = fleet.drover(&["logs", run, job]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stdout);
    assert_eq!(status["state"], "succeeded", "{status:#}\n{log}{}", fleet.logs());
    log
}

/// The `KEY=value` lines of `env` output in a log.
fn env_lines(log: &str) -> Vec<(&str, &str)> {
    log.lines()
        .filter(|l| !l.starts_with("==>"))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .collect()
}

#[test]
fn steps_start_with_a_cleared_environment() {
    let mut fleet = Fleet::start("cleared-env");
    fleet.start_agent("a1", AgentSpec { envs: &[(SECRET, SECRET_VALUE)], ..AgentSpec::default() });
    fleet.wait_agents(1);
    let run = fleet.submit(
        "env.yml",
        "name: env\nenv: {PIPELINE_VAR: from-the-pipeline, PATH: \"$PATH:/opt/drover-test/bin\"}\njobs:\n  show:\n    env: {JOB_VAR: from-the-job}\n    steps:\n      - run: env\n",
    );
    let log = finished_log(&fleet, &run, "show");
    assert!(!log.contains(SECRET_VALUE) && !log.contains(SECRET), "the agent's environment leaked:\n{log}");
    let env = env_lines(&log);
    let value = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let work = fleet.dir.path().join("work").join("a1").canonicalize().unwrap();
    let expected = [
        ("JOB_VAR", "from-the-job".to_string()),
        ("PIPELINE_VAR", "from-the-pipeline".to_string()),
        ("DROVER_RUN_ID", run.clone()),
        ("DROVER_JOB", "show".to_string()),
        ("DROVER_ATTEMPT", "1".to_string()),
        ("DROVER_AGENT", "a1".to_string()),
        ("DROVER_WORKSPACE", work.join(format!("{run}-show-1")).display().to_string()),
        // The pipeline's PATH extends the fixed one.
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/drover-test/bin".to_string()),
        ("LANG", "C.UTF-8".to_string()),
    ];
    for (key, want) in &expected {
        assert_eq!(value(key), Some(want.as_str()), "{key} in:\n{log}");
    }
    assert!(value("HOME").is_some_and(|h| h.starts_with('/')), "HOME in:\n{log}");
    // Nothing else, the agent's own DROVER_LOG (set by the harness) and
    // DROVER_TLS_DIR least of all; bash adds PWD, SHLVL and `_` itself.
    let allowed = ["HOME", "TRACEPARENT", "PWD", "OLDPWD", "SHLVL", "_"];
    for (key, _) in &env {
        assert!(
            expected.iter().any(|(k, _)| k == key) || allowed.contains(key),
            "{key} should not be in a step's environment:\n{log}"
        );
    }
}

#[test]
fn a_step_run_as_another_user_cannot_read_the_agents_keys_or_environment() {
    if !root_or_skip() {
        return;
    }
    let mut fleet = Fleet::start("run-as");
    fleet.start_agent(
        "a1",
        AgentSpec { envs: &[(SECRET, SECRET_VALUE)], extra: &["--run-as", "nobody"], ..AgentSpec::default() },
    );
    fleet.wait_agents(1);
    let work = fleet.dir.path().join("work").join("a1");
    // The step looks for the TLS directory where the agent's command line
    // names it (world-readable by design) and where the test knows it is.
    let script = format!(
        r#"id
env
echo "--- the agent's environment"
tr '\0' '\n' < /proc/$PPID/environ || echo "environ: unreadable"
tls=$(tr '\0' '\n' < /proc/$PPID/cmdline | sed -n '/^--tls-dir$/{{n;p}}')
echo "tls dir from the agent's cmdline: $tls"
cat "$tls"/*key.pem || echo "keys from cmdline: unreadable"
cat {tls}/*key.pem || echo "keys from the known path: unreadable"
ls {tls} || echo "tls dir: unlistable"
cat {certs}/*/*key.pem {certs}/*/*/*key.pem || echo "every key: unreadable"
cat {lock} || echo "lock: unreadable"
ls {work} || echo "work dir: unlistable"
touch "$DROVER_WORKSPACE/made-by-the-step" && echo "workspace: writable"
"#,
        tls = fleet.agent_tls("a1").display(),
        certs = fleet.certs.display(),
        lock = work.join(".drover-agent.lock").display(),
        work = work.display(),
    );
    let yaml = format!(
        "name: runas\njobs:\n  probe:\n    env: {{JOB_VAR: from-the-job}}\n    steps:\n      - run: |\n{}",
        script.lines().map(|l| format!("          {l}\n")).collect::<String>()
    );
    let run = fleet.submit("runas.yml", &yaml);
    let log = finished_log(&fleet, &run, "probe");
    assert!(!log.contains(SECRET_VALUE), "the agent's environment leaked:\n{log}");
    assert!(!log.contains("PRIVATE KEY"), "a key leaked:\n{log}");
    for expected in [
        "uid=65534(nobody)".to_string(),
        "JOB_VAR=from-the-job".to_string(),
        format!("DROVER_RUN_ID={run}"),
        "DROVER_AGENT=a1".to_string(),
        "HOME=/nonexistent".to_string(),
        "environ: unreadable".to_string(),
        // The path is no secret; the files are.
        format!("tls dir from the agent's cmdline: {}", fleet.agent_tls("a1").display()),
        "keys from cmdline: unreadable".to_string(),
        "keys from the known path: unreadable".to_string(),
        "tls dir: unlistable".to_string(),
        "every key: unreadable".to_string(),
        "lock: unreadable".to_string(),
        "work dir: unlistable".to_string(),
        "workspace: writable".to_string(),
    ] {
        assert!(log.contains(&expected), "expected {expected:?} in:\n{log}");
    }
}

/// The processes (not zombies) whose environment holds `mark` and
/// `DROVER_AGENT=agent`.
fn marked_processes(mark: &str, agent: &str) -> Vec<i32> {
    let (mark, agent) = (mark.as_bytes(), format!("DROVER_AGENT={agent}").into_bytes());
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
            let has = |entry: &[u8]| environ.split(|b| *b == 0).any(|e| e == entry);
            has(mark) && has(&agent) && process_alive(*pid)
        })
        .collect()
}

#[test]
fn an_agent_killed_by_sigkill_takes_its_steps_with_it() {
    let mut fleet = Fleet::start("sigkill");
    let doomed = fleet.agent("doomed", "", 1);
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let mark = format!("ISOLATION_MARK=sigkill-{}", std::process::id());
    // On doomed, the step leaves a daemon in its group and appends a tick
    // every 50 ms for ever; elsewhere it just finishes.
    let yaml = format!(
        "name: sigkill\njobs:\n  tick:\n    retries: 1\n    env: {{ISOLATION_MARK: {value}}}\n    steps:\n      - run: |\n          if [ \"$DROVER_AGENT\" = doomed ]; then\n            sleep 1000 &\n            echo $! > {m}/daemon.pid\n            while true; do echo tick >> {m}/ticks-$DROVER_ATTEMPT; sleep 0.05; done\n          fi\n          echo \"done $DROVER_AGENT $DROVER_ATTEMPT\" >> {m}/done\n",
        value = mark.split_once('=').unwrap().1,
        m = marks.display()
    );
    let run = fleet.submit("sigkill.yml", &yaml);
    let ticks = marks.join("ticks-1");
    let daemon: i32 = wait_for("the step to start its daemon and tick", Duration::from_secs(20), || {
        let pid = std::fs::read_to_string(marks.join("daemon.pid")).ok()?.trim().parse().ok()?;
        (lines(&ticks).len() >= 3).then_some(pid)
    });
    let before = marked_processes(&mark, "doomed");
    assert!(before.contains(&daemon) && before.len() >= 2, "the step and its daemon: {before:?}");

    fleet.agents[doomed].signal(libc::SIGKILL);
    let killed = Instant::now();
    // Polled briskly rather than with wait_for's 20 ms, to measure.
    let gone = loop {
        let left = marked_processes(&mark, "doomed");
        if left.is_empty() {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "still running 10 s after the SIGKILL: {left:?}");
        std::thread::sleep(Duration::from_millis(1));
    };
    println!("SIGKILL of the agent to every process of its steps gone: {gone:?}");
    assert!(gone < Duration::from_secs(1), "the steps outlived their agent by {gone:?}");
    let frozen = lines(&ticks);
    fleet.agents[doomed].kill();
    wait_for("the watcher to say what it killed", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&fleet.agents[doomed].log).unwrap_or_default();
        log.contains("the agent died: killed the process groups of the steps it was running").then_some(())
    });

    // The attempt is lost and the job runs once more, elsewhere.
    fleet.agent("survivor", "", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    let job = fleet.job(&run, "tick");
    assert_eq!((job["attempt"].as_u64(), job["agent"].as_str()), (Some(2), Some("survivor")), "{job}");
    assert_eq!(lines(&marks.join("done")), vec!["done survivor 2"]);
    // Nothing of the first attempt wrote after the kill.
    assert_eq!(lines(&ticks), frozen, "the first attempt kept ticking after its agent died");
}

/// Whether the tests run as root, saying why a test is skipped if not.
fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!(
            "skipped: --run-as needs the agent to run as root, and the tests run as uid {euid} \
             (steps_start_with_a_cleared_environment covers what needs no root)"
        );
    }
    euid == 0
}

/// The watcher's fallback: when the watcher dies with its agent (stopped
/// here, then killed after the agent), the next agent on the work dir still
/// finds the steps, which run as another user with a cleared environment,
/// by their `DROVER_WORKSPACE`, and kills them.
#[test]
fn leftovers_of_steps_run_as_another_user_are_killed_by_the_next_agent() {
    if !root_or_skip() {
        return;
    }
    let mut fleet = Fleet::start("run-as-leftovers");
    let spec = || AgentSpec { extra: &["--run-as", "nobody"], ..AgentSpec::default() };
    let (first, _) = fleet.start_agent("a1", spec());
    fleet.wait_agents(1);
    // A directory the step (nobody) may write its daemon's pid to.
    let marks = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pid_file = marks.join("daemon.pid");
    let run = fleet.submit(
        "daemon.yml",
        &format!(
            "name: daemon\njobs:\n  daemon:\n    steps:\n      - run: |\n          sleep 1000 &\n          echo $! > {}\n          echo started\n          sleep 1000\n",
            pid_file.display()
        ),
    );
    let pid: i32 = wait_for("the step to start its daemon", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    // Its output reaching the coordinator means the agent read it, which it
    // starts only after handing the step's group to the watcher: killing
    // the watcher earlier would make the agent start another with the list.
    wait_for("the step's output", Duration::from_secs(20), || {
        text(&fleet.drover(&["logs", &run, "daemon"]).stdout).contains("started").then_some(())
    });
    // The watcher goes first: it would kill the steps the moment the agent
    // dies. (A stopped watcher would not do: the agent's death orphans its
    // process group, and the kernel continues stopped members of orphaned
    // groups.) The agent notices only at its next write, and writes
    // nothing while the step sleeps.
    let watcher = step_watcher(&fleet.agents[first]).expect("the agent has a step watcher");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(watcher, libc::SIGKILL) };
    wait_for("the watcher to be gone", Duration::from_secs(5), || (!process_alive(watcher)).then_some(()));
    fleet.agents[first].kill();
    assert!(process_alive(pid), "with its watcher gone, the dead agent's daemon {pid} runs on");

    let again = fleet.start_agent("a1", spec()).0;
    wait_for("the next agent to kill the daemon", Duration::from_secs(15), || (!process_alive(pid)).then_some(()));
    // It says so once every process it signalled is gone.
    let warning = wait_for("the next agent to say what it killed", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&fleet.agents[again].log).unwrap_or_default();
        log.lines().find(|l| l.contains("killed processes that an earlier agent")).map(str::to_string)
    });
    assert!(warning.contains(&pid.to_string()), "{warning}");
}

#[test]
fn an_agent_refused_for_its_name_exits_with_the_reason() {
    let mut fleet = Fleet::start("refused");
    fleet.issue_agent_certs(&["a1".to_string()]);
    // "a2" presents the certificate of "a1".
    let (a1, a2) = (fleet.agent_tls("a1"), fleet.agent_tls("a2"));
    std::fs::create_dir_all(&a2).unwrap();
    std::fs::copy(a1.join("ca.pem"), a2.join("ca.pem")).unwrap();
    std::fs::copy(a1.join("agent-a1.pem"), a2.join("agent-a2.pem")).unwrap();
    std::fs::copy(a1.join("agent-a1-key.pem"), a2.join("agent-a2-key.pem")).unwrap();
    let started = Instant::now();
    let (i, _) = fleet.start_agent("a2", AgentSpec::default());
    let status = wait_for("the refused agent to exit", Duration::from_secs(10), || {
        fleet.agents[i].child.try_wait().expect("wait for the agent")
    });
    println!("the refused agent exited after {:?}", started.elapsed());
    let log = std::fs::read_to_string(&fleet.agents[i].log).unwrap();
    assert_eq!(status.code(), Some(2), "a refusal exits 2:\n{log}");
    let reason =
        "refused this agent (PermissionDenied): this certificate belongs to agent \"a1\", which cannot act as \"a2\"";
    assert!(log.contains(reason), "expected {reason:?} in:\n{log}");
    assert_eq!(log.matches("which cannot act as").count(), 1, "refused once, not retried:\n{log}");
}
