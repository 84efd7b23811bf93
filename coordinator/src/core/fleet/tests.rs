//! Table tests of the fleet's core: each case plays a script of calls on a
//! fresh fleet with one agent, `a1`, and checks the effects of the last
//! call, rendered as short lines, with the agent's free slots after it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::core::fleet::{AttemptEvent, AttemptId, FleetEffect, MAX_SCALED_IDLE, Now, ToAgent, Work};
use crate::core::machine::Outcome;

const TTL: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(10);

/// The refusal of a second process under `a1`'s name (lease TTL 10 s, idle
/// heartbeats every 10 s).
const REFUSED: &str = "refused <- cancel 0/refused/0 (agent \"a1\" is already connected from 10.0.0.1:5000 (another agent process), and its session is live; this session from 10.0.0.2:5000 is refused until that one disconnects or is silent for 20s. Give every agent its own name and certificate (`drover certs issue-agent NAME`))";
const REFUSED_CARRIED: &str = "refused <- cancel 0/refused/0 (agent \"a1\" is already connected from 10.0.0.1:5000 (another agent process), and its session is live; this session from 10.0.0.2:5000 is refused until that one disconnects or is silent for 40s. Give every agent its own name and certificate (`drover certs issue-agent NAME`))";

#[test]
fn attempt_ids_round_trip_and_reject_garbage() {
    let id = AttemptId { run: 12, job: "build.x-1".into(), attempt: 3 };
    assert_eq!(id.to_string(), "12/build.x-1/3");
    assert_eq!(id.to_string().parse::<AttemptId>(), Ok(id));
    for bad in ["", "1/a", "1/a/b", "x/a/1", "1/a/1/2"] {
        assert!(bad.parse::<AttemptId>().is_err(), "{bad:?}");
    }
}

#[test]
fn a_second_agent_process_under_one_name_waits_for_the_first_to_go() {
    let quiet = Duration::from_secs(3);
    let (tx, _rx) = mpsc::channel(1);
    let live = |instance: &str, last_seen_ms: u64| AgentEntry {
        conn: Some((1, tx.clone())),
        last_seen_ms,
        instance: instance.into(),
        peer: "10.0.0.1:5000".into(),
        ..AgentEntry::default()
    };
    let gone = AgentEntry { instance: "a".into(), last_seen_ms: 9_000, ..AgentEntry::default() };
    // (what, entry, new instance, now, accepted)
    let cases: Vec<(&str, AgentEntry, &str, u64, bool)> = vec![
        ("first session", AgentEntry::default(), "a", 10_000, true),
        ("the same process reconnects", live("a", 9_000), "a", 10_000, true),
        ("another process while the first is live", live("a", 9_000), "b", 10_000, false),
        ("another process, the first heard from just now", live("a", 10_000), "b", 10_000, false),
        ("another process after the first went quiet for long enough", live("a", 7_000), "b", 10_000, true),
        ("another process after the first disconnected", gone, "b", 10_000, true),
        ("an agent without instance ids replaces as before", live("a", 9_000), "", 10_000, true),
        ("after an agent without instance ids", live("", 9_000), "b", 10_000, true),
    ];
    for (what, entry, instance, now, accepted) in cases {
        let got = session_conflict(&entry, "a1", instance, "10.0.0.2:6000", now, quiet);
        assert_eq!(got.is_ok(), accepted, "{what}: {got:?}");
        if let Err(why) = got {
            assert!(why.contains("already connected from 10.0.0.1:5000"), "{what}: {why}");
            assert!(why.contains("this session from 10.0.0.2:6000 is refused"), "{what}: {why}");
        }
    }
}

