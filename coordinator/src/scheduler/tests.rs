//! Table tests of the burst logic, without a runtime or a store: each case
//! plays bursts of events on a fresh [`State`] with a clock of its own, and
//! checks what the last burst staged (records to write, log bytes) and
//! what it would deliver after the commit, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::state::{Outgoing, State};
use super::*;
use crate::core::machine::tests::pipeline;
use crate::core::machine::{Outcome, RunId, Source};

/// One event, as a case writes it. Agent events are agent `a1`'s.
#[derive(Clone)]
enum Ev {
    /// Submit a pipeline of jobs `(name, needs, retries)`.
    Submit(&'static [(&'static str, &'static [&'static str], u32)]),
    Cancel(RunId),
    /// A Hello on connection `conn` from process `instance`, listing what
    /// the agent holds.
    Hello(u64, &'static str, &'static [&'static str]),
    Gone(u64),
    Accepted(&'static str),
    Log(&'static str, u64, usize),
    Done(&'static str, Outcome),
    /// The loop's timer: leases are checked.
    Tick,
}
use Ev::*;

/// A burst: its events at one time, in milliseconds from the start.
type Burst = (u64, Vec<Ev>);

/// Plays `bursts` on a fresh scheduler state, committing (in effect: taking
/// what was staged) after each; returns what the last one staged and would
/// deliver, rendered, and the hello replies it sent.
fn play(bursts: &[Burst]) -> Vec<String> {
    let config = Config { lease_ttl: Duration::from_secs(10), ..Config::default() };
    let mut state = State::new(config);
    let start = Instant::now();
    let mut sessions = Vec::new();
    let mut out = Vec::new();
    for (at, events) in bursts {
        let now = Now { at: start + Duration::from_millis(*at), ms: 1_000_000 + at };
        let mut replies = Vec::new();
        for ev in events.clone() {
            let event = match ev {
                Submit(jobs) => {
                    let (reply, _rx) = oneshot::channel();
                    Event::Submit {
                        pipeline: Box::new(pipeline(jobs)),
                        source: Source::default(),
                        traceparent: None,
                        queue_timeout: None,
                        rerun: None,
                        reply,
                    }
                }
                Cancel(run) => {
                    let (reply, _rx) = oneshot::channel();
                    Event::Cancel { run, reply }
                }
                Hello(conn, instance, running) => {
                    let (tx, rx) = mpsc::channel(8);
                    sessions.push(rx);
                    let (reply, rx) = oneshot::channel();
                    replies.push((conn, rx));
                    Event::AgentHello(AgentHello {
                        conn,
                        name: "a1".into(),
                        labels: BTreeMap::new(),
                        slots: 1,
                        running: running.iter().map(|s| s.parse().expect("an attempt id")).collect(),
                        draining: false,
                        unready: String::new(),
                        caches: Vec::new(),
                        instance: instance.into(),
                        peer: format!("10.0.0.{conn}:5000"),
                        version: String::new(),
                        via: String::new(),
                        tx,
                        reply,
                    })
                }
                Gone(conn) => Event::AgentGone { conn, name: "a1".into() },
                Accepted(id) => {
                    Event::Accepted { conn: conn(&sessions), name: "a1".into(), id: id.parse().expect("an attempt id") }
                }
                Log(id, offset, len) => Event::Log {
                    conn: conn(&sessions),
                    name: "a1".into(),
                    id: id.parse().expect("an attempt id"),
                    offset,
                    data: vec![b'x'; len],
                },
                Done(id, outcome) => Event::Result {
                    conn: conn(&sessions),
                    name: "a1".into(),
                    id: id.parse().expect("an attempt id"),
                    outcome,
                    message: String::new(),
                },
                Tick => {
                    state.tick(now);
                    continue;
                }
            };
            state.handle(event, now);
        }
        state.end_burst(now);
        out = render(&mut state, replies);
    }
    out
}

/// The connection of the latest session.
fn conn(sessions: &[mpsc::Receiver<ToAgent>]) -> u64 {
    sessions.len() as u64
}

/// Takes what the burst staged, as a commit would, and renders it.
fn render(state: &mut State, replies: Vec<(u64, oneshot::Receiver<Result<(), String>>)>) -> Vec<String> {
    let mut out = Vec::new();
    for (conn, mut rx) in replies {
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => out.push(format!("hello {conn} refused: {}", why.split(';').next().unwrap_or(""))),
            Err(_) => out.push(format!("hello {conn} unanswered")),
        }
    }
    for key in std::mem::take(&mut state.pending).into_keys() {
        out.push(format!("write {key}"));
    }
    for w in std::mem::take(&mut state.log_writes) {
        out.push(format!("log {}/{}/{} at {}: {} bytes", w.run, w.job, w.attempt, w.offset, w.data.len()));
    }
    for o in std::mem::take(&mut state.outbox) {
        out.push(match o {
            Outgoing::Agent(agent, msg) => match msg {
                ToAgent::Welcome { .. } => format!("{agent} <- welcome"),
                ToAgent::IdlePeriod { idle_heartbeat } => format!("{agent} <- idle period {idle_heartbeat:?}"),
                ToAgent::Assign(a) => format!("{agent} <- assign {}", a.id),
                ToAgent::Cancel { id, reason, disown } => {
                    format!("{agent} <- cancel {id}{} ({reason})", if disown { " disown" } else { "" })
                }
                ToAgent::LogAck { id, offset } => format!("{agent} <- log-ack {id} {offset}"),
                ToAgent::ResultAck { id, accepted } => format!("{agent} <- result-ack {id} {accepted}"),
                ToAgent::HeartbeatAck { .. } => unreachable!("the edge acknowledges heartbeats"),
                ToAgent::Trust { .. } => unreachable!("the edge sends the CAs to trust"),
                ToAgent::Deploy(a) => format!("{agent} <- deploy {}", a.id),
                ToAgent::ServiceLogs { request_id, .. } => format!("{agent} <- service logs {request_id}"),
            },
            Outgoing::Submitted(_, id) => format!("reply: run {id} submitted"),
            Outgoing::Committed(_) => "reply: committed".to_string(),
            Outgoing::Deploy(note) => format!("deploy: {note:?}"),
        });
    }
    out
}

/// The lines `render` gives for writes of these keys (sorted, as staged).
fn writes(keys: &[String]) -> Vec<String> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.into_iter().map(|k| format!("write {k}")).collect()
}

fn lines(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn cat<T: Clone>(parts: &[Vec<T>]) -> Vec<T> {
    parts.concat()
}

const ONE: &[(&str, &[&str], u32)] = &[("a", &[], 0)];
const RETRY: &[(&str, &[&str], u32)] = &[("a", &[], 1)];

#[test]
fn bursts_stage_writes_and_deliver_only_after_them() {
    let run = || writes(&[keys::run(1), keys::run_index(1)]);
    let job = || writes(&[keys::job(1, "a")]);
    let connected: Burst = (0, vec![Hello(1, "i1", &[])]);
    let running = || vec![connected.clone(), (10, vec![Submit(ONE)]), (20, vec![Accepted("1/a/1")])];
    let stale = "this attempt is no longer yours: it was lost or retried elsewhere";
    // (what, bursts, what the last burst staged and would deliver)
    let cases: Vec<(&str, Vec<Burst>, Vec<String>)> = vec![
        (
            "a submit with no agent stages the run and its jobs, says why it waits, replies after the commit",
            vec![(0, vec![Submit(ONE)])],
            cat(&[
                writes(&[keys::RUN_SEQ.into(), keys::run(1), keys::run_index(1), keys::job(1, "a")]),
                lines(&["reply: run 1 submitted"]),
            ]),
        ),
        (
            "a job no connected agent could take waits out its queue timeout (10m by default)",
            vec![(0, vec![Submit(ONE)]), (599_999, vec![Tick])],
            vec![],
        ),
        (
            "then it fails, and so does its run",
            vec![(0, vec![Submit(ONE)]), (600_000, vec![Tick])],
            cat(&[writes(&[keys::run(1), keys::run_index(1), keys::job(1, "a")])]),
        ),
        (
            "an agent's Hello is stored and welcomed after the commit",
            vec![connected.clone()],
            cat(&[writes(&[keys::agent("a1")]), lines(&["a1 <- welcome"])]),
        ),
        (
            "a queued job goes to the free agent in the same burst, written before it is sent",
            vec![connected.clone(), (10, vec![Submit(ONE)])],
            cat(&[
                writes(&[keys::RUN_SEQ.into(), keys::run(1), keys::run_index(1), keys::job(1, "a")]),
                lines(&["reply: run 1 submitted", "a1 <- assign 1/a/1"]),
            ]),
        ),
        ("the agent's confirmation starts the job", running(), job()),
        (
            "log chunks are staged for their segment, joined within a burst, and acknowledged",
            cat(&[running(), vec![(30, vec![Log("1/a/1", 0, 5), Log("1/a/1", 5, 3), Log("1/a/1", 0, 5)])]]),
            lines(&[
                "log 1/a/1 at 0: 8 bytes",
                "a1 <- log-ack 1/a/1 5",
                "a1 <- log-ack 1/a/1 8",
                "a1 <- log-ack 1/a/1 5",
            ]),
        ),
        (
            "a chunk past a gap ends its attempt, and nothing of it is stored",
            cat(&[running(), vec![(30, vec![Log("1/a/1", 10, 5)])]]),
            cat(&[
                run(),
                job(),
                lines(&[
                    "a1 <- cancel 1/a/1 disown (agent a1 sent a log chunk at offset 10, but the log so far ends at byte 0; chunks must be contiguous)",
                ]),
            ]),
        ),
        (
            "a chunk for an attempt that is not the agent's is disowned",
            cat(&[running(), vec![(30, vec![Log("1/a/9", 0, 5)])]]),
            lines(&[&format!("a1 <- cancel 1/a/9 disown ({stale})")]),
        ),
        (
            "a result finishes the job and the run, and is acknowledged",
            cat(&[running(), vec![(30, vec![Done("1/a/1", Outcome::Succeeded { artifact: None, cache: None })])]]),
            cat(&[run(), job(), lines(&["a1 <- result-ack 1/a/1 true"])]),
        ),
        (
            "an unconfirmed assignment's lease lapses: queued again and sent again, without using a retry",
            vec![connected.clone(), (10, vec![Submit(ONE)]), (10_010, vec![Tick])],
            cat(&[job(), lines(&["a1 <- assign 1/a/2"])]),
        ),
        (
            "a result from the attempt before is refused",
            vec![
                connected.clone(),
                (10, vec![Submit(RETRY)]),
                (10_010, vec![Tick]),
                (10_020, vec![Done("1/a/1", Outcome::Succeeded { artifact: None, cache: None })]),
            ],
            lines(&["a1 <- result-ack 1/a/1 false"]),
        ),
        (
            "cancelling a run cancels its running attempt on the agent",
            cat(&[running(), vec![(30, vec![Cancel(1)])]]),
            cat(&[run(), job(), lines(&["a1 <- cancel 1/a/1 (run cancelled)", "reply: committed"])]),
        ),
        (
            "a reconnect without a running attempt loses it; its retry goes out at once",
            vec![
                connected.clone(),
                (10, vec![Submit(RETRY)]),
                (20, vec![Accepted("1/a/1")]),
                (30, vec![Gone(1), Hello(2, "i1", &[])]),
            ],
            cat(&[writes(&[keys::agent("a1"), keys::job(1, "a")]), lines(&["a1 <- welcome", "a1 <- assign 1/a/2"])]),
        ),
        (
            "a reconnect holding its attempt re-attaches it; a second process is refused",
            cat(&[running(), vec![(30, vec![Hello(2, "i1", &["1/a/1"]), Hello(3, "i2", &[])])]]),
            cat(&[
                lines(&[
                    "hello 3 refused: agent \"a1\" is already connected from 10.0.0.2:5000 (another agent process), and its session is live",
                ]),
                writes(&[keys::agent("a1")]),
                lines(&["a1 <- welcome"]),
            ]),
        ),
    ];
    for (what, bursts, want) in cases {
        assert_eq!(play(&bursts), want, "{what}");
    }
}

/// Issue 20's profile: a deep queue made every burst cost its length. Now
/// a burst looks at the entries it can place, those queued since the last
/// pass (to say what they wait for), and all of them only when the fleet
/// changed.
#[test]
fn a_burst_looks_only_at_what_it_can_place_and_what_is_new() {
    let mut state = State::new(Config { lease_ttl: Duration::from_secs(10), ..Config::default() });
    let start = Instant::now();
    let at = |ms: u64| Now { at: start + Duration::from_millis(ms), ms: 1_000_000 + ms };
    let submit = |state: &mut State, jobs: &[(&str, &[&str], u32)], now: Now| {
        let (reply, _rx) = oneshot::channel();
        let pipeline = Box::new(pipeline(jobs));
        let event = Event::Submit {
            pipeline,
            source: Source::default(),
            traceparent: None,
            queue_timeout: None,
            rerun: None,
            reply,
        };
        state.handle(event, now);
    };
    // Ends a burst: the entries it looked at, and the assignments it sends.
    let end = |state: &mut State, now: Now| {
        let before = state.looked_at;
        state.end_burst(now);
        let sent: Vec<String> = render(state, Vec::new()).into_iter().filter(|l| l.contains("<- assign")).collect();
        (state.looked_at - before, sent)
    };

    // One job waiting, then an agent with one slot: the fleet changed, so
    // every entry is looked at (one).
    submit(&mut state, ONE, at(0));
    assert_eq!(end(&mut state, at(0)), (1, vec![]));
    let (tx, _session) = mpsc::channel(8);
    let (reply, _hello) = oneshot::channel();
    let hello = AgentHello {
        conn: 1,
        name: "a1".into(),
        labels: BTreeMap::new(),
        slots: 1,
        running: Vec::new(),
        draining: false,
        unready: String::new(),
        caches: Vec::new(),
        instance: "i1".into(),
        peer: "10.0.0.1:5000".into(),
        version: String::new(),
        via: String::new(),
        tx,
        reply,
    };
    state.handle(Event::AgentHello(hello), at(10));
    assert_eq!(end(&mut state, at(10)), (1, lines(&["a1 <- assign 1/a/1"])));

    // 500 jobs while the slot is taken: each is new, so each is told why
    // it waits, once.
    let names: Vec<String> = (0..500).map(|i| format!("j{i:03}")).collect();
    let jobs: Vec<(&str, &[&str], u32)> = names.iter().map(|n| (n.as_str(), &[][..], 0)).collect();
    submit(&mut state, &jobs, at(20));
    assert_eq!(end(&mut state, at(20)), (500, vec![]));
    let why = &state.runs[&2].jobs["j499"].waiting_for;
    assert_eq!(why, "a free slot on any agent (busy: a1)");

    // The running job ends: its slot goes to the first of them, and that
    // is the one entry looked at.
    let done = Event::Result {
        conn: 1,
        name: "a1".into(),
        id: "1/a/1".parse().unwrap(),
        outcome: Outcome::Succeeded { artifact: None, cache: None },
        message: String::new(),
    };
    state.handle(done, at(30));
    assert_eq!(end(&mut state, at(30)), (1, lines(&["a1 <- assign 2/j000/1"])));
    assert_eq!(state.queue.len(), 499);

    // Cancelling the run empties the queue without a pass over it.
    let (reply, _rx) = oneshot::channel();
    state.handle(Event::Cancel { run: 2, reply }, at(40));
    assert_eq!(state.queue.len(), 0);
    assert_eq!(end(&mut state, at(40)).0, 0);
}
