//! `-o text|wide|json|yaml`, the one output flag of every read command, as
//! kubectl has it. A command builds its answer once as a JSON value, with
//! the field names README.md documents (scripts rely on them: they only
//! ever gain fields), and prints it in the format asked: a table (`text`,
//! or `wide` with more columns), one JSON document, or YAML. Streams
//! (`logs`, `watch`) print JSON lines, one object per line, as they come.

use clap::ValueEnum;
use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{EXIT_INVALID, Exit};
use crate::out::outln;
use crate::states;

/// How a read command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// The table with more columns.
    Wide,
    /// One JSON document (JSON lines for `logs` and `watch`).
    Json,
    /// One YAML document (not for `logs` and `watch`).
    Yaml,
}

impl Format {
    /// Whether this is for a program rather than for people.
    pub fn structured(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }

    /// For the streaming commands, which print JSON lines but no YAML.
    pub fn for_stream(self, command: &str) -> Result<Format, Exit> {
        match self {
            Format::Yaml => Err(Exit::new(
                EXIT_INVALID,
                format!("`{command}` streams: use -o json for JSON lines, one object per line"),
            )),
            f => Ok(f),
        }
    }
}

/// Prints `value` as one JSON or YAML document. Text formats are the
/// caller's (they are tables, not documents).
pub fn document(format: Format, value: &Value) -> Result<(), Exit> {
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize")),
        Format::Yaml => {
            let yaml = serde_saphyr::to_string(value)
                .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot write YAML: {e}")))?;
            outln!("{}", yaml.trim_end());
        }
        Format::Text | Format::Wide => unreachable!("tables are printed by each command"),
    }
    Ok(())
}

/// Prints one JSON line.
pub fn line(value: &Value) {
    outln!("{}", serde_json::to_string(value).expect("JSON values serialize"));
}

/// A run as JSON: for `status` and `watch` with its jobs, for `runs` with
/// `"jobs": []`.
pub fn run(r: &pb::Run) -> Result<Value, Exit> {
    let jobs = r.jobs.iter().map(job).collect::<Result<Vec<Value>, Exit>>()?;
    Ok(json!({
        "id": r.id,
        "name": r.name,
        "state": states::run_word(states::run(r.state)?),
        "repo": r.repo,
        "commit": r.commit,
        "file": r.file,
        "created_ms": r.created_ms,
        "finished_ms": r.finished_ms,
        "rerun_of": r.rerun_of,
        "event": if r.event.is_empty() { "manual" } else { &r.event },
        "branch": r.branch,
        "tag": r.tag,
        "trigger": r.trigger,
        "submitted_by": r.submitted_by,
        "jobs": jobs,
    }))
}

/// What started a run, in words: "push to main at abc1234", "tag v1 at
/// abc1234", "pull request #7 (feature) at abc1234", "schedule at
/// abc1234", "hand at abc1234" (`drover run`).
pub fn started_by(r: &pb::Run) -> String {
    let at = if r.commit.is_empty() { String::new() } else { format!(" at {}", &r.commit[..r.commit.len().min(7)]) };
    match r.event.as_str() {
        "push" => format!("push to {}{at}", r.branch),
        "tag" => format!("tag {}{at}", r.tag),
        "pull_request" => {
            // The trigger key names the number: pr/REPO/NUMBER/SHA.
            let number = r.trigger.split('/').nth(2).map(|n| format!(" #{n}")).unwrap_or_default();
            format!("pull request{number} from {}{at}", r.branch)
        }
        "schedule" => format!("schedule{at}"),
        _ => format!("hand{at}"),
    }
}

/// A job as JSON.
pub fn job(j: &pb::Job) -> Result<Value, Exit> {
    Ok(json!({
        "name": j.name,
        "state": states::job_word(states::job(j.state)?),
        "needs": j.needs,
        "attempt": j.attempt,
        "agent": j.agent,
        "waiting_for": j.waiting_for,
        "blocked_until_ms": j.blocked_until_ms,
        "exit_code": j.exit_code,
        "started_ms": j.started_ms,
        "finished_ms": j.finished_ms,
        "message": j.message,
        "reused_from": j.reused_from,
        "artifact": j.artifact.as_ref().map(|a| json!({ "sha256": a.sha256, "size": a.size, "files": a.files })),
        "cache": j.cache,
        "placement": j.placement,
        "approval": j.approval,
    }))
}

/// Cuts a job's log into lines for JSON output, keeping each job's
/// unfinished line until its newline comes (or its attempt ends).
#[derive(Default)]
pub struct Lines(std::collections::BTreeMap<String, (u32, Vec<u8>)>);