/// One call on the fleet, at a time in milliseconds from the script's start.
#[derive(Clone)]
enum Call {
    /// A Hello from agent process `instance` on connection `conn`, listing
    /// what it holds; `carried` when a follower carries the session.
    Hello {
        at: u64,
        conn: u64,
        instance: &'static str,
        running: &'static [&'static str],
        carried: bool,
    },
    Heartbeat {
        at: u64,
        conn: u64,
        running: &'static [&'static str],
        draining: bool,
        unready: &'static str,
    },
    Accepted {
        at: u64,
        conn: u64,
        id: &'static str,
    },
    Report {
        conn: u64,
        id: &'static str,
    },
    Gone {
        at: u64,
        conn: u64,
    },
    Assign {
        at: u64,
        id: &'static str,
    },
    Cancel {
        id: &'static str,
    },
    Release {
        id: &'static str,
    },
    Refuse {
        id: &'static str,
    },
    Expire {
        at: u64,
    },
    Revoked {
        at: u64,
        conn: u64,
    },
    Stall {
        ms: u64,
    },
}
use Call::*;

fn hello(at: u64, conn: u64) -> Call {
    Hello { at, conn, instance: "i1", running: &[], carried: false }
}
fn beat(at: u64, running: &'static [&'static str]) -> Call {
    Heartbeat { at, conn: 1, running, draining: false, unready: "" }
}

fn id(s: &str) -> AttemptId {
    s.parse().unwrap()
}

fn render(fx: &[FleetEffect]) -> Vec<String> {
    fx.iter()
        .map(|e| match e {
            FleetEffect::Send(agent, msg) => match msg {
                ToAgent::Welcome { idle_heartbeat, .. } if *idle_heartbeat != IDLE => {
                    format!("{agent} <- welcome (idle heartbeat {idle_heartbeat:?})")
                }
                ToAgent::Welcome { .. } => format!("{agent} <- welcome"),
                ToAgent::Assign(a) => format!("{agent} <- assign {}", a.id),
                ToAgent::Cancel { id, reason, disown } => {
                    format!("{agent} <- cancel {id}{} ({reason})", if *disown { " disown" } else { "" })
                }
                ToAgent::ResultAck { id, accepted } => format!("{agent} <- result-ack {id} {accepted}"),
                other => format!("{agent} <- {other:?}"),
            },
            FleetEffect::Owner(AttemptEvent::Accepted(id)) => format!("owner: {id} accepted"),
            FleetEffect::Owner(AttemptEvent::Finished(id, outcome)) => format!("owner: {id} finished {outcome:?}"),
            FleetEffect::Owner(AttemptEvent::Lost(id, why)) => format!("owner: {id} lost ({why})"),
            FleetEffect::Owner(AttemptEvent::NotStarted(id, why)) => format!("owner: {id} not started ({why})"),
            FleetEffect::Resend(agent, id) => format!("resend {id} to {agent}"),
            FleetEffect::PersistAgent(name, r) => format!("persist {name} ({} slots)", r.slots),
            FleetEffect::Changed { connected } => format!("changed {connected:+}"),
            FleetEffect::Dispatch => "dispatch".to_string(),
        })
        .collect()
}

/// The fleet's configuration in these tests: lease TTL 10 s, idle
/// heartbeats every 10 s, epoch 7.
fn config() -> FleetConfig {
    FleetConfig {
        lease_ttl: TTL,
        heartbeat: Duration::from_millis(2500),
        idle_heartbeat: IDLE,
        ack_timeout: Duration::from_secs(5),
        epoch: 7,
    }
}

