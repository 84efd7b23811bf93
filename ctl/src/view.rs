//! The words and colours of the live view (`drover run`, `watch`, `dev`):
//! one line per change of a job's state, with the time since the run was
//! created and, once a job has ended, how long it ran; and the summary
//! table at the end. Pure: `follow` decides when to print, this decides
//! what. Colour only on a terminal, never with `NO_COLOR` or `--no-color`.

use drover_proto::v1 as pb;

use crate::client::Exit;
use crate::states;

/// Whether to colour, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint(pub bool);

impl Paint {
    /// Colour when stdout is a terminal, unless `NO_COLOR` is set (to
    /// anything but the empty string, as no-color.org says) or `no_color`.
    pub fn detect(no_color: bool) -> Paint {
        use std::io::IsTerminal;
        let env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint(!no_color && !env && std::io::stdout().is_terminal())
    }

    fn sgr(self, code: &str, text: &str) -> String {
        if self.0 { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    pub fn dim(self, text: &str) -> String {
        self.sgr("2", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.sgr("1", text)
    }

    /// A state's word in its colour: green for success, red for failure,
    /// yellow for what did not run, cyan for running.
    pub fn state(self, state: pb::JobState, text: &str) -> String {
        use pb::JobState::*;
        match state {
            Succeeded => self.sgr("32", text),
            Failed => self.sgr("31", text),
            Skipped | Cancelled | Cancelling => self.sgr("33", text),
            Running => self.sgr("36", text),
            _ => text.to_string(),
        }
    }

    /// A run's final word in its colour.
    pub fn run(self, state: pb::RunState, text: &str) -> String {
        match state {
            pb::RunState::Succeeded => self.sgr("1;32", text),
            pb::RunState::Failed => self.sgr("1;31", text),
            _ => self.sgr("1;33", text),
        }
    }
}

/// A duration in a live view: `0.4s`, `12.0s`, `3m05s`, `2h07m`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// When a job's change happened, as far as its record says: its start for
/// `running`, its end once ended; otherwise `now`.
fn when(job: &pb::Job, state: pb::JobState, now_ms: u64) -> u64 {
    let t = match state {
        pb::JobState::Running => job.started_ms,
        s if states::job_is_terminal(s) => job.finished_ms,
        _ => 0,
    };
    if t == 0 { now_ms } else { t }
}

/// How long a job's attempt ran, once it has ended; `None` if it never
/// started.
pub fn ran_for(job: &pb::Job) -> Option<u64> {
    (job.started_ms > 0 && job.finished_ms >= job.started_ms).then(|| job.finished_ms - job.started_ms)
}

/// A job's message after the word of its state, without saying the word
/// twice (`skipped: needs a` becomes `needs a`).
fn detail(word: &str, message: &str) -> String {
    message.strip_prefix(word).map(|rest| rest.trim_start_matches([':', ' '])).unwrap_or(message).to_string()
}

/// The line for a job's new state: `  1.2s [build] succeeded in 1.0s`.
pub fn state_line(job: &pb::Job, created_ms: u64, now_ms: u64, paint: Paint) -> Result<String, Exit> {
    use pb::JobState::*;
    let state = states::job(job.state)?;
    let word = states::job_word(state);
    let elapsed = when(job, state, now_ms).saturating_sub(created_ms);
    let mut line =
        format!("{} [{}] {}", paint.dim(&format!("{:>7}", span(elapsed))), job.name, paint.state(state, word));
    match state {
        // A pending job waits only for an approval (`drover approve`).
        Queued | Pending if !job.waiting_for.is_empty() => {
            line.push_str(&format!(": waiting for {}", job.waiting_for));
            if let Some(left) = states::blocked_for(job) {
                line.push_str(&format!("; fails in {left} unless one connects"));
            }
        }
        Queued if !job.approval.is_empty() => line.push_str(&format!(" — {}", job.approval)),
        Assigned => line.push_str(&format!(" to {} (attempt {})", job.agent, job.attempt)),
        Running => line.push_str(&format!(" on {} (attempt {})", job.agent, job.attempt)),
        Succeeded | Failed | Cancelled => {
            if let Some(ms) = ran_for(job) {
                line.push_str(&format!(" in {}", span(ms)));
            }
        }
        _ => {}
    }
    let detail = detail(word, &job.message);
    if !detail.is_empty() && matches!(state, Succeeded | Failed | Skipped | Cancelled | Cancelling) {
        line.push_str(&format!(" — {detail}"));
    }
    Ok(line)
}

/// The line that says an attempt failed and another comes, when the job's
/// message says so (`attempt 1 failed (exit 3), retrying: attempt 2 of 3`).
pub fn retry_line(job: &pb::Job, created_ms: u64, now_ms: u64, paint: Paint) -> Option<String> {
    if !job.message.contains(", retrying: attempt ") {
        return None;
    }
    let elapsed = now_ms.saturating_sub(created_ms);
    Some(format!(
        "{} [{}] {}",
        paint.dim(&format!("{:>7}", span(elapsed))),
        job.name,
        paint.state(pb::JobState::Failed, &job.message)
    ))
}

/// The table at the end of a run: each job's agent, attempts, how long
/// its last attempt ran and how it ended.
pub fn summary(run: &pb::Run, paint: Paint) -> Result<Vec<String>, Exit> {
    let width = run.jobs.iter().map(|j| j.name.len()).max().unwrap_or(0).max(3);
    let agent_width = run.jobs.iter().map(|j| j.agent.len()).max().unwrap_or(0).max(5);
    let mut out =
        vec![paint.bold(&format!(
            "{:<width$}  {:<agent_width$}  {:>8}  {:>8}  RESULT",
            "JOB", "AGENT", "ATTEMPTS", "DURATION"
        ))];
    for j in &run.jobs {
        let state = states::job(j.state)?;
        let agent = if j.agent.is_empty() { "-" } else { &j.agent };
        let duration = ran_for(j).map_or("-".to_string(), span);
        let result = if j.reused_from.is_empty() {
            states::job_word(state).to_string()
        } else {
            format!("{} (reused from run {})", states::job_word(state), j.reused_from)
        };
        out.push(format!(
            "{:<width$}  {:<agent_width$}  {:>8}  {:>8}  {}",
            j.name,
            agent,
            j.attempt,
            duration,
            paint.state(state, &result)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, state: pb::JobState, f: impl FnOnce(&mut pb::Job)) -> pb::Job {
        let mut j = pb::Job { name: name.into(), state: state as i32, ..Default::default() };
        f(&mut j);
        j
    }

    #[test]
    fn the_words_of_each_state() {
        use pb::JobState::*;
        let plain = Paint(false);
        // (case, job, the line after the elapsed time)
        let cases = vec![
            (
                "queued, waiting",
                job("a", Queued, |j| j.waiting_for = "any agent".into()),
                "[a] queued: waiting for any agent",
            ),
            (
                "pending, waiting for an approval",
                job("d", Pending, |j| j.waiting_for = "approval by alice (`drover approve 7 d`)".into()),
                "[d] pending: waiting for approval by alice (`drover approve 7 d`)",
            ),
            (
                "queued once approved",
                job("d", Queued, |j| j.approval = "approved by alice: ok".into()),
                "[d] queued — approved by alice: ok",
            ),
            (
                "assigned",
                job("a", Assigned, |j| {
                    j.agent = "a1".into();
                    j.attempt = 2
                }),
                "[a] assigned to a1 (attempt 2)",
            ),
            (
                "running",
                job("a", Running, |j| {
                    j.agent = "a1".into();
                    j.attempt = 1;
                    j.started_ms = 1500
                }),
                "[a] running on a1 (attempt 1)",
            ),
            (
                "succeeded, with how long it ran",
                job("a", Succeeded, |j| {
                    j.started_ms = 1500;
                    j.finished_ms = 2700
                }),
                "[a] succeeded in 1.2s",
            ),
            (
                "failed, with why",
                job("a", Failed, |j| {
                    j.started_ms = 1000;
                    j.finished_ms = 64_000;
                    j.message = "attempt 3 failed (exit 3)".into()
                }),
                "[a] failed in 1m03s — attempt 3 failed (exit 3)",
            ),
            (
                "skipped, the word once",
                job("b", Skipped, |j| j.message = "skipped: needs a, which failed".into()),
                "[b] skipped — needs a, which failed",
            ),
            (
                "cancelled before it started",
                job("b", Cancelled, |j| j.message = "cancelled before it started".into()),
                "[b] cancelled — before it started",
            ),
            (
                "reused",
                job("b", Succeeded, |j| j.message = "reused from run 7".into()),
                "[b] succeeded — reused from run 7",
            ),
        ];
        for (case, j, want) in cases {
            let line = state_line(&j, 1000, 5000, plain).unwrap();
            let rest = &line[line.find(" [").expect("a job in brackets") + 1..];
            assert_eq!(rest, want, "{case}");
        }
        // The time is since the run was created: its start for running,
        // its end once ended, now otherwise.
        let running = job("a", Running, |j| j.started_ms = 3500);
        assert!(state_line(&running, 1000, 9000, plain).unwrap().starts_with("   2.5s "));
        let queued = job("a", Queued, |_| {});
        assert!(state_line(&queued, 1000, 9000, plain).unwrap().starts_with("   8.0s "));
    }

    #[test]
    fn retries_are_said_and_colour_is_only_sgr() {
        let j = job("a", pb::JobState::Queued, |j| {
            j.message = "attempt 1 failed (exit 3), retrying: attempt 2 of 3".into()
        });
        let line = retry_line(&j, 0, 1200, Paint(false)).unwrap();
        assert_eq!(line, "   1.2s [a] attempt 1 failed (exit 3), retrying: attempt 2 of 3");
        assert_eq!(retry_line(&job("a", pb::JobState::Queued, |_| {}), 0, 0, Paint(false)), None);
        let coloured = state_line(&job("a", pb::JobState::Succeeded, |_| {}), 0, 0, Paint(true)).unwrap();
        assert!(coloured.contains("\x1b[32msucceeded\x1b[0m"), "{coloured:?}");
        assert!(!state_line(&job("a", pb::JobState::Succeeded, |_| {}), 0, 0, Paint(false)).unwrap().contains('\x1b'));
    }

    #[test]
    fn the_summary_table() {
        let run = pb::Run {
            jobs: vec![
                job("build", pb::JobState::Succeeded, |j| {
                    j.agent = "agent-1".into();
                    j.attempt = 2;
                    j.started_ms = 1000;
                    j.finished_ms = 4500
                }),
                job("test", pb::JobState::Skipped, |_| {}),
                job("lint", pb::JobState::Succeeded, |j| j.reused_from = "6".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            summary(&run, Paint(false)).unwrap(),
            [
                "JOB    AGENT    ATTEMPTS  DURATION  RESULT",
                "build  agent-1         2      3.5s  succeeded",
                "test   -               0         -  skipped",
                "lint   -               0         -  succeeded (reused from run 6)",
            ]
        );
    }

    #[test]
    fn spans() {
        for (ms, want) in [(0, "0.0s"), (400, "0.4s"), (12_000, "12.0s"), (185_000, "3m05s"), (7_620_000, "2h07m")] {
            assert_eq!(span(ms), want);
        }
    }
}