impl Lines {
    /// Takes a chunk of `job`'s attempt `attempt`; returns the lines it
    /// completes as `{job, attempt, line}` objects, in order.
    pub fn push(&mut self, job: &str, attempt: u32, data: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        let entry = self.0.entry(job.to_string()).or_insert((attempt, Vec::new()));
        if entry.0 != attempt {
            let rest = std::mem::take(&mut entry.1);
            if !rest.is_empty() {
                out.push(log_line(job, entry.0, &rest));
            }
            entry.0 = attempt;
        }
        entry.1.extend_from_slice(data);
        while let Some(pos) = entry.1.iter().position(|b| *b == b'\n') {
            let rest = entry.1.split_off(pos + 1);
            let mut line = std::mem::replace(&mut entry.1, rest);
            line.pop();
            out.push(log_line(job, attempt, &line));
        }
        out
    }

    /// What is left unfinished of every job, as lines.
    pub fn finish(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.0)
            .into_iter()
            .filter(|(_, (_, rest))| !rest.is_empty())
            .map(|(job, (attempt, rest))| log_line(&job, attempt, &rest))
            .collect()
    }
}

/// One line of a job's log: the bytes as text (invalid UTF-8 replaced),
/// control characters escaped by JSON itself.
fn log_line(job: &str, attempt: u32, line: &[u8]) -> Value {
    json!({ "job": job, "attempt": attempt, "line": String::from_utf8_lossy(line) })
}

/// A duration for a table: `45s`, `3m12s`, `2h5m`, `3d4h`, the two largest
/// units.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// A size for a table: `512B`, `3.2KiB`, `1.5GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_started_a_run_in_words() {
        let run = |event: &str, branch: &str, tag: &str, trigger: &str| pb::Run {
            event: event.into(),
            branch: branch.into(),
            tag: tag.into(),
            trigger: trigger.into(),
            commit: "abc1234def".into(),
            ..Default::default()
        };
        let cases = [
            (run("push", "main", "", "push/web/main/abc"), "push to main at abc1234"),
            (run("tag", "", "v1", "tag/web/v1/abc"), "tag v1 at abc1234"),
            (run("pull_request", "fix", "", "pr/web/7/abc"), "pull request #7 from fix at abc1234"),
            (run("schedule", "main", "", "cron/web/x/1"), "schedule at abc1234"),
            (run("manual", "", "", ""), "hand at abc1234"),
            (run("", "", "", ""), "hand at abc1234"),
        ];
        for (r, want) in cases {
            assert_eq!(started_by(&r), want);
        }
    }

    #[test]
    fn a_runs_json_says_who_submitted_it() {
        let running = pb::Run { state: pb::RunState::Running as i32, ..Default::default() };
        let r = pb::Run { id: "7".into(), submitted_by: "user:otto".into(), ..running.clone() };
        assert_eq!(run(&r).unwrap()["submitted_by"], "user:otto");
        // A trigger's run: nobody, as an empty string.
        assert_eq!(run(&running).unwrap()["submitted_by"], "");
    }

    #[test]
    fn sizes_read_in_the_largest_unit() {
        let cases = [(0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (1536, "1.5KiB"), (5 << 30, "5.0GiB")];
        for (n, want) in cases {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn log_lines_are_cut_at_newlines_per_job_and_attempt() {
        let mut lines = Lines::default();
        let text = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|l| format!("{}/{} {}", l["job"].as_str().unwrap(), l["attempt"], l["line"].as_str().unwrap()))
                .collect()
        };
        assert_eq!(text(lines.push("a", 1, b"one\ntw")), ["a/1 one"]);
        assert_eq!(text(lines.push("b", 1, b"x")), Vec::<String>::new());
        assert_eq!(text(lines.push("a", 1, b"o\n")), ["a/1 two"]);
        assert_eq!(text(lines.push("a", 1, b"cut")), Vec::<String>::new());
        assert_eq!(text(lines.push("a", 2, b"again\n")), ["a/1 cut", "a/2 again"]);
        assert_eq!(text(lines.push("b", 1, b"\xff\n")), ["b/1 x\u{fffd}"]);
        assert_eq!(text(lines.push("b", 1, b"end")), Vec::<String>::new());
        assert_eq!(text(lines.finish()), ["b/1 end"]);
    }

    #[test]
    fn durations_for_tables() {
        let cases =
            [(0, "0s"), (999, "0s"), (45_000, "45s"), (192_000, "3m12s"), (7_500_000, "2h5m"), (273_600_000, "3d4h")];
        for (ms, want) in cases {
            assert_eq!(human(ms), want, "{ms}");
        }
    }

    #[test]
    fn yaml_is_refused_for_streams_only() {
        assert!(Format::Yaml.for_stream("logs").is_err());
        assert_eq!(Format::Json.for_stream("logs").unwrap(), Format::Json);
        assert!(Format::Yaml.structured() && Format::Json.structured() && !Format::Wide.structured());
    }
}