/// Plays `calls` on a fresh fleet; returns the last call's effects and
/// `a1`'s free slots after it.
fn play(calls: &[Call]) -> (Vec<String>, u32) {
    let mut fleet = Fleet::new(config());
    let start = Instant::now();
    let now = |at: u64| Now { at: start + Duration::from_millis(at), ms: 1_000_000 + at };
    let mut last = Vec::new();
    let mut txs = Vec::new();
    for (n, call) in calls.iter().enumerate() {
        last = match call.clone() {
            Hello { at, conn, instance, running, carried } => {
                let (tx, rx) = mpsc::channel(8);
                txs.push(rx);
                let running: Vec<AttemptId> = running.iter().map(|s| id(s)).collect();
                let labels = BTreeMap::from([("os".to_string(), "linux".to_string())]);
                let peer = format!("10.0.0.{conn}:5000");
                match fleet.hello(
                    conn,
                    "a1",
                    labels,
                    2,
                    &running,
                    false,
                    String::new(),
                    instance.into(),
                    peer,
                    carried,
                    tx,
                    now(at),
                ) {
                    Ok(fx) => fx,
                    Err(why) => vec![FleetEffect::Send(
                        "refused".into(),
                        ToAgent::Cancel { id: id("0/refused/0"), reason: why, disown: false },
                    )],
                }
            }
            Heartbeat { at, conn, running, draining, unready } => {
                let running: Vec<AttemptId> = running.iter().map(|s| id(s)).collect();
                fleet.heartbeat(conn, "a1", &running, draining, unready.into(), now(at).at, now(at))
            }
            Accepted { at, conn, id: attempt } => fleet.accepted(conn, "a1", id(attempt), now(at)),
            Report { conn, id: attempt } => {
                fleet.result(conn, "a1", id(attempt), Outcome::Succeeded { artifact: None, cache: None }, "")
            }
            Gone { at, conn } => fleet.gone(conn, "a1", now(at)),
            Revoked { at, conn } => fleet.revoked(conn, "a1", "revoked by admin:root", now(at)),
            Assign { at, id: attempt } => {
                let work = Work::Job {
                    steps: vec![],
                    env: BTreeMap::new(),
                    timeout: None,
                    checkout: None,
                    artifacts: None,
                    inputs: Vec::new(),
                    secrets: Vec::new(),
                    cache: None,
                    need_results: Vec::new(),
                    branch: None,
                    tag: None,
                    matrix: Vec::new(),
                    event: Default::default(),
                    withhold_secrets: None,
                };
                let assignment = Assignment { id: id(attempt), log_cap: 1, traceparent: None, work };
                vec![fleet.assign("a1".into(), assignment, now(at).at)]
            }
            Cancel { id: attempt } => vec![fleet.cancel("a1".into(), &id(attempt), "run cancelled")],
            Release { id: attempt } => {
                fleet.release(&id(attempt));
                vec![]
            }
            Refuse { id: attempt } => fleet.refuse("a1", id(attempt), "sent a bad chunk"),
            Expire { at } => fleet.expire(now(at).at),
            Stall { ms } => {
                fleet.extend(Duration::from_millis(ms));
                vec![]
            }
        };
        // Dispatch's index of the agents that can take a job follows every
        // call.
        assert!(fleet.index_is_current(), "the free index is stale after call {n} of the script");
    }
    let free = fleet.slots().iter().find(|a| a.name == "a1").map_or(0, |a| a.free);
    (render(&last), free)
}

