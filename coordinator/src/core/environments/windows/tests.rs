//! Tables of deploy windows and times, and whether deploys must wait then,
//! why, and until when; and of windows and what their checks say.

use chrono::NaiveDateTime;

use super::*;

/// `2026-12-03 09:00` (UTC) in milliseconds.
fn utc(text: &str) -> u64 {
    let at = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap_or_else(|e| panic!("{text}: {e}"));
    u64::try_from(at.and_utc().timestamp_millis()).unwrap()
}

fn window(kind: WindowKind, cron: &str, for_text: &str, timezone: &str) -> Window {
    Window {
        kind,
        cron: cron.into(),
        for_ms: parse_for(for_text).unwrap(),
        timezone: timezone.into(),
        reason: String::new(),
    }
}

fn allow(cron: &str, for_text: &str, timezone: &str) -> Window {
    window(WindowKind::Allow, cron, for_text, timezone)
}

fn deny(cron: &str, for_text: &str, reason: &str) -> Window {
    Window { reason: reason.into(), ..window(WindowKind::Deny, cron, for_text, "UTC") }
}

/// (what, the windows, now in UTC, the start of `why` or `None` for open,
/// when it reopens)
type Case<'a> = (&'a str, Vec<Window>, &'a str, Option<&'a str>, Option<&'a str>);

