//! `on:` read from files, and what it makes of events; cron ticks.

use super::*;
use crate::parse;

const JOBS: &str = "jobs:\n  a:\n    steps: [{run: make}]\n";

fn on(yaml: &str) -> Triggers {
    let text = format!("name: p\n{yaml}{JOBS}");
    parse("ci.yml", &text).unwrap_or_else(|err| panic!("{yaml}: {err}")).on
}

#[test]
fn events_are_read_from_names_and_mappings() {
    let default = Triggers::default();
    let only = |f: fn(&mut Triggers)| {
        let mut t = Triggers { push: None, tag: None, pull_request: None, schedule: vec![], manual: false };
        f(&mut t);
        t
    };
    // (case, `on:` as written, what it reads as)
    let cases = [
        ("no `on`", "", default.clone()),
        ("one name", "on: push\n", only(|t| t.push = Some(RefFilter::default()))),
        (
            "a list of names",
            "on: [tag, manual, pull_request]\n",
            only(|t| {
                t.tag = Some(TagFilter::default());
                t.manual = true;
                t.pull_request = Some(RefFilter::default());
            }),
        ),
        (
            "filters",
            "on:\n  push:\n    branches: [main, 'release/*']\n    paths-ignore: ['docs/**']\n  tag: {tags: ['v*']}\n",
            only(|t| {
                t.push = Some(RefFilter {
                    branches: vec!["main".into(), "release/*".into()],
                    paths_ignore: vec!["docs/**".into()],
                    ..RefFilter::default()
                });
                t.tag = Some(TagFilter { tags: vec!["v*".into()] });
            }),
        ),
        (
            "a schedule and an empty push",
            "on:\n  push:\n  schedule:\n    - cron: '0 3 * * *'\n  manual: false\n",
            only(|t| {
                t.push = Some(RefFilter::default());
                t.schedule = vec![Schedule { cron: "0 3 * * *".into() }];
            }),
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(on(yaml), want, "{case}");
    }
}

#[test]
fn a_pipeline_wants_the_events_its_filters_take() {
    let triggers = on("on:
  push:
    branches: [main, 'release/**']
    branches-ignore: ['release/old/*']
    paths: ['src/**']
    paths-ignore: ['src/**/*.md']
  tag: {tags: ['v*']}
  pull_request: {branches: [main]}
  schedule: [{cron: '0 3 * * *'}]
");
    let changed = |files: &[&str]| files.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let src = changed(&["src/lib.rs"]);
    let docs = changed(&["src/doc/a.md", "README.md"]);
    let both = changed(&["src/doc/a.md", "src/x.rs"]);
    // (case, event, wanted)
    let cases: Vec<(&str, Event<'_>, bool)> = vec![
        ("push to main", Event::Push { branch: "main", changed: Some(&src) }, true),
        ("push to main, paths unknown", Event::Push { branch: "main", changed: None }, true),
        ("push to a nested release branch", Event::Push { branch: "release/1/x", changed: None }, true),
        ("push to an ignored branch", Event::Push { branch: "release/old/1", changed: None }, false),
        ("push to another branch", Event::Push { branch: "dev", changed: Some(&src) }, false),
        ("`*` stops at `/`", Event::Push { branch: "mainx/y", changed: None }, false),
        ("only ignored paths changed", Event::Push { branch: "main", changed: Some(&docs) }, false),
        ("an ignored path and a wanted one", Event::Push { branch: "main", changed: Some(&both) }, true),
        ("nothing changed", Event::Push { branch: "main", changed: Some(&[]) }, false),
        ("a matching tag", Event::Tag { tag: "v1.2.0" }, true),
        ("another tag", Event::Tag { tag: "nightly" }, false),
        ("a pull request into main", Event::PullRequest { target: "main", changed: None }, true),
        ("a pull request into dev", Event::PullRequest { target: "dev", changed: None }, false),
        ("its schedule", Event::Schedule { cron: "0 3 * * *" }, true),
        ("another schedule", Event::Schedule { cron: "0 4 * * *" }, false),
        ("by hand, though `manual` is not listed", Event::Manual, true),
    ];
    for (case, event, want) in cases {
        assert_eq!(triggers.wants(&event), want, "{case}");
    }
    let default = Triggers::default();
    assert!(default.wants(&Event::Push { branch: "any/thing", changed: Some(&[]) }), "no `on`: every push");
    assert!(default.wants(&Event::Tag { tag: "x" }), "no `on`: every tag");
    assert!(!default.wants(&Event::PullRequest { target: "main", changed: None }), "no `on`: no pull requests");
}

#[test]
fn bad_triggers_are_refused_where_they_are_written() {
    // (case, `on:` as written, line, column, message)
    let cases = [
        (
            "a cron that does not parse",
            "on:\n  schedule:\n    - cron: '0 3 * *'\n",
            4,
            13,
            "invalid cron `0 3 * *`: a cron expression has five fields",
        ),
        ("a cron with a bad field", "on:\n  schedule:\n    - cron: '61 3 * * *'\n", 4, 13, "invalid cron `61 3 * * *`"),
        (
            "a branch filter that does not parse",
            "on:\n  push:\n    branches: ['release/[']\n",
            4,
            16,
            "invalid pattern `release/[` in `branches` of `on.push`",
        ),
        ("an unknown event", "on: [push, merge_request]\n", 2, 12, "unknown event `merge_request` in `on`"),
        ("an unknown filter", "on:\n  push: {branch: [main]}\n", 3, 10, "unknown key `branch` in `on.push`"),
        ("an empty `on`", "on:\n", 2, 1, "`on` is empty"),
        ("a schedule without crons", "on: [schedule]\n", 2, 6, "`schedule` needs its cron expressions"),
        (
            "a twice-listed cron",
            "on:\n  schedule: [{cron: '* * * * *'}, {cron: '* * * * *'}]\n",
            3,
            42,
            "cron `* * * * *` is listed twice",
        ),
    ];
    for (case, yaml, line, column, message) in cases {
        let text = format!("name: p\n{yaml}{JOBS}");
        let err = parse("ci.yml", &text).expect_err(case);
        let d = &err.diagnostics[0];
        assert_eq!(err.diagnostics.len(), 1, "{case}: {err}");
        assert!(d.message.contains(message), "{case}: {err}");
        assert_eq!((d.line, d.column), (line, column), "{case}: {err}");
        assert!(d.hint.is_some(), "{case}: every refusal says how to fix it: {err}");
    }
}

#[test]
fn cron_ticks_are_found_after_and_before_a_time() {
    // 2026-12-02T03:00:00Z.
    let three = 1_796_180_400_000_u64;
    let daily = Schedule { cron: "0 3 * * *".into() };
    let day = 24 * 3600 * 1000;
    // (case, last fired, now, the tick due)
    let cases = [
        ("not yet", three - day, three - 1, None),
        ("at the tick", three - day, three, Some(three)),
        ("a failover later", three - day, three + 90_000, Some(three)),
        ("already fired", three, three + 90_000, None),
        ("two ticks missed: the latest, once", three - 2 * day, three + 1, Some(three)),
    ];
    for (case, last, now, want) in cases {
        assert_eq!(daily.due(last, now), want, "{case}");
    }
    let minutely = Schedule { cron: "* * * * *".into() };
    assert_eq!(minutely.due(three, three + 60_000), Some(three + 60_000), "the next minute");
    assert_eq!(minutely.due(three, three + 59_999), None, "not yet");
}
