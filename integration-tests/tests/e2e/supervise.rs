//! Service supervision with real processes: the built `drover-agent` in
//! its supervisor mode, real services (bash scripts), real signals, and
//! `/proc` to check what runs. Every wait polls with a deadline.
//!
//! The "agent" that dies is this test binary run again as a child
//! ([`supervise_agent_helper`], [`proxy_agent_helper`], which do something
//! only when asked through their environment), so that it can be SIGKILLed
//! with its process group. A service's proxy process (`drover-agent
//! --proxy`) is checked the same way: it outlives its agent, is adopted,
//! switches and stops.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drover_agent::deploy::proxy::{self, ServiceProxy};
use drover_agent::deploy::supervise::{
    Adopted, Desired, OUTPUT_FILE, OUTPUT_OLD_FILE, RESTART_DELAY_FIRST, STATE_FILE, ServiceSpec, StaleReason, State,
    SuperviseError, Supervisor, output_tail, read_state,
};
use drover_agent::watch::Launch;

fn launch() -> Launch {
    Launch { program: crate::harness::bin("drover-agent"), log_format: "text" }
}

/// Generous: these are deadlines, not expectations.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it gives a value or [`DEADLINE`] passes.
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    crate::harness::wait_for(what, DEADLINE, check)
}

/// A temporary directory with a release and a state dir, whose supervisor
/// (if any is still live) is stopped when the test ends, pass or fail.
struct Place {
    root: PathBuf,
}

