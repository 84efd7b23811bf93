//! The pure parts of supervision, in process: the restart delays, the
//! output's cap and tail, `/proc` parsing and the identity check, what a
//! spec may hold. The supervisor process itself is tested through the
//! built binary in `agent/tests/supervise.rs`.

use super::state::{is_supervisor_cmdline, parse_start};
use super::*;

use crate::test_dir::TestDir as Dir;

#[test]
fn restart_delays_double_to_the_cap_and_start_over_after_a_stable_run() {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let mut backoff = Backoff::default();
    // (how long the run lasted, the delay before the next start)
    let cases: &[(Duration, Duration)] = &[
        (ms(0), ms(100)),
        (ms(50), ms(200)),
        (s(1), ms(400)),
        (ms(10), ms(800)),
        (ms(10), ms(1600)),
        (ms(10), ms(3200)),
        (ms(10), ms(6400)),
        (ms(10), ms(12800)),
        (ms(10), ms(25600)),
        (ms(10), s(30)),
        (s(59), s(30)),
        // Up for a minute: recovered.
        (STABLE_AFTER, ms(100)),
        (ms(10), ms(200)),
        (s(3600), ms(100)),
    ];
    for (i, (uptime, want)) in cases.iter().enumerate() {
        assert_eq!(backoff.after_exit(*uptime), *want, "case {i}: after {uptime:?}");
    }
}

#[test]
fn the_output_never_passes_its_cap_and_the_tail_reads_across_the_rotation() {
    let dir = Dir::new("output");
    let cap = output::MIN_OUTPUT_CAP;
    let mut out = output::Output::open(&dir.0, cap).unwrap();
    let mut all = Vec::new();
    for i in 0..1000 {
        let line = format!("line {i:04} {}\n", "x".repeat(i % 37));
        out.write(line.as_bytes()).unwrap();
        all.extend_from_slice(line.as_bytes());
    }
    // One write bigger than the cap is split across rotations too.
    let big = vec![b'z'; cap as usize * 3 + 17];
    out.write(&big).unwrap();
    all.extend_from_slice(&big);
    let size = |name: &str| std::fs::metadata(dir.0.join(name)).unwrap().len();
    assert!(
        size(OUTPUT_FILE) <= cap && size(OUTPUT_OLD_FILE) <= cap,
        "{} {}",
        size(OUTPUT_FILE),
        size(OUTPUT_OLD_FILE)
    );
    let kept = size(OUTPUT_FILE) + size(OUTPUT_OLD_FILE);
    assert_eq!(output_tail(&dir.0, kept).unwrap(), all[all.len() - kept as usize..], "the tail is the end, in order");
    assert_eq!(output_tail(&dir.0, 10).unwrap(), all[all.len() - 10..]);
    // More than is kept: what is kept.
    assert_eq!(output_tail(&dir.0, u64::MAX).unwrap().len() as u64, kept);
    // A later supervisor appends to what is there.
    drop(out);
    let mut again = output::Output::open(&dir.0, cap).unwrap();
    again.write(b"more\n").unwrap();
    assert!(output_tail(&dir.0, 100).unwrap().ends_with(b"zzzmore\n"));
    let empty = Dir::new("output-empty");
    assert_eq!(output_tail(&empty.0, 100).unwrap(), b"");
}

#[test]
fn proc_stat_gives_the_state_and_start_time() {
    let line = "4242 (bash) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
    assert_eq!(parse_start(line), Some(('S', 987654)));
    let odd = "17 (a) b (c) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
    assert_eq!(parse_start(odd), Some(('Z', 55)));
    assert_eq!(parse_start("1 (x) R 0 1 1"), None);
    assert_eq!(parse_start("garbage"), None);
    // This process: alive, and its start time is stable.
    let me = std::process::id() as i32;
    let (state, ticks) = state::proc_start(me).unwrap();
    assert_ne!(state, 'Z');
    assert_eq!(state::proc_start(me).unwrap().1, ticks);
}

