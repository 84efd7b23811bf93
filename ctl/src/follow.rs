//! Live progress of a run: a line for each change of a job's state, job logs
//! with each line prefixed by the job's name, and (on a terminal) a status
//! bar at the bottom with counts of done and running jobs. Job output goes
//! through [`term::Sanitizer`] (one per job, since each job's log is its own
//! stream) unless `--raw` is given.
//!
//! A follow outlives the coordinator that serves it. When the stream breaks
//! (the coordinator was killed, restarted, or stepped down), it is opened
//! again, on the same coordinator or another, for up to
//! `--reconnect-timeout` ([`crate::client::Patience`]), with one line on
//! stderr to say so and one when it is back. The new stream replays the run
//! from its creation; what was shown already is skipped (log bytes by
//! offset in [`LogSeen`], job states by their place in each job's history),
//! so the output goes on exactly where it stopped. A run that finished
//! meanwhile is reported as usual, with its exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::run_event::Event;

use crate::client::{Conn, EXIT_FAILED, EXIT_INTERRUPTED, Exit, Notice, Patience};
use crate::out::{self, outln};
use crate::output;
use crate::resume::Resumable;
use crate::states;
use crate::term;
use crate::view::{self, Paint};

/// Log bytes already shown, per (job, attempt): a stream opened again after
/// a coordinator went away replays from the start, and this skips what was
/// shown.
#[derive(Default)]
pub struct LogSeen(BTreeMap<(String, u32), u64>);

impl LogSeen {
    /// The part of the chunk not shown yet, if any.
    pub fn fresh<'a>(&mut self, log: &'a pb::LogData) -> Option<&'a [u8]> {
        let seen = self.0.entry((log.job.clone(), log.attempt)).or_insert(0);
        let end = log.offset + log.data.len() as u64;
        if end <= *seen {
            return None;
        }
        let skip = seen.saturating_sub(log.offset) as usize;
        *seen = end;
        Some(&log.data[skip..])
    }
}

/// Whether a broken stream should be opened again (the coordinator went
/// away or stepped down) rather than reported. A status with a source was
/// made up by tonic from a connection that broke, whatever its code; one a
/// coordinator sent has none.
pub fn retry_stream(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
        || std::error::Error::source(status).is_some()
}