#[test]
fn closed_says_when_deploys_wait_why_and_until_when() {
    // 2026-12-03 is a Thursday; Berlin is UTC+1 in December, UTC+2 in July.
    let office = allow("0 9 * * 1-5", "8h", "Europe/Berlin");
    let office_utc = allow("0 9 * * 1-5", "8h", "UTC");
    let christmas = deny("0 0 24 12 *", "48h", "christmas");
    let hourly = deny("0 * * * *", "2h", "");
    let both = [office.clone(), christmas.clone()];
    let late = allow("0 20 * * *", "1h", "UTC");
    let overlapped = [allow("0 9 * * *", "1h", "UTC"), deny("0 9 * * *", "1h", "")];

    let outside = "outside the deploy windows (allow \"0 9 * * 1-5\" for 8h, Europe/Berlin); the next opens";
    let (thursday, friday, july) = (
        format!("{outside} 2026-12-03 09:00 Europe/Berlin"),
        format!("{outside} 2026-12-04 09:00 Europe/Berlin"),
        format!("{outside} 2026-07-02 09:00 Europe/Berlin"),
    );
    let held = "deny window \"christmas\" (\"0 0 24 12 *\" for 48h, UTC) holds until 2026-12-26 00:00 UTC";
    let cases: Vec<Case<'_>> = vec![
        ("no windows: always open", vec![], "2026-12-25 12:00", None, None),
        ("allow, inside (09:30 Berlin)", vec![office.clone()], "2026-12-03 08:30", None, None),
        (
            "allow, before it opens (08:30 Berlin)",
            vec![office.clone()],
            "2026-12-03 07:30",
            Some(thursday.as_str()),
            Some("2026-12-03 08:00"),
        ),
        ("allow, at its tick exactly", vec![office.clone()], "2026-12-03 08:00", None, None),
        ("allow, a minute before its end", vec![office.clone()], "2026-12-03 15:59", None, None),
        (
            "allow, at its end exactly: over",
            vec![office.clone()],
            "2026-12-03 16:00",
            Some(friday.as_str()),
            Some("2026-12-04 08:00"),
        ),
        (
            "allow, on a Saturday: Monday",
            vec![office.clone()],
            "2026-12-05 10:00",
            Some(outside),
            Some("2026-12-07 08:00"),
        ),
        (
            "the zone shifts the window: 08:30 UTC is before 09:00 UTC",
            vec![office_utc.clone()],
            "2026-12-03 08:30",
            Some("outside the deploy windows (allow \"0 9 * * 1-5\" for 8h, UTC); the next opens 2026-12-03 09:00 UTC"),
            Some("2026-12-03 09:00"),
        ),
        ("16:30 UTC: open in UTC", vec![office_utc], "2026-12-03 16:30", None, None),
        (
            "16:30 UTC: 17:30 in Berlin, over",
            vec![office.clone()],
            "2026-12-03 16:30",
            Some(friday.as_str()),
            Some("2026-12-04 08:00"),
        ),
        ("summer time: 07:30 UTC is 09:30 in Berlin", vec![office.clone()], "2026-07-02 07:30", None, None),
        (
            "summer time: 06:30 UTC is 08:30 in Berlin",
            vec![office.clone()],
            "2026-07-02 06:30",
            Some(july.as_str()),
            Some("2026-07-02 07:00"),
        ),
        ("deny, before it", vec![christmas.clone()], "2026-12-23 23:59", None, None),
        ("deny, inside", vec![christmas.clone()], "2026-12-25 12:00", Some(held), Some("2026-12-26 00:00")),
        (
            "deny, a minute before its end",
            vec![christmas.clone()],
            "2026-12-25 23:59",
            Some(held),
            Some("2026-12-26 00:00"),
        ),
        ("deny, at its end exactly: open again", vec![christmas.clone()], "2026-12-26 00:00", None, None),
        ("deny without a reason", vec![hourly.clone()], "2026-12-03 10:00", Some("deny window (\"0 * * * *\""), None),
        (
            "deny wins over an allow that holds; then the weekend, then Monday",
            both.to_vec(),
            "2026-12-24 09:00",
            Some(held),
            Some("2026-12-28 08:00"),
        ),
        ("both, an ordinary weekday", both.to_vec(), "2026-12-03 09:00", None, None),
        (
            "several allows: the next to open is named",
            vec![office.clone(), late.clone()],
            "2026-12-03 18:00",
            Some("outside the deploy windows (allow \"0 20 * * *\" for 1h, UTC); the next opens 2026-12-03 20:00 UTC"),
            Some("2026-12-03 20:00"),
        ),
        ("several allows: either holds", vec![office, late], "2026-12-03 20:30", None, None),
        (
            "a deny longer than its period never ends: no reopening, in bounded time",
            vec![hourly],
            "2026-12-03 10:00",
            Some("deny window"),
            None,
        ),
        (
            "every allow covered by a deny: no reopening",
            overlapped.to_vec(),
            "2026-12-03 08:00",
            Some("outside the deploy windows (allow \"0 9 * * *\" for 1h, UTC); the next opens 2026-12-03 09:00 UTC"),
            None,
        ),
    ];
    for (what, windows, now, want, reopens) in cases {
        let got = closed(&windows, utc(now));
        match (want, &got) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.why.starts_with(want), "{what}: want {want:?}, got {:?}", got.why);
                assert_eq!(got.reopens_ms, reopens.map(utc), "{what}: {got:?}");
            }
            _ => panic!("{what}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn an_environment_names_itself_and_a_window_that_cannot_be_read_closes_it() {
    let spec = super::super::Spec {
        name: "production".into(),
        windows: vec![allow("0 9 * * 1-5", "8h", "Europe/Berlin")],
        ..Default::default()
    };
    let why = spec.closed(utc("2026-12-02 07:30")).unwrap().why;
    assert_eq!(
        why,
        "outside the deploy windows of production (allow \"0 9 * * 1-5\" for 8h, Europe/Berlin); the next opens \
         2026-12-02 09:00 Europe/Berlin"
    );
    let christmas = super::super::Spec { windows: vec![deny("0 0 24 12 *", "48h", "christmas")], ..spec.clone() };
    assert!(
        christmas.closed(utc("2026-12-24 12:00")).unwrap().why.starts_with("deny window \"christmas\" of production")
    );
    // Stored under rules that read it; a rule that no longer does waits.
    let broken = super::super::Spec { windows: vec![allow("0 9 * * 1-5", "8h", "Nowhere/City")], ..spec };
    let closed = broken.closed(utc("2026-12-02 10:00")).unwrap();
    assert!(
        closed
            .why
            .contains("deploy window 1 (allow \"0 9 * * 1-5\" for 8h, Nowhere/City) of production cannot be read"),
        "{closed:?}"
    );
    assert_eq!(closed.reopens_ms, None);
}