impl Place {
    fn new(name: &str) -> Place {
        let root = std::env::temp_dir().join(format!("drover-supervise-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("release")).unwrap();
        Place { root }
    }
    fn release(&self) -> PathBuf {
        self.root.join("release")
    }
    fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    fn spec(&self, command: &str) -> ServiceSpec {
        ServiceSpec::new("web", command, self.release(), 18080)
    }
    fn start(&self, spec: &ServiceSpec) -> Supervisor {
        Supervisor::start_with(&launch(), spec, &self.state_dir()).unwrap()
    }
    fn output(&self) -> String {
        String::from_utf8_lossy(&output_tail(&self.state_dir(), 1 << 20).unwrap()).into_owned()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(Some((proxy, _))) = ServiceProxy::adopt(&self.root.join("proxy")) {
            let _ = proxy.stop();
        }
        if let Ok(Adopted::Live(supervisor, _)) = Supervisor::adopt(&self.state_dir()) {
            let _ = supervisor.stop(Duration::ZERO);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether `pid` runs (a zombie has ended).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string)))
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The running processes of process group `pgid`.
fn group(pgid: i32) -> Vec<i32> {
    let pids: Vec<i32> =
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.into_iter()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

/// Field 22 of /proc/PID/stat: the start time.
fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Stops `supervisor` and checks that neither it nor any process of its
/// service's group is left.
fn stop_and_check_nothing_is_left(supervisor: &Supervisor, grace: Duration) -> State {
    let before = supervisor.status().unwrap();
    let service = before.service_pid;
    let state = supervisor.stop(grace).unwrap();
    assert_eq!(state.desired, Desired::Stopped);
    assert!(state.finished_ms.is_some(), "{state:?}");
    assert_eq!(state.service_pid, None);
    wait_for("the supervisor to be gone", || (!running(supervisor.pid())).then_some(()));
    if let Some(pgid) = service {
        wait_for("the service's group to be gone", || group(pgid).is_empty().then_some(()));
    }
    assert!(matches!(
        Supervisor::adopt(supervisor.state_dir()).unwrap(),
        Adopted::Stale { reason: StaleReason::Finished, .. }
    ));
    state
}

#[test]
fn a_supervised_service_runs_in_its_release_with_its_env_and_port_and_its_output_is_kept() {
    let place = Place::new("env");
    std::fs::write(place.release().join("marker.txt"), "from the release\n").unwrap();
    let mut spec = place.spec(
        "echo \"port=$PORT greeting=$GREETING service=$DROVER_SERVICE\"; cat marker.txt; echo to-stderr >&2; \
         env > env.txt; echo ready; exec sleep 1000",
    );
    spec.env.insert("GREETING".into(), "hello there".into());
    let supervisor = place.start(&spec);
    let state = supervisor.status().unwrap();
    assert_eq!((state.desired, state.restarts, state.supervisor_pid), (Desired::Running, 0, supervisor.pid()));
    let service = state.service_pid.expect("the service runs");
    assert!(running(service) && service != supervisor.pid());

    let output = wait_for("the service's output", || Some(place.output()).filter(|o| o.contains("ready\n")));
    assert!(output.contains("port=18080 greeting=hello there service=web\n"), "{output}");
    assert!(output.contains("from the release\n") && output.contains("to-stderr\n"), "{output}");
    // The environment is the spec's and Drover's, never this process's.
    let env = std::fs::read_to_string(place.release().join("env.txt")).unwrap();
    let names: BTreeSet<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    let allowed = ["PATH", "HOME", "LANG", "GREETING", "PORT", "DROVER_SERVICE", "PWD", "SHLVL", "_", "OLDPWD"];
    let foreign: Vec<&&str> = names.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(foreign.is_empty(), "variables that are not the service's: {foreign:?}\n{env}");
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some() && !env.contains("CARGO"), "{env}");
    assert!(env.contains(&format!("PWD={}\n", std::fs::canonicalize(place.release()).unwrap().display())), "{env}");

    // The supervisor is in a session of its own, apart from this process.
    let session = |pid: i32| -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat.rsplit_once(')').unwrap().1.split_whitespace().nth(3).unwrap().to_string()
    };
    assert_ne!(session(supervisor.pid()), session(std::process::id() as i32));

    // A second supervisor for the same state dir is refused.
    let err = Supervisor::start_with(&launch(), &spec, &place.state_dir()).unwrap_err();
    assert!(matches!(err, SuperviseError::AlreadyRunning { pid, .. } if pid == supervisor.pid()), "{err:?}");

    let state = stop_and_check_nothing_is_left(&supervisor, Duration::from_secs(5));
    assert_eq!(state.last_exit.unwrap().signal, Some(libc::SIGTERM));
    assert!(place.output().contains("ready\n"), "the output stays readable after the stop");
}

#[test]
fn a_crashing_supervised_service_is_restarted_with_growing_gaps() {
    let place = Place::new("crash");
    let supervisor = place.start(&place.spec("echo crashing; exit 1"));
    let state =
        wait_for("four restarts", || supervisor.status().ok().filter(|s| s.restarts >= 4 && s.recent_exits.len() >= 4));
    let exits = &state.recent_exits;
    assert!(exits.iter().all(|e| e.code == Some(1) && e.signal.is_none()), "{exits:?}");
    // The gap before each start is at least its delay, and the delays
    // double: 100, 200, 400 ms. Only lower bounds, and a generous upper one.
    let gaps: Vec<u64> = exits.windows(2).map(|w| w[1].started_ms.saturating_sub(w[0].ended_ms)).collect();
    let first = RESTART_DELAY_FIRST.as_millis() as u64;
    for (i, gap) in gaps.iter().take(3).enumerate() {
        let delay = first << i;
        assert!(*gap + 2 >= delay && *gap < delay + 5_000, "gap {i} is {gap} ms, the delay {delay} ms: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "the gaps grow: {gaps:?}");
    // Each run's output is kept (copied as it comes, so waited for).
    wait_for("each run's output", || (place.output().matches("crashing\n").count() >= 4).then_some(()));
    // Stopped while it waits to restart.
    stop_and_check_nothing_is_left(&supervisor, Duration::from_secs(1));
}

/// Not a test of its own: the "agent" of
/// [`supervised_services_outlive_their_agent_and_are_adopted`], run as a child of
/// the test. It starts a supervisor and waits to be killed.
#[test]
fn supervise_agent_helper() {
    let Some(root) = std::env::var_os("DROVER_TEST_SUPERVISE_AGENT") else { return };
    let place = Place { root: PathBuf::from(root) };
    let spec = place.spec("while true; do echo tick; sleep 0.05; done");
    Supervisor::start_with(&launch(), &spec, &place.state_dir()).unwrap();
    // Its supervisor must not be stopped when this "agent" goes.
    std::mem::forget(place);
    // Until killed; or, should the test fail first, until it drops this
    // end of the pipe.
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

#[test]
fn supervised_services_outlive_their_agent_and_are_adopted() {
    let place = Place::new("adopt");
    let mut agent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervise::supervise_agent_helper", "--nocapture", "--test-threads=1"])
        .env("DROVER_TEST_SUPERVISE_AGENT", &place.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let agent_pid = agent.id() as i32;
    let state = wait_for("the agent to start the service", || {
        read_state(&place.state_dir()).ok().filter(|s| s.service_pid.is_some())
    });
    // The whole group of the agent, SIGKILLed: as a crash, an OOM kill or
    // a terminal's process group would take it.
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(-agent_pid, libc::SIGKILL) }, 0);
    agent.wait().unwrap();
    assert!(group(agent_pid).is_empty(), "the agent's group is gone");

    let (supervisor, adopted) = match Supervisor::adopt(&place.state_dir()).unwrap() {
        Adopted::Live(supervisor, state) => (supervisor, state),
        Adopted::Stale { reason, .. } => panic!("not adopted: {reason}"),
    };
    assert_eq!(supervisor.pid(), state.supervisor_pid);
    let service = adopted.service_pid.unwrap();
    assert!(running(supervisor.pid()) && running(service));
    // Still running, and still writing, after the agent died.
    let ticks = place.output().matches("tick").count();
    wait_for("more output", || (place.output().matches("tick").count() > ticks + 3).then_some(()));
    assert!(String::from_utf8_lossy(&supervisor.output_tail(64).unwrap()).contains("tick"));
    assert_eq!(supervisor.status().unwrap().restarts, 0);
    stop_and_check_nothing_is_left(&supervisor, Duration::from_secs(5));
}

#[test]
fn supervise_never_adopts_a_stale_state_or_a_reused_pid() {
    let place = Place::new("stale");
    let supervisor = place.start(&place.spec("exec sleep 1000"));
    let state = supervisor.status().unwrap();
    let service = state.service_pid.unwrap();

    // Another live supervisor's state copied here: its pid and start time
    // are right, but its command line names another state dir.
    let other = Place::new("stale-other");
    let other_supervisor = other.start(&other.spec("exec sleep 1000"));
    let elsewhere = std::fs::read(other.state_dir().join(STATE_FILE)).unwrap();
    let forged = place.root.join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(forged.join(STATE_FILE), &elsewhere).unwrap();
    match Supervisor::adopt(&forged).unwrap() {
        Adopted::Stale { reason: StaleReason::Reused { cmdline }, .. } => {
            assert!(cmdline.contains("--supervise") && cmdline.contains("stale-other"), "{cmdline}")
        }
        other => panic!("adopted another dir's supervisor: {other:?}"),
    }
    stop_and_check_nothing_is_left(&other_supervisor, Duration::from_secs(5));

    // A pid reused by an unrelated process, even with its own start time.
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = sleeper.id() as i32;
    let mut reused = state.clone();
    reused.supervisor_pid = pid;
    reused.supervisor_start_ticks = start_ticks(pid);
    std::fs::write(forged.join(STATE_FILE), serde_json::to_vec(&reused).unwrap()).unwrap();
    assert!(matches!(Supervisor::adopt(&forged).unwrap(), Adopted::Stale { reason: StaleReason::Reused { .. }, .. }));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    // The supervisor killed outright: its service goes with it (its
    // parent-death signal), and the state is stale, never adopted.
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(supervisor.pid(), libc::SIGKILL) }, 0);
    wait_for("the supervisor and its service to be gone", || {
        (!running(supervisor.pid()) && !running(service)).then_some(())
    });
    match Supervisor::adopt(&place.state_dir()).unwrap() {
        Adopted::Stale { reason: StaleReason::Gone, state: last, .. } => assert_eq!(last.service_pid, Some(service)),
        other => panic!("adopted a dead supervisor: {other:?}"),
    }
    let err = supervisor.status().unwrap_err();
    assert!(
        err.to_string().contains("is not running: no such process runs any more; start the service again"),
        "{err}"
    );
    assert!(matches!(supervisor.stop(Duration::ZERO), Err(SuperviseError::Gone { .. })));
    // And a fresh start on the stale dir works.
    let again = place.start(&place.spec("exec sleep 1000"));
    stop_and_check_nothing_is_left(&again, Duration::from_secs(5));
}

#[test]
fn a_supervised_service_that_ignores_sigterm_is_killed_after_the_grace() {
    let place = Place::new("grace");
    // The trap is inherited by sleep: SIGTERM reaches neither.
    let supervisor = place.start(&place.spec("trap '' TERM; sleep 1000 & sleep 1000; wait"));
    wait_for("both sleeps", || {
        let pgid = supervisor.status().ok()?.service_pid?;
        (group(pgid).len() >= 3).then_some(())
    });
    let started = Instant::now();
    let grace = Duration::from_millis(300);
    let state = stop_and_check_nothing_is_left(&supervisor, grace);
    assert!(started.elapsed() >= grace, "stopped after {:?}", started.elapsed());
    assert_eq!(state.last_exit.unwrap().signal, Some(libc::SIGKILL));
}

#[test]
fn the_supervised_output_log_is_capped_and_rotated() {
    let place = Place::new("rotate");
    let mut spec = place.spec("for i in $(seq 1 2000); do echo \"line $i of the output\"; done; exec sleep 1000");
    spec.output_cap = 4096;
    let supervisor = place.start(&spec);
    wait_for("the last line", || place.output().contains("line 2000 of").then_some(()));
    let size = |name: &str| std::fs::metadata(place.state_dir().join(name)).unwrap().len();
    assert!(
        size(OUTPUT_FILE) <= 4096 && size(OUTPUT_OLD_FILE) == 4096,
        "{} {}",
        size(OUTPUT_FILE),
        size(OUTPUT_OLD_FILE)
    );
    // The tail reads across the rotation, in order.
    let tail = String::from_utf8(supervisor.output_tail(6000).unwrap()).unwrap();
    let numbers: Vec<u32> =
        tail.lines().filter_map(|l| l.strip_prefix("line ")?.strip_suffix(" of the output")?.parse().ok()).collect();
    assert!(numbers.len() > 200 && numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert_eq!(numbers.last(), Some(&2000));
    assert!(!place.output().contains("line 1 of"), "the oldest output went");
    stop_and_check_nothing_is_left(&supervisor, Duration::from_secs(5));
}

#[test]
fn supervise_refuses_a_missing_release_directory_before_anything_starts() {
    let place = Place::new("norelease");
    let spec = ServiceSpec::new("web", "true", place.root.join("nope"), 1);
    let err = Supervisor::start_with(&launch(), &spec, &place.state_dir()).unwrap_err();
    assert!(err.to_string().contains("install the release first"), "{err}");
    assert!(!Path::new(&place.state_dir()).exists());
}

#[test]
fn a_supervised_service_runs_as_the_run_as_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can run a service as another user");
        return;
    }
    let place = Place::new("runas");
    let mut spec = place.spec("echo \"uid=$(id -u) gid=$(id -g) home=$HOME\"; exec sleep 1000");
    let user = drover_agent::runas::lookup("nobody").unwrap();
    let want = format!("uid={} gid={} home={}\n", user.uid, user.gid, user.home.display());
    spec.user = Some(user);
    let supervisor = place.start(&spec);
    let output = wait_for("the service's ids", || Some(place.output()).filter(|o| o.contains("home=")));
    assert!(output.contains(&want), "{output}");
    // The supervisor itself stays the agent's user (it must signal and
    // write the state dir, which the service cannot read).
    let uid_of = |pid: i32| -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(uid_of(supervisor.pid()), "0");
    stop_and_check_nothing_is_left(&supervisor, Duration::from_secs(5));
}