#[test]
fn the_fleet_keeps_sessions_slots_and_leases() {
    let lost = |why: &str| format!("owner: 1/a/1 lost (agent a1 {why})");
    // (what, calls, the last call's effects, a1's free slots after it)
    let cases: Vec<(&str, Vec<Call>, Vec<String>, u32)> = vec![
        (
            "a first Hello is welcomed, stored and counted",
            vec![hello(0, 1)],
            vec!["persist a1 (2 slots)", "changed +1", "a1 <- welcome", "dispatch"]
                .into_iter()
                .map(String::from)
                .collect(),
            2,
        ),
        (
            "the same process reconnecting replaces its session without counting it again",
            vec![hello(0, 1), hello(100, 2)],
            vec!["persist a1 (2 slots)", "changed +0", "a1 <- welcome", "dispatch"]
                .into_iter()
                .map(String::from)
                .collect(),
            2,
        ),
        (
            "another process under the name is refused while the first is live",
            vec![hello(0, 1), Hello { at: 100, conn: 2, instance: "i2", running: &[], carried: false }],
            vec![REFUSED.to_string()],
            2,
        ),
        (
            "an idle agent, heard from once per idle heartbeat, is live past a lease TTL",
            vec![hello(0, 1), Hello { at: 15_000, conn: 2, instance: "i2", running: &[], carried: false }],
            vec![REFUSED.to_string()],
            2,
        ),
        (
            "silent for a lease TTL and an idle heartbeat, it no longer holds the name",
            vec![hello(0, 1), Hello { at: 20_000, conn: 2, instance: "i2", running: &[], carried: false }],
            vec!["persist a1 (2 slots)", "changed +0", "a1 <- welcome", "dispatch"]
                .into_iter()
                .map(String::from)
                .collect(),
            2,
        ),
        (
            "a carried agent is told to heartbeat three times rarer while idle",
            vec![Hello { at: 0, conn: 1, instance: "i1", running: &[], carried: true }],
            vec!["persist a1 (2 slots)", "changed +1", "a1 <- welcome (idle heartbeat 30s)", "dispatch"]
                .into_iter()
                .map(String::from)
                .collect(),
            2,
        ),
        (
            "so it is live through a lease TTL and three idle periods of silence",
            vec![
                Hello { at: 0, conn: 1, instance: "i1", running: &[], carried: true },
                Hello { at: 39_000, conn: 2, instance: "i2", running: &[], carried: false },
            ],
            vec![REFUSED_CARRIED.to_string()],
            2,
        ),
        (
            "and silent past them, it no longer holds the name",
            vec![
                Hello { at: 0, conn: 1, instance: "i1", running: &[], carried: true },
                Hello { at: 40_000, conn: 2, instance: "i2", running: &[], carried: false },
            ],
            vec!["persist a1 (2 slots)", "changed +0", "a1 <- welcome", "dispatch"]
                .into_iter()
                .map(String::from)
                .collect(),
            2,
        ),
        (
            "a revoked session goes away (no slots offered) and loses every attempt at once",
            vec![
                hello(0, 1),
                Assign { at: 0, id: "1/a/1" },
                Assign { at: 0, id: "2/b/1" },
                Accepted { at: 10, conn: 1, id: "1/a/1" },
                Revoked { at: 20, conn: 1 },
            ],
            vec![
                "persist a1 (2 slots)",
                "changed -1",
                "owner: 1/a/1 lost (agent a1 was revoked: revoked by admin:root)",
                "owner: 2/b/1 lost (agent a1 was revoked: revoked by admin:root)",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            0,
        ),
        (
            "a revocation of a session that was already replaced changes nothing",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, hello(10, 2), Revoked { at: 20, conn: 1 }],
            vec![],
            1,
        ),
        (
            "an assignment takes a slot and is sent",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }],
            vec!["a1 <- assign 1/a/1".to_string()],
            1,
        ),
        (
            "an unconfirmed assignment's lease lapses after a TTL: never started, slot freed",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Expire { at: 9_999 }, Expire { at: 10_000 }],
            vec!["owner: 1/a/1 not started (agent a1 did not confirm it within 10s)".to_string()],
            2,
        ),
        (
            "a confirmed attempt is accepted and renewed from the confirmation",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Accepted { at: 500, conn: 1, id: "1/a/1" }],
            vec!["owner: 1/a/1 accepted".to_string()],
            1,
        ),
        (
            "a running attempt's lease runs a TTL and grace from the last renewal",
            vec![
                hello(0, 1),
                Assign { at: 0, id: "1/a/1" },
                Accepted { at: 0, conn: 1, id: "1/a/1" },
                beat(5_000, &["1/a/1"]),
                Expire { at: 15_999 },
                Expire { at: 16_000 },
            ],
            vec![lost("stopped renewing its lease for 10s")],
            2,
        ),
        (
            "a stalled store adds its stall to every lease",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Stall { ms: 5_000 }, Expire { at: 14_999 }],
            vec![],
            1,
        ),
        (
            "a heartbeat naming an attempt that is not the agent's disowns it",
            vec![hello(0, 1), beat(100, &["9/x/1"])],
            vec![
                "a1 <- cancel 9/x/1 disown (this attempt is no longer yours: it was lost or retried elsewhere)"
                    .to_string(),
            ],
            2,
        ),
        (
            "events from an older session are ignored",
            vec![hello(0, 1), hello(10, 2), Assign { at: 20, id: "1/a/1" }, Accepted { at: 30, conn: 1, id: "1/a/1" }],
            vec![],
            1,
        ),
        (
            "draining and readiness change wait reasons; becoming ready again dispatches",
            vec![
                hello(0, 1),
                Heartbeat { at: 10, conn: 1, running: &[], draining: false, unready: "low disk" },
                Heartbeat { at: 20, conn: 1, running: &[], draining: true, unready: "" },
            ],
            vec!["changed +0", "dispatch", "changed +0"].into_iter().map(String::from).collect(),
            2,
        ),
        (
            "a result for a held attempt goes to its owner and is acknowledged",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Report { conn: 1, id: "1/a/1" }],
            vec!["owner: 1/a/1 finished Succeeded { artifact: None, cache: None }", "a1 <- result-ack 1/a/1 true"]
                .into_iter()
                .map(String::from)
                .collect(),
            1,
        ),
        (
            "the slot is free once the owner releases the attempt; a late result is refused",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Release { id: "1/a/1" }, Report { conn: 1, id: "1/a/1" }],
            vec!["a1 <- result-ack 1/a/1 false".to_string()],
            2,
        ),
        (
            "a bad message ends its attempt as lost and disowns it",
            vec![hello(0, 1), Assign { at: 0, id: "1/a/1" }, Refuse { id: "1/a/1" }],
            vec![
                "a1 <- cancel 1/a/1 disown (agent a1 sent a bad chunk)".to_string(),
                "owner: 1/a/1 lost (agent a1 sent a bad chunk)".to_string(),
            ],
            1,
        ),
        (
            "a reconnect re-attaches what the agent holds, resends what it never got, loses what it lost",
            vec![
                hello(0, 1),
                Assign { at: 0, id: "1/a/1" },
                Accepted { at: 10, conn: 1, id: "1/a/1" },
                Assign { at: 20, id: "1/b/1" },
                Assign { at: 20, id: "2/c/1" },
                Accepted { at: 30, conn: 1, id: "2/c/1" },
                Hello { at: 100, conn: 2, instance: "i1", running: &["2/c/1", "3/z/1"], carried: false },
            ],
            vec![
                "persist a1 (2 slots)",
                "changed +0",
                "a1 <- welcome",
                "owner: 2/c/1 accepted",
                "a1 <- cancel 3/z/1 disown (this attempt is no longer yours: it was lost or retried elsewhere)",
                "owner: 1/a/1 lost (agent a1 reconnected without it)",
                "resend 1/b/1 to a1",
                "dispatch",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            0,
        ),
        (
            "a reconnect still holding a cancelled attempt hears the cancel again",
            vec![
                hello(0, 1),
                Assign { at: 0, id: "1/a/1" },
                Cancel { id: "1/a/1" },
                Hello { at: 100, conn: 2, instance: "i1", running: &["1/a/1"], carried: false },
            ],
            vec![
                "persist a1 (2 slots)",
                "changed +0",
                "a1 <- welcome",
                "a1 <- cancel 1/a/1 (run cancelled)",
                "owner: 1/a/1 accepted",
                "dispatch",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            1,
        ),
        (
            "a session that ends is stored as away and uncounted",
            vec![hello(0, 1), Gone { at: 50, conn: 1 }],
            vec!["persist a1 (2 slots)", "changed -1"].into_iter().map(String::from).collect(),
            0,
        ),
        ("an older session's end is ignored", vec![hello(0, 1), hello(10, 2), Gone { at: 50, conn: 1 }], vec![], 2),
    ];
    for (what, calls, want, free) in cases {
        let (got, got_free) = play(&calls);
        assert_eq!(got, want, "{what}");
        assert_eq!(got_free, free, "{what}: free slots");
    }
}

