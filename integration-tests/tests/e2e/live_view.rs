//! The live view as a person sees it, captured through a pseudo-terminal:
//! on a 4-job DAG with a retry, each state line comes in the order it
//! happened, a job's output only after its `running` line, the retry is
//! said, colour is on (and off with NO_COLOR), and a summary table ends it.

use std::time::Duration;

use crate::harness::{Fleet, pty};

/// `drover args` on a terminal, against the fleet.
fn on_a_terminal(fleet: &Fleet, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = fleet.drover_command(args);
    cmd.env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    pty::on_a_terminal(cmd, Duration::from_secs(90))
}

#[test]
fn a_dag_with_a_retry_is_shown_in_order_with_colour_and_a_summary() {
    let mut fleet = Fleet::start("live-view");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // prepare → (build-a with one retry, build-b) → publish; build-a fails
    // its first attempt.
    let pipeline = format!(
        "name: dag
jobs:
  prepare:
    steps: [{{run: 'echo preparing'}}]
  build-a:
    needs: [prepare]
    retries: 2
    steps: [{{run: 'echo building a; if [ ! -e {m}/again ]; then touch {m}/again; exit 3; fi'}}]
  build-b:
    needs: [prepare]
    steps: [{{run: 'echo building b'}}]
  publish:
    needs: [build-a, build-b]
    steps: [{{run: 'echo publishing'}}]
",
        m = marks.display()
    );
    let file = fleet.dir.path().join("dag.yml");
    std::fs::write(&file, pipeline).unwrap();

    // On a terminal, `drover run` follows without being asked.
    let (code, out) = on_a_terminal(&fleet, &["run", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}{}", fleet.logs());
    assert!(out.contains("\x1b[32msucceeded\x1b[0m"), "colour on a terminal: {out:?}");
    let lines = pty::lines(&out);
    let at = |want: &str| -> usize {
        lines.iter().position(|l| l.contains(want)).unwrap_or_else(|| panic!("no line with {want:?} in {lines:#?}"))
    };
    // Each job's output after its running line, and before its end.
    for (job, said) in [("prepare", "preparing"), ("build-b", "building b"), ("publish", "publishing")] {
        let (running, output, ended) =
            (at(&format!("[{job}] running")), at(&format!("{job} | {said}")), at(&format!("[{job}] succeeded")));
        assert!(
            running < output && output < ended,
            "{job}: running {running}, output {output}, end {ended}: {lines:#?}"
        );
    }
    // Nothing is said of jobs that only wait for others.
    assert!(!lines.iter().any(|l| l.contains("] pending")), "{lines:#?}");
    // Dependents after what they need.
    assert!(at("[prepare] succeeded") < at("[build-a] assigned"), "{lines:#?}");
    assert!(at("[prepare] succeeded") < at("[build-b] assigned"), "{lines:#?}");
    assert!(at("[build-a] succeeded") < at("[publish] assigned"), "{lines:#?}");
    // The retry, said, between the two attempts.
    let retry = at("[build-a] attempt 1 failed (exit 3)");
    assert!(lines[retry].ends_with(", retrying: attempt 2 of 3"), "{}", lines[retry]);
    assert!(at("[build-a] running on a1 (attempt 1)") < retry, "{lines:#?}");
    assert!(retry < at("[build-a] running on a1 (attempt 2)"), "{lines:#?}");
    // Each state line carries the time since the run began.
    let line = &lines[at("[prepare] succeeded")];
    assert!(line.trim_start().split(' ').next().is_some_and(|t| t.ends_with('s')), "{line}");
    // The summary, then the verdict.
    let table = at("JOB");
    assert!(lines[table].contains("AGENT") && lines[table].contains("ATTEMPTS") && lines[table].contains("RESULT"));
    let row = lines[table..].iter().find(|l| l.starts_with("build-a ")).expect("a summary row for build-a");
    assert!(row.contains(" 2 ") && row.ends_with("succeeded"), "{row}");
    assert!(lines.last().is_some_and(|l| l.starts_with("run 1 succeeded (")), "{lines:#?}");

    // NO_COLOR: no colour, even on a terminal.
    let (code, out) = on_a_terminal(&fleet, &["watch", "1"], &[("NO_COLOR", "1")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("\x1b[32m") && !out.contains("\x1b[31m"), "no colour: {out:?}");
}