/// Not a test of its own: the "agent" of
/// [`a_service_proxy_outlives_its_agent_and_is_adopted`], run as a child of
/// the test. It starts a service's proxy process (its listen address and
/// backend in the environment) and waits to be killed.
#[test]
fn proxy_agent_helper() {
    let Some(root) = std::env::var_os("DROVER_TEST_PROXY_AGENT") else { return };
    let addr = |var: &str| std::env::var(var).unwrap().parse::<std::net::SocketAddr>().unwrap();
    let dir = PathBuf::from(root).join("proxy");
    ServiceProxy::start(&launch(), &dir, addr("DROVER_TEST_LISTEN"), addr("DROVER_TEST_BACKEND")).unwrap();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

/// A backend that answers every connection with `name` and closes it.
fn backend(name: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, name.as_bytes());
        }
    });
    addr
}

/// What `addr` answers, or None when nothing does.
fn answer(addr: std::net::SocketAddr) -> Option<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).ok()?;
    Some(text)
}

#[test]
fn a_service_proxy_outlives_its_agent_and_is_adopted() {
    let place = Place::new("proxy");
    let dir = place.root.join("proxy");
    let (blue, green) = (backend("blue"), backend("green"));
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut agent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervise::proxy_agent_helper", "--nocapture", "--test-threads=1"])
        .env("DROVER_TEST_PROXY_AGENT", &place.root)
        .env("DROVER_TEST_LISTEN", listen.to_string())
        .env("DROVER_TEST_BACKEND", blue.to_string())
        .env("DROVER_WORKSPACE", place.root.join("ws"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let agent_pid = agent.id() as i32;
    let state = wait_for("the agent to start the proxy", || proxy::process::read_state(&dir).ok().flatten());
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(-agent_pid, libc::SIGKILL) }, 0);
    agent.wait().unwrap();
    assert!(group(agent_pid).is_empty(), "the agent's group is gone");

    // The port answers with no agent, through the same process.
    assert_eq!(answer(listen).as_deref(), Some("blue"));
    let (proxy, adopted) = ServiceProxy::adopt(&dir).unwrap().expect("a live proxy to adopt");
    assert_eq!((proxy.pid(), adopted.listen, adopted.backend), (state.pid, listen, blue));
    // Its environment is cleared: nothing of the agent's (no
    // DROVER_WORKSPACE, which would make it a leftover step).
    let environ = std::fs::read(format!("/proc/{}/environ", proxy.pid())).unwrap();
    assert_eq!(String::from_utf8_lossy(&environ), "NO_COLOR=1\0");

    // Adopted, it switches: new connections go to green, and blue drains.
    assert_eq!(proxy.switch(green).unwrap(), blue);
    assert_eq!(answer(listen).as_deref(), Some("green"));
    assert_eq!(proxy.drain(blue, Duration::from_secs(5)), 0);
    // Its counts reach state.json within a tick.
    let state = wait_for("both connections counted", || proxy.state().ok().filter(|s| s.connections_total >= 2));
    assert!(state.generation > adopted.generation && state.active_on(blue) == 0, "{state:?}");

    // A connection left on an old backend holds its drain until it is cut.
    let hold = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().flatten().collect();
            drop(held);
        });
        addr
    };
    proxy.switch(hold).unwrap();
    let mut client = std::net::TcpStream::connect(listen).unwrap();
    wait_for("the held connection counted", || proxy.state().ok().filter(|s| s.active_on(hold) == 1));
    assert_eq!(proxy.switch(green).unwrap(), hold);
    assert_eq!(proxy.drain(hold, Duration::from_millis(300)), 1, "it stays open");
    proxy.cut_old().unwrap();
    assert_eq!(proxy.drain(hold, Duration::from_secs(5)), 0);
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(std::io::Read::read(&mut client, &mut [0u8; 8]).unwrap(), 0, "cut: the client reads the end");
    assert_eq!(answer(listen).as_deref(), Some("green"));

    // Stopped, it frees the port and is not adopted again.
    proxy.stop().unwrap();
    assert!(!running(proxy.pid()));
    std::net::TcpListener::bind(listen).expect("the port is free");
    assert!(ServiceProxy::adopt(&dir).unwrap().is_none());
    assert!(proxy::process::stopped_on_purpose(&dir));
}