/// Says on stderr, once, that the stream is being opened again, and how
/// long it may take; `bar` is suspended meanwhile, so the line does not
/// mix with it. On a terminal the bar counts down what is left.
pub fn notice(bar: Option<&ProgressBar>, n: Notice) {
    match n {
        Notice::Lost { url, left, why } => {
            let line =
                format!("lost the stream from {url} ({why}); reconnecting to the coordinator… ({}s left)", secs(left));
            match bar {
                Some(bar) => bar.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
        Notice::Waiting { left } => {
            if let Some(bar) = bar {
                bar.set_message(format!("reconnecting to the coordinator… ({}s left)", secs(left)));
            }
        }
    }
}

/// Says on stderr that a stream delivers again after an announced outage.
pub fn back(bar: Option<&ProgressBar>, url: &str, after: Duration) {
    let line = format!("reconnected to the coordinator at {url} after {:.1}s", after.as_secs_f64());
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// Whole seconds, rounded up, so that a countdown ends at 1s, not 0s.
fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// A partial line longer than this is printed without waiting for its
/// newline, so one enormous line cannot hold the output back.
const MAX_PARTIAL: usize = 64 * 1024;

struct Printer {
    bar: ProgressBar,
    /// Width of the job-name column.
    width: usize,
    /// The job states shown so far.
    jobs: JobHistory,
    /// Per job: the attempt being printed and its unfinished line.
    partial: BTreeMap<String, (u32, Vec<u8>)>,
    /// Per job: the sanitiser of its current attempt's output; none with
    /// `--raw`.
    clean: Option<BTreeMap<String, term::Sanitizer>>,
    seen: LogSeen,
    paint: Paint,
    /// When the run was created (the coordinator's clock), for the time on
    /// each state line.
    created_ms: u64,
    /// The retry messages shown, per job.
    retries: std::collections::BTreeSet<(String, String)>,
}

/// The wall clock in ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Printer {
    fn out(&self, line: &str) {
        self.bar.suspend(|| {
            out::line(format_args!("{line}"));
        });
    }

    fn job(&mut self, job: &pb::Job) -> Result<(), Exit> {
        use pb::JobState::*;
        let state = states::job(job.state)?;
        let word = states::job_word(state);
        let waiting = match job.blocked_until_ms {
            0 => job.waiting_for.clone(),
            _ => format!("{} (blocked)", job.waiting_for),
        };
        if !self.jobs.is_new(&job.name, (word.to_string(), job.attempt, waiting)) {
            return Ok(());
        }
        // Waiting for other jobs is no news: the status bar counts them.
        if state == Pending {
            return Ok(());
        }
        // Whatever the attempt printed last is shown whole before a state
        // that no attempt of it is running in.
        if matches!(state, Queued | Assigned | Cancelling | Succeeded | Failed | Skipped | Cancelled) {
            self.flush_partial(&job.name);
        }
        let now = now_ms();
        // An attempt that failed and will be retried: said once, before
        // the state the retry is in (queued, or already assigned).
        if matches!(state, Queued | Assigned | Running)
            && let Some(line) = view::retry_line(job, self.created_ms, now, self.paint)
            && self.retries.insert((job.name.clone(), job.message.clone()))
        {
            self.out(&line);
        }
        let line = view::state_line(job, self.created_ms, now, self.paint)?;
        self.out(&line);
        Ok(())
    }

    fn log(&mut self, log: pb::LogData) {
        let Some(fresh) = self.seen.fresh(&log) else { return };
        let fresh = fresh.to_vec();
        let entry = self.partial.entry(log.job.clone()).or_insert((log.attempt, Vec::new()));
        if entry.0 != log.attempt {
            let job = log.job.clone();
            self.flush_partial(&job);
            self.out(&format!("{:>w$} | --- attempt {} ---", log.job, log.attempt, w = self.width));
        }
        let entry = self.partial.entry(log.job.clone()).or_insert((log.attempt, Vec::new()));
        entry.0 = log.attempt;
        match &mut self.clean {
            Some(clean) => clean.entry(log.job.clone()).or_default().push(&fresh, &mut entry.1),
            None => entry.1.extend_from_slice(&fresh),
        }
        let mut lines = Vec::new();
        while let Some(pos) = entry.1.iter().position(|b| *b == b'\n') {
            let rest = entry.1.split_off(pos + 1);
            let mut line = std::mem::replace(&mut entry.1, rest);
            line.pop();
            lines.push(line);
        }
        if entry.1.len() > MAX_PARTIAL {
            lines.push(std::mem::take(&mut entry.1));
        }
        for line in lines {
            self.out(&format!("{:>w$} | {}", log.job, String::from_utf8_lossy(&line), w = self.width));
        }
    }

    /// Prints what is left of the job's output; called when its attempt
    /// has ended, so a sequence it left unfinished is shown as text.
    fn flush_partial(&mut self, job: &str) {
        if let Some((_, rest)) = self.partial.get_mut(job)
            && let Some(clean) = self.clean.as_mut().and_then(|c| c.get_mut(job))
        {
            clean.finish(rest);
        }
        if let Some((_, rest)) = self.partial.get_mut(job)
            && !rest.is_empty()
        {
            let line = std::mem::take(rest);
            self.out(&format!("{job:>w$} | {}", String::from_utf8_lossy(&line), w = self.width));
        }
    }

    fn status(&self, run: &pb::Run, jobs: &BTreeMap<String, pb::Job>) -> Result<(), Exit> {
        let (mut done, mut running, mut blocked) = (0, Vec::new(), Vec::new());
        for j in jobs.values() {
            let state = states::job(j.state)?;
            done += usize::from(states::job_is_terminal(state));
            if state == pb::JobState::Running {
                running.push(j.name.as_str());
            }
            if state == pb::JobState::Queued
                && let Some(left) = states::blocked_for(j)
            {
                blocked.push(format!("{} ({}; fails in {left})", j.name, j.waiting_for));
            }
        }
        let mut message = format!(
            "run {} · {}/{} jobs done · running: {}",
            run.id,
            done,
            jobs.len(),
            if running.is_empty() { "-".to_string() } else { running.join(", ") }
        );
        if !blocked.is_empty() {
            message.push_str(&format!(" · blocked: {}", blocked.join(", ")));
        }
        self.bar.set_message(message);
        Ok(())
    }
}

/// A job's state as shown: (state, attempt, waiting_for).
type JobKey = (String, u32, String);

/// Which job states have been shown, so that a stream opened again, which
/// replays the run from its creation, shows none of them twice.
#[derive(Default)]
struct JobHistory {
    /// Per job: every state shown, in order.
    shown: BTreeMap<String, Vec<JobKey>>,
    /// Per job, while a reopened stream replays the run: how far into the
    /// job's history the replay has come. A state found at or after that
    /// point was shown already; anything else is new, and ends the replay
    /// for that job.
    replay: BTreeMap<String, usize>,
}

impl JobHistory {
    /// A stream was opened again: it replays each job's history from the
    /// start.
    fn replaying(&mut self) {
        self.replay = self.shown.keys().map(|name| (name.clone(), 0)).collect();
    }

    /// Whether `key` is news for job `name` (and then it counts as shown).
    fn is_new(&mut self, name: &str, key: JobKey) -> bool {
        let history = self.shown.entry(name.to_string()).or_default();
        if history.last() == Some(&key) {
            return false;
        }
        if let Some(at) = self.replay.get_mut(name) {
            // The replay may skip states (history compacted away), never
            // reorder them: look ahead, not only at the next one.
            if let Some(found) = history.get(*at..).and_then(|rest| rest.iter().position(|k| *k == key)) {
                *at += found + 1;
                return false;
            }
            self.replay.remove(name);
        }
        history.push(key);
        true
    }
}

/// Follows a run to its end, opening the watch again for up to `reconnect`
/// whenever it breaks (the first time too: the run exists, since the
/// coordinator has just taken it). Returns Ok for a succeeded run and an
/// `Exit` with code 1 for a failed or cancelled one, or 3 when no
/// coordinator came back in time.
pub async fn follow(conn: &mut Conn, run_id: &str, raw: bool, paint: Paint, reconnect: Duration) -> Result<(), Exit> {
    let req = pb::WatchRunRequest { run_id: run_id.to_string(), logs: true, from_now: false };
    // Cleared when dropped too: an interrupted follow leaves no bar behind.
    let bar = ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut p = Printer {
        bar,
        width: 0,
        jobs: JobHistory::default(),
        partial: BTreeMap::new(),
        clean: (!raw).then(BTreeMap::new),
        seen: LogSeen::default(),
        paint,
        created_ms: 0,
        retries: Default::default(),
    };
    let mut run: Option<pb::Run> = None;
    // Whether the run, as last heard, has finished.
    let mut finished = false;
    let mut jobs: BTreeMap<String, pb::Job> = BTreeMap::new();
    let started = std::time::Instant::now();
    let patience = Patience::new(
        reconnect,
        format!("run {run_id} goes on without this client: `drover status {run_id}` shows how it does"),
    );
    // When the coordinator serving the watch goes away, the watch is opened
    // again, on it once it is back or on another one; it replays the run,
    // and the printer shows only what is new. The first open waits as well.
    let mut watch = Resumable::new(patience, None, move |c| c_call!(c.watch_run(req.clone())));
    loop {
        // The coordinator ends the stream before the run ends only when it
        // goes away.
        let early_end = (!finished).then_some("the stream ended before the run did");
        let Some(event) = watch.next(conn, Some(&p.bar), early_end, || p.jobs.replaying()).await? else {
            break;
        };
        match event.event {
            Some(Event::Run(r)) => {
                finished = states::run(r.state)? != pb::RunState::Running;
                if run.is_none() {
                    p.width = r.jobs.iter().map(|j| j.name.len()).max().unwrap_or(0);
                    p.created_ms = r.created_ms;
                    let commit = if r.commit.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", &r.commit[..12.min(r.commit.len())])
                    };
                    let rerun =
                        if r.rerun_of.is_empty() { String::new() } else { format!(", a rerun of run {}", r.rerun_of) };
                    let n = r.jobs.len();
                    p.out(&format!(
                        "run {} ({}{commit}{rerun}): {n} job{}",
                        r.id,
                        r.name,
                        if n == 1 { "" } else { "s" }
                    ));
                }
                for j in &r.jobs {
                    p.job(j)?;
                    jobs.insert(j.name.clone(), j.clone());
                }
                p.status(&r, &jobs)?;
                run = Some(r);
            }
            Some(Event::Job(j)) => {
                p.job(&j)?;
                jobs.insert(j.name.clone(), j);
                if let Some(r) = &run {
                    p.status(r, &jobs)?;
                }
            }
            Some(Event::Log(l)) => p.log(l),
            None => {}
        }
    }
    for job in jobs.keys() {
        p.flush_partial(job);
    }
    p.bar.finish_and_clear();
    let run = run.ok_or_else(|| Exit::new(EXIT_FAILED, "the coordinator sent no run state"))?;
    let state = states::run(run.state)?;
    let word = states::run_word(state);
    if state != pb::RunState::Running {
        outln!("");
        for line in view::summary(&run, p.paint)? {
            outln!("{line}");
        }
    }
    // How long the run took, by the coordinator's clock; a run that this
    // follow only saw the end of took longer than the follow.
    let took = match run.finished_ms {
        0 => started.elapsed().as_millis() as u64,
        end => end.saturating_sub(run.created_ms),
    };
    let took = view::span(took);
    match state {
        pb::RunState::Succeeded => {
            outln!("run {} {} ({took})", run.id, p.paint.run(state, "succeeded"));
            Ok(())
        }
        pb::RunState::Failed | pb::RunState::Cancelled => {
            let failed: Vec<String> = run
                .jobs
                .iter()
                .filter(|j| j.state == pb::JobState::Failed as i32)
                .map(|j| format!("{} ({})", j.name, j.message))
                .collect();
            let detail = if failed.is_empty() { String::new() } else { format!(": {}", failed.join(", ")) };
            outln!("run {} {}{detail} ({took})", run.id, p.paint.run(state, word));
            Err(Exit::new(EXIT_FAILED, format!("run {} {word}", run.id)))
        }
        pb::RunState::Running | pb::RunState::Unspecified => {
            Err(Exit::new(EXIT_FAILED, format!("the stream ended while run {} was {word}", run.id)))
        }
    }
}

/// Runs `follow` (a follow of run `run_id`) until it ends or the user
/// presses Ctrl-C, which leaves the run running and says how to find it
/// again: exit 130.
pub async fn until_interrupted(run_id: &str, follow: impl Future<Output = Result<(), Exit>>) -> Result<(), Exit> {
    // The handler is in place before the follow prints anything, so a
    // Ctrl-C after the first line can never find SIGINT's default action.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Exit::new(EXIT_INTERRUPTED, format!("cannot watch for Ctrl-C: {e}")))?;
    tokio::select! {
        biased;
        _ = interrupt.recv() => Err(Exit::new(
            EXIT_INTERRUPTED,
            format!(
                "interrupted; run {run_id} goes on without this client: `drover watch {run_id}` follows it again, \
                 `drover cancel {run_id}` cancels it"
            ),
        )),
        r = follow => r,
    }
}

/// `drover watch -o json`: the run's events as JSON lines until it ends,
/// reconnecting as [`follow`] does. Each line is one object with `event`:
/// `run` (the run and its jobs, first and at the end), `job` (a job's new
/// state) or `log` (one line of a job's output). The exit code is
/// [`follow`]'s.
pub async fn follow_json(conn: &mut Conn, run_id: &str, reconnect: Duration) -> Result<(), Exit> {
    let req = pb::WatchRunRequest { run_id: run_id.to_string(), logs: true, from_now: false };
    let patience = Patience::new(
        reconnect,
        format!("run {run_id} goes on without this client: `drover status {run_id}` shows how it does"),
    );
    let mut watch = Resumable::new(patience, None, move |c| c_call!(c.watch_run(req.clone())));
    let (mut history, mut seen, mut lines) = (JobHistory::default(), LogSeen::default(), output::Lines::default());
    let mut last: Option<pb::Run> = None;
    let tagged = |kind: &str, mut value: serde_json::Value| {
        value["event"] = kind.into();
        value
    };
    loop {
        let finished = last.as_ref().is_some_and(|r| r.state != pb::RunState::Running as i32);
        let early_end = (!finished).then_some("the stream ended before the run did");
        let Some(event) = watch.next(conn, None, early_end, || history.replaying()).await? else { break };
        match event.event {
            Some(Event::Run(r)) => {
                let new = r.jobs.iter().any(|j| history.is_new(&j.name, key_of(j)));
                if last.is_none() || new || last.as_ref().is_some_and(|l| l.state != r.state) {
                    output::line(&tagged("run", output::run(&r)?));
                }
                last = Some(r);
            }
            Some(Event::Job(j)) => {
                if history.is_new(&j.name, key_of(&j)) {
                    output::line(&tagged("job", output::job(&j)?));
                }
                if let Some(r) = last.as_mut()
                    && let Some(slot) = r.jobs.iter_mut().find(|x| x.name == j.name)
                {
                    *slot = j;
                }
            }
            Some(Event::Log(l)) => {
                if let Some(fresh) = seen.fresh(&l) {
                    for line in lines.push(&l.job, l.attempt, fresh) {
                        output::line(&tagged("log", line));
                    }
                }
            }
            None => {}
        }
    }
    for line in lines.finish() {
        output::line(&tagged("log", line));
    }
    let run = last.ok_or_else(|| Exit::new(EXIT_FAILED, "the coordinator sent no run state"))?;
    match states::run(run.state)? {
        pb::RunState::Succeeded => Ok(()),
        state => Err(Exit::new(EXIT_FAILED, format!("run {} {}", run.id, states::run_word(state)))),
    }
}

/// A job's state as the JSON stream tells news from replays.
fn key_of(j: &pb::Job) -> JobKey {
    (j.state.to_string(), j.attempt, format!("{}{}", j.waiting_for, j.blocked_until_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: &str, attempt: u32, waiting_for: &str) -> JobKey {
        (state.to_string(), attempt, waiting_for.to_string())
    }

    /// A job's state as a stream brings it, (job, state, attempt,
    /// waiting_for), or `None` for a stream opened again.
    type Event<'a> = Option<(&'a str, &'a str, u32, &'a str)>;

    /// Feeds `events` and returns those shown.
    fn shown(h: &mut JobHistory, events: &[Event<'_>]) -> Vec<String> {
        let mut out = Vec::new();
        for e in events {
            match e {
                None => h.replaying(),
                Some((job, state, attempt, w)) => {
                    if h.is_new(job, key(state, *attempt, w)) {
                        out.push(format!("{job} {state} {attempt}{w}"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_replayed_run_shows_only_the_job_states_not_shown_before() {
        let cases: &[(&str, &[Event<'_>], &[&str])] = &[
            (
                "a full replay, then news",
                &[
                    Some(("a", "queued", 0, "")),
                    Some(("a", "assigned", 1, "")),
                    Some(("a", "running", 1, "")),
                    None,
                    Some(("a", "queued", 0, "")),
                    Some(("a", "assigned", 1, "")),
                    Some(("a", "running", 1, "")),
                    Some(("a", "succeeded", 1, "")),
                ],
                &["a queued 0", "a assigned 1", "a running 1", "a succeeded 1"],
            ),
            (
                "a replay that skips states (compacted history)",
                &[
                    Some(("a", "queued", 0, "")),
                    Some(("a", "running", 1, "")),
                    None,
                    Some(("a", "running", 1, "")),
                    Some(("a", "failed", 1, "")),
                ],
                &["a queued 0", "a running 1", "a failed 1"],
            ),
            (
                "a retry: the same state with another attempt is news",
                &[
                    Some(("a", "running", 1, "")),
                    Some(("a", "queued", 1, "")),
                    None,
                    Some(("a", "running", 1, "")),
                    Some(("a", "queued", 1, "")),
                    Some(("a", "running", 2, "")),
                ],
                &["a running 1", "a queued 1", "a running 2"],
            ),
            (
                "two breaks in a row, and a job first seen in the replay",
                &[
                    Some(("a", "queued", 0, "no agent")),
                    None,
                    Some(("a", "queued", 0, "no agent")),
                    None,
                    Some(("a", "queued", 0, "no agent")),
                    Some(("b", "pending", 0, "")),
                    Some(("a", "queued", 0, "")),
                ],
                &["a queued 0no agent", "b pending 0", "a queued 0"],
            ),
        ];
        for (what, events, want) in cases {
            let mut h = JobHistory::default();
            assert_eq!(shown(&mut h, events), *want, "{what}");
        }
    }

    #[test]
    fn log_bytes_shown_are_skipped_when_replayed() {
        let log = |offset: u64, data: &str| pb::LogData {
            job: "a".into(),
            attempt: 1,
            offset,
            data: data.as_bytes().to_vec(),
        };
        let mut seen = LogSeen::default();
        assert_eq!(seen.fresh(&log(0, "line 1\n")), Some(&b"line 1\n"[..]));
        assert_eq!(seen.fresh(&log(7, "line 2\nli")), Some(&b"line 2\nli"[..]));
        // The stream opened again replays from offset 0, in other chunks.
        assert_eq!(seen.fresh(&log(0, "line 1\nline 2\n")), None);
        assert_eq!(seen.fresh(&log(14, "line 3\n")), Some(&b"ne 3\n"[..]));
    }
}