#[test]
fn only_the_supervisor_of_this_very_dir_is_ours() {
    let dir = Path::new("/var/lib/drover/services/web");
    let line = |args: &[&str]| args.iter().flat_map(|a| a.bytes().chain([0])).collect::<Vec<u8>>();
    assert!(is_supervisor_cmdline(&line(&["drover-agent", "--supervise", "/var/lib/drover/services/web"]), dir));
    assert!(is_supervisor_cmdline(
        &line(&["/usr/bin/drover-agent", "--supervise", "/var/lib/drover/services/web"]),
        dir
    ));
    for other in [
        &["drover-agent", "--supervise", "/var/lib/drover/services/api"][..],
        &["drover-agent", "--supervise", "/var/lib/drover/services/web/"],
        &["drover-agent", "--supervise", "/var/lib/drover/services/web", "x"],
        &["drover-agent", "__watch-steps", "text"],
        &["--supervise", "/var/lib/drover/services/web"],
        &["bash", "-c", "drover-agent --supervise /var/lib/drover/services/web"],
        &[],
    ] {
        assert!(!is_supervisor_cmdline(&line(other), dir), "{other:?}");
    }
}

#[test]
fn a_pid_that_is_not_a_supervisor_of_the_dir_is_not_ours() {
    let dir = Path::new("/nonexistent/drover-state");
    let me = std::process::id() as i32;
    let (_, ticks) = state::proc_start(me).unwrap();
    // Alive, the right start time, but the test binary's command line.
    assert!(matches!(state::check_identity(me, ticks, dir), Err(StaleReason::Reused { .. })));
    // The right process had another start time: the pid was reused.
    assert!(matches!(state::check_identity(me, ticks + 1, dir), Err(StaleReason::Reused { .. })));
    // A child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    assert_eq!(state::check_identity(pid, 0, dir), Err(StaleReason::Gone));
}

#[test]
fn a_spec_is_checked_before_anything_starts() {
    let ok = ServiceSpec::new("web", "./app", "/tmp", 8080);
    assert!(ok.check().is_ok());
    let with_env = |key: &str, value: &str| {
        let mut spec = ok.clone();
        spec.env.insert(key.into(), value.into());
        spec.check().map_err(|e| e.to_string())
    };
    assert!(with_env("RUST_LOG", "info").is_ok());
    for (key, value, want) in [
        ("PORT", "1", "env PORT: Drover reserves it"),
        ("DROVER_WORKSPACE", "/w/1-a-1", "env DROVER_WORKSPACE: Drover reserves it"),
        ("DROVER_SERVICE", "x", "env DROVER_SERVICE: Drover reserves it"),
        ("A=B", "1", "a name may not be empty or hold `=` or NUL"),
        ("", "1", "a name may not be empty"),
        ("A", "a\0b", "nor a value NUL"),
    ] {
        let err = with_env(key, value).unwrap_err();
        assert!(err.starts_with("service \"web\": ") && err.contains(want), "{key}: {err}");
    }
    let empty = ServiceSpec::new("web", "  ", "/tmp", 8080);
    assert!(empty.check().unwrap_err().to_string().contains("may not be empty"));
}

#[test]
fn a_state_keeps_its_latest_exits() {
    let mut state = State::new("web".into(), 1, 2);
    for i in 0..25u64 {
        state.service_pid = Some(100 + i as i32);
        state.record_exit(Exit { started_ms: i, ended_ms: i + 1, code: Some(1), signal: None });
    }
    assert_eq!(state.recent_exits.len(), state::RECENT_EXITS);
    assert_eq!(state.recent_exits.first().unwrap().started_ms, 25 - state::RECENT_EXITS as u64);
    assert_eq!(state.last_exit.as_ref().unwrap().started_ms, 24);
    assert_eq!(state.service_pid, None);
    let text = serde_json::to_string(&state).unwrap();
    assert!(text.contains(r#""desired":"running""#), "{text}");
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
}

#[test]
fn a_state_dir_without_a_state_is_not_adopted() {
    let dir = Dir::new("nostate");
    let err = Supervisor::adopt(&dir.0).unwrap_err();
    assert!(matches!(err, SuperviseError::NoState { .. }), "{err:?}");
    assert!(err.to_string().contains("holds no state.json: no supervisor was started there"), "{err}");
    std::fs::write(dir.0.join(STATE_FILE), "{not json").unwrap();
    let err = Supervisor::adopt(&dir.0).unwrap_err().to_string();
    assert!(err.contains("state.json does not read") && err.contains("remove the state dir"), "{err}");
    let missing = Supervisor::adopt(&dir.0.join("nope")).unwrap_err();
    assert!(matches!(missing, SuperviseError::NoState { .. }), "{missing:?}");
}