#[test]
fn windows_are_checked_with_their_fixes() {
    let ok = allow("0 9 * * 1-5", "8h", "Europe/Berlin");
    assert!(window_problems(&ok).is_empty());
    // (what, the window, what one of its problems says)
    let refused: Vec<(&str, Window, &str)> = vec![
        ("a cron of three fields", Window { cron: "* * *".into(), ..ok.clone() }, "five fields"),
        ("a minute out of range", Window { cron: "61 * * * *".into(), ..ok.clone() }, "\"61 * * * *\" does not parse"),
        ("a date that never comes", Window { cron: "0 0 30 2 *".into(), ..ok.clone() }, "never ticks"),
        ("a window too short", Window { for_ms: 30_000, ..ok.clone() }, "open for 30s is refused: `for` is 1m to 744h"),
        ("a window too long", Window { for_ms: MAX_WINDOW_MS + 1, ..ok.clone() }, "env freeze"),
        (
            "a zone in lower case",
            Window { timezone: "europe/berlin".into(), ..ok.clone() },
            "unknown time zone \"europe/berlin\"; did you mean `Europe/Berlin`? give an IANA name such as `UTC`",
        ),
        ("no such zone", Window { timezone: "Mars/Olympus".into(), ..ok.clone() }, "such as `UTC` or `Europe/Berlin`"),
        ("a long reason", Window { reason: "x".repeat(MAX_REASON_LEN + 1), ..ok.clone() }, "201 characters"),
        ("a reason on two lines", Window { reason: "a\nb".into(), ..ok.clone() }, "on one line"),
    ];
    for (what, window, want) in refused {
        let problems = window_problems(&window);
        assert!(problems.iter().any(|p| p.contains(want)), "{what}: want {want:?} in {problems:#?}");
    }
    assert_eq!(windows_size_problem(MAX_WINDOWS), None);
    assert!(windows_size_problem(MAX_WINDOWS + 1).unwrap().starts_with("17 deploy windows, over the limit of 16"));
    assert!(window_kind_problem(true, true).unwrap().contains("both `allow` and `deny`"));
    assert!(window_kind_problem(false, false).unwrap().contains("neither"));
    assert_eq!(window_kind_problem(true, false), None);
    // (text, milliseconds or a problem)
    let durations: &[(&str, Result<u64, &str>)] = &[
        ("1m", Ok(60_000)),
        ("1h30m", Ok(5_400_000)),
        ("744h", Ok(MAX_WINDOW_MS)),
        ("8 hours", Err("is not a duration")),
        ("2d", Err("is not a duration")),
        ("59s", Err("refused")),
        ("745h", Err("refused")),
    ];
    for (text, want) in durations {
        match (parse_for(text), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, _) => panic!("{text}: {got:?}"),
        }
    }
    let lengths = [(48 * 3_600_000, "48h"), (5_400_000, "1h30m"), (90_000, "1m30s"), (500, "0s")];
    for (ms, want) in lengths {
        assert_eq!(hours(ms), want);
    }
    // `check` tidies a window: no zone is UTC, text trimmed.
    let spec = super::super::Spec {
        name: "prod".into(),
        selector: [("r".to_owned(), "w".to_owned())].into(),
        windows: vec![Window { cron: " 0 9 * * * ".into(), timezone: String::new(), reason: " x ".into(), ..ok }],
        ..Default::default()
    };
    let tidied = super::super::check(spec).unwrap();
    assert_eq!(tidied.windows[0].cron, "0 9 * * *");
    assert_eq!((tidied.windows[0].timezone.as_str(), tidied.windows[0].reason.as_str()), ("UTC", "x"));
}
