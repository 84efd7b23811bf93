//! The health rule as a table, and the probes against real listeners and
//! real processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::TcpListener;

use super::*;

fn policy(healthy_after: u32, unhealthy_after: u32) -> Policy {
    Policy { interval: Duration::from_millis(20), timeout: Duration::from_secs(2), healthy_after, unhealthy_after }
}

#[test]
fn results_in_a_row_decide_and_flapping_decides_nothing() {
    use Health::*;
    // (case, healthy_after, unhealthy_after, results, transitions, final health)
    type Case = (&'static str, u32, u32, &'static [bool], Vec<Health>, Health);
    let cases: Vec<Case> = vec![
        ("three passes make it healthy", 3, 3, &[true, true, true], vec![Healthy], Healthy),
        ("two are not enough", 3, 3, &[true, true], vec![], Unknown),
        ("a failure starts the count again", 3, 3, &[true, true, false, true, true], vec![], Unknown),
        ("flapping never decides", 2, 2, &[true, false, true, false, true, false, true, false], vec![], Unknown),
        ("failures in a row make it unhealthy", 3, 2, &[false, false], vec![Unhealthy], Unhealthy),
        (
            "healthy, then down, then back",
            1,
            2,
            &[true, false, false, true],
            vec![Healthy, Unhealthy, Healthy],
            Healthy,
        ),
        (
            "a healthy service that flaps stays healthy",
            2,
            2,
            &[true, true, false, true, false, true],
            vec![Healthy],
            Healthy,
        ),
    ];
    for (case, up, down, results, transitions, end) in cases {
        let mut t = Tracker::new(policy(up, down));
        let seen: Vec<Health> = results.iter().filter_map(|r| t.observe(*r)).collect();
        assert_eq!((seen, t.health()), (transitions, end), "{case}");
    }
}

/// An HTTP server on port 0 that answers each request with the status the
/// closure picks (given the request's number, from 0).
async fn http_server(status: impl Fn(u32) -> u16 + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU32::new(0));
    let status = Arc::new(status);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let code = status(n);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// Whether process `pid` runs (a zombie has ended).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| crate::leftovers::parse_stat(&stat))
        .is_some_and(|(state, _)| state != 'Z')
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn probes_pass_and_fail_as_the_service_answers() {
    let ok = http_server(|_| 200).await;
    let redirect = http_server(|_| 302).await;
    let broken = http_server(|_| 503).await;
    let down = closed_port().await;
    let dir = std::env::temp_dir();
    let exec = |command: &str| Probe::Exec {
        command: command.into(),
        dir: dir.clone(),
        env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        port: 8080,
        user: None,
    };
    // (case, probe, passes, what a failure says)
    let cases: Vec<(&str, Probe, Result<(), &str>)> = vec![
        ("http 200", Probe::Http { port: ok, path: "/healthz".into() }, Ok(())),
        ("http 302", Probe::Http { port: redirect, path: "/".into() }, Ok(())),
        ("http 503", Probe::Http { port: broken, path: "/healthz".into() }, Err("status 503")),
        ("http, nothing listening", Probe::Http { port: down, path: "/".into() }, Err("connect to port")),
        (
            "a path that would split the request",
            Probe::Http { port: ok, path: "/x HTTP/1.1\r\nHost: evil".into() },
            Err("is not a path"),
        ),
        ("tcp, listening", Probe::Tcp { port: ok }, Ok(())),
        ("tcp, nothing listening", Probe::Tcp { port: down }, Err("connect to port")),
        ("exec, exit 0, with its env and PORT", exec("test \"$GREETING:$PORT\" = hi:8080"), Ok(())),
        ("exec, exit 3", exec("exit 3"), Err("exited with 3")),
        ("exec sees none of the agent's environment", exec("test -z \"$HOME\""), Ok(())),
    ];
    for (case, p, want) in cases {
        let got = probe(&p, Duration::from_secs(5)).await;
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(part)) => assert!(e.contains(part), "{case}: {e}"),
            (got, want) => panic!("{case}: {got:?}, wanted {want:?}"),
        }
    }
}

#[tokio::test]
async fn a_probe_past_its_timeout_fails_and_its_processes_are_killed() {
    let marker = std::env::temp_dir().join(format!("drover-health-timeout-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let p = Probe::Exec {
        command: format!("sleep 30 & echo $! > {}; wait", marker.display()),
        dir: std::env::temp_dir(),
        env: BTreeMap::new(),
        port: 1,
        user: None,
    };
    let err = probe(&p, Duration::from_millis(500)).await.unwrap_err();
    assert!(err.contains("no answer within"), "{err}");
    let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    // The group was killed: the sleep it started goes too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "the probe's child {pid} outlived its timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&marker);
}

#[tokio::test]
async fn the_gate_waits_for_passes_in_a_row_and_a_flapping_service_fails_it_at_its_deadline() {
    // Fails twice, then passes: healthy after three passes in a row.
    let warming = http_server(|n| if n < 2 { 503 } else { 200 }).await;
    let took = until_healthy(&Probe::Http { port: warming, path: "/".into() }, policy(3, 3), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(took >= Duration::from_millis(80), "at least four intervals: {took:?}");

    // Flaps: never three in a row, so never healthy; the deadline decides.
    let flapping = http_server(|n| if n % 2 == 0 { 200 } else { 500 }).await;
    let err =
        until_healthy(&Probe::Http { port: flapping, path: "/".into() }, policy(3, 3), Duration::from_millis(400))
            .await
            .unwrap_err();
    assert!(err.contains("not healthy within") && err.contains("status 500"), "{err}");
}