#[test]
fn the_idle_period_grows_with_the_fleet_up_to_a_ceiling() {
    let s = Duration::from_secs;
    // (case, the configured period, connected agents, carried, period told)
    let cases = [
        ("one agent: the lease TTL", s(10), 1, false, s(10)),
        ("a thousand agents: still the lease TTL", s(10), 1_000, false, s(10)),
        ("2,500 agents: 100 heartbeats a second", s(10), 2_500, false, s(25)),
        ("10,000 agents: the ceiling", s(10), 10_000, false, s(30)),
        ("a lease TTL over the ceiling is kept", s(60), 10_000, false, s(60)),
        ("carried: three times", s(10), 1, true, s(30)),
        ("carried in a big fleet: three times the ceiling", s(10), 10_000, true, s(90)),
    ];
    for (case, base, connected, carried, want) in cases {
        assert_eq!(idle_period(base, connected, carried), want, "{case}");
    }
    assert_eq!(MAX_SCALED_IDLE, s(30));
}

#[test]
fn a_session_is_told_the_idle_period_of_the_fleet_it_joins() {
    let mut fleet = Fleet::new(config());
    let start = Instant::now();
    let mut rxs = Vec::new();
    let mut hello = |fleet: &mut Fleet, n: usize, conn: u64| {
        let (tx, rx) = mpsc::channel(8);
        rxs.push(rx);
        let now = Now { at: start, ms: 1_000_000 };
        let (name, peer) = (format!("a{n}"), format!("10.0.0.1:{n}"));
        let fx = fleet
            .hello(conn, &name, BTreeMap::new(), 1, &[], false, String::new(), name.clone(), peer, false, tx, now)
            .expect("welcomed");
        fx.iter()
            .find_map(|e| match e {
                FleetEffect::Send(_, ToAgent::Welcome { idle_heartbeat, .. }) => Some(*idle_heartbeat),
                _ => None,
            })
            .expect("a welcome")
    };
    let periods: Vec<Duration> = (1..=2_000).map(|n| hello(&mut fleet, n, 1)).collect();
    assert_eq!(periods[0], IDLE, "the first agent");
    assert_eq!(periods[999], IDLE, "the thousandth");
    assert_eq!(periods[1_499], Duration::from_secs(15), "the 1,500th");
    assert_eq!(periods[1_999], Duration::from_secs(20), "the 2,000th");
    // A reconnect is not a second agent.
    assert_eq!(hello(&mut fleet, 2_000, 2), Duration::from_secs(20), "a reconnect of the 2,000th");

    // A session told a shorter period than the fleet's size now gives is
    // told the longer one at its next heartbeat, once.
    let now = Now { at: start, ms: 1_000_000 };
    let none: [Duration; 0] = [];
    let beat = |fleet: &mut Fleet, n: usize, conn: u64| -> Vec<Duration> {
        let fx = fleet.heartbeat(conn, &format!("a{n}"), &[], false, String::new(), start, now);
        fx.iter()
            .filter_map(|e| match e {
                FleetEffect::Send(_, ToAgent::IdlePeriod { idle_heartbeat }) => Some(*idle_heartbeat),
                _ => None,
            })
            .collect()
    };
    assert_eq!(beat(&mut fleet, 1, 1), [Duration::from_secs(20)], "the first agent, in a fleet of 2,000");
    assert_eq!(beat(&mut fleet, 1, 1), none, "told once");
    assert_eq!(beat(&mut fleet, 2_000, 2), none, "the 2,000th was told 20 s at its Hello");
    // The name's quiet window counts from the longer period: silent for a
    // lease TTL and 15 s, the first agent still holds its name.
    let (tx, _rx) = mpsc::channel(8);
    let later = Now { at: start + Duration::from_secs(25), ms: 1_025_000 };
    let (instance, peer) = ("another".to_string(), "10.0.0.2:1".to_string());
    let refused = fleet.hello(9, "a1", BTreeMap::new(), 1, &[], false, String::new(), instance, peer, false, tx, later);
    assert!(refused.is_err_and(|why| why.contains("silent for 30s")), "the first agent's name is still taken");

    // Those that go no longer count, and a fleet that shrinks tells no
    // session a shorter period.
    for n in 1..=1_001 {
        assert!(!fleet.gone(1, &format!("a{n}"), now).is_empty(), "a{n} goes");
    }
    assert_eq!(beat(&mut fleet, 1_500, 1), none, "a fleet of 999 tells the 1,500th nothing");
    assert_eq!(hello(&mut fleet, 1, 3), IDLE, "the first agent again, in a fleet of 1,000");
}
