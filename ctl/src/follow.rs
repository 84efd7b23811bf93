//! Live progress of a run: a line for each change of a job's state, job logs
//! with each line prefixed by the job's name, and (on a terminal) a status
//! bar at the bottom with counts of done and running jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::run_event::Event;

use crate::client::{Conn, EXIT_FAILED, Exit, status_exit};
use crate::out::{self, outln};

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
/// away or stepped down) rather than reported.
pub fn retry_stream(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
}

/// A partial line longer than this is printed without waiting for its
/// newline, so one enormous line cannot hold the output back.
const MAX_PARTIAL: usize = 64 * 1024;

struct Printer {
    bar: ProgressBar,
    /// Width of the job-name column.
    width: usize,
    /// Per job: the last (state, attempt, waiting_for) shown.
    jobs: BTreeMap<String, (String, u32, String)>,
    /// Per job: the attempt being printed and its unfinished line.
    partial: BTreeMap<String, (u32, Vec<u8>)>,
    seen: LogSeen,
}

impl Printer {
    fn out(&self, line: &str) {
        self.bar.suspend(|| {
            out::line(format_args!("{line}"));
        });
    }

    fn job(&mut self, job: &pb::Job) {
        let key = (job.state.clone(), job.attempt, job.waiting_for.clone());
        if self.jobs.get(&job.name) == Some(&key) {
            return;
        }
        self.jobs.insert(job.name.clone(), key);
        let mut line = format!("[{}] {}", job.name, job.state);
        match job.state.as_str() {
            "queued" if !job.waiting_for.is_empty() => line.push_str(&format!(": waiting for {}", job.waiting_for)),
            "assigned" | "running" => line.push_str(&format!(" on {} (attempt {})", job.agent, job.attempt)),
            _ => {}
        }
        if !job.message.is_empty() && job.state != "running" && job.state != "assigned" {
            line.push_str(&format!(" — {}", job.message));
        }
        if job.state == "queued" || job.state.ends_with("ed") || job.state == "cancelling" {
            self.flush_partial(&job.name);
        }
        self.out(&line);
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
        entry.1.extend_from_slice(&fresh);
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

    fn flush_partial(&mut self, job: &str) {
        if let Some((_, rest)) = self.partial.get_mut(job)
            && !rest.is_empty()
        {
            let line = std::mem::take(rest);
            self.out(&format!("{job:>w$} | {}", String::from_utf8_lossy(&line), w = self.width));
        }
    }

    fn status(&self, run: &pb::Run, jobs: &BTreeMap<String, pb::Job>) {
        let done = jobs.values().filter(|j| is_terminal(&j.state)).count();
        let running: Vec<&str> = jobs.values().filter(|j| j.state == "running").map(|j| j.name.as_str()).collect();
        self.bar.set_message(format!(
            "run {} · {}/{} jobs done · running: {}",
            run.id,
            done,
            jobs.len(),
            if running.is_empty() { "-".to_string() } else { running.join(", ") }
        ));
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "skipped" | "cancelled")
}

/// Follows a run to its end. Returns Ok for a succeeded run and an `Exit`
/// with code 1 for a failed or cancelled one.
pub async fn follow(conn: &mut Conn, run_id: &str) -> Result<(), Exit> {
    let req = pb::WatchRunRequest { run_id: run_id.to_string(), logs: true };
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut p = Printer { bar, width: 0, jobs: BTreeMap::new(), partial: BTreeMap::new(), seen: LogSeen::default() };
    let mut run: Option<pb::Run> = None;
    let mut jobs: BTreeMap<String, pb::Job> = BTreeMap::new();
    let started = std::time::Instant::now();
    // When the coordinator serving the watch goes away, the watch is opened
    // again on another one; it replays the run, and the printer shows only
    // what is new.
    let mut stream = conn.call(true, |c| c_call!(c.watch_run(req.clone()))).await?;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) if retry_stream(&status) => {
                stream = conn.call(true, |c| c_call!(c.watch_run(req.clone()))).await?;
                continue;
            }
            Err(status) => return Err(status_exit(status)),
        };
        match event.event {
            Some(Event::Run(r)) => {
                if run.is_none() {
                    p.width = r.jobs.iter().map(|j| j.name.len()).max().unwrap_or(0);
                    let commit = if r.commit.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", &r.commit[..12.min(r.commit.len())])
                    };
                    p.out(&format!("run {} ({}{}): {} jobs", r.id, r.name, commit, r.jobs.len()));
                }
                for j in &r.jobs {
                    p.job(j);
                    jobs.insert(j.name.clone(), j.clone());
                }
                p.status(&r, &jobs);
                run = Some(r);
            }
            Some(Event::Job(j)) => {
                p.job(&j);
                jobs.insert(j.name.clone(), j);
                if let Some(r) = &run {
                    p.status(r, &jobs);
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
    let took = started.elapsed().as_secs_f64();
    match run.state.as_str() {
        "succeeded" => {
            outln!("run {} succeeded ({took:.1}s)", run.id);
            Ok(())
        }
        "failed" | "cancelled" => {
            let failed: Vec<String> = run
                .jobs
                .iter()
                .filter(|j| j.state == "failed")
                .map(|j| format!("{} ({})", j.name, j.message))
                .collect();
            let detail = if failed.is_empty() { String::new() } else { format!(": {}", failed.join(", ")) };
            outln!("run {} {}{detail}", run.id, run.state);
            Err(Exit::new(EXIT_FAILED, format!("run {} {}", run.id, run.state)))
        }
        other => Err(Exit::new(EXIT_FAILED, format!("the stream ended while run {} was {other}", run.id))),
    }
}
