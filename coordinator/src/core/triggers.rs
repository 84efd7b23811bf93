//! The rules of repositories and triggers, apart from the controller that
//! polls, clones and submits (`crate::triggers`): what a repository's
//! settings may be ([`name_problem`], [`url_problem`], [`branches_problem`],
//! [`poll_problem`]), what `git ls-remote` said
//! ([`parse_ls_remote`]), which heads start runs ([`observe`]), which cron
//! ticks fire ([`due_schedules`]), the trigger keys that make each start
//! happen once ([`push_key`] and its siblings), and the jittered poll
//! period ([`poll_delay`]). Pure: the time is an argument.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_pipeline::triggers::{MAX_PATTERNS, Schedule, pattern_problem};

/// The most repositories a cluster may register.
pub const MAX_REPOS: usize = 1000;
/// The most `--branches` patterns of one repository.
pub const MAX_BRANCH_PATTERNS: usize = MAX_PATTERNS;
/// The longest repository name.
pub const MAX_NAME_LEN: usize = 100;
/// The longest repository URL.
pub const MAX_URL_LEN: usize = 2048;
/// The largest webhook secret, in bytes.
pub const MAX_WEBHOOK_SECRET_BYTES: usize = 1024;
/// The most webhook deliveries one repository may have waiting for the
/// leader (it handles them within a second or so; more means it is away).
pub const MAX_QUEUED_DELIVERIES: usize = 1000;
/// The longest webhook delivery id, in bytes.
pub const MAX_DELIVERY_ID_LEN: usize = 200;
/// The poll period when none is given, and its bounds.
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);
pub const MIN_POLL: Duration = Duration::from_secs(1);
pub const MAX_POLL: Duration = Duration::from_secs(24 * 3600);
/// How long intents and delivery ids are kept: a replay or a failover
/// older than this could start a run again.
pub const KEEP_TRIGGERS_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// The URL schemes a repository may have, for the error that names them.
pub const SCHEMES: &str = "https://, http://, ssh://, git://, file://, an absolute path, or scp-like user@host:path";

/// Heads by full ref name (`refs/heads/main`, `refs/tags/v1`): commit.
pub type Heads = BTreeMap<String, String>;

/// Why `name` cannot name a repository, if it cannot: like a job name.
pub fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (!ok).then(|| {
        format!(
            "invalid repository name {name:?}: use letters, digits, `_`, `.` and `-`, starting with a letter or \
             a digit, at most {MAX_NAME_LEN} characters (e.g. `web-app`)"
        )
    })
}

/// Why `url` is not a repository URL Drover can poll, if it is not.
pub fn url_problem(url: &str) -> Option<String> {
    if url.is_empty() {
        return Some(format!("--url is empty; give the repository's URL: {SCHEMES}"));
    }
    if url.len() > MAX_URL_LEN {
        return Some(format!("the URL is {} bytes, over the limit of {MAX_URL_LEN}", url.len()));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(format!("the URL {url:?} has spaces or control characters; write it without"));
    }
    if url.starts_with('-') {
        return Some(format!("the URL {url:?} starts with `-`, which git would take for an option"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let known = ["https", "http", "ssh", "git", "file"];
        if !known.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Some(format!("unsupported URL scheme `{scheme}://` in {url:?}; use {SCHEMES}"));
        }
        if rest.is_empty() || rest == "/" {
            return Some(format!("the URL {url:?} names no repository after `{scheme}://`"));
        }
        return None;
    }
    if url.starts_with('/') {
        return None;
    }
    // scp-like: user@host:path, where the part before `:` has no `/`.
    if let Some((host, path)) = url.split_once(':')
        && let Some((user, host)) = host.split_once('@')
        && !user.is_empty()
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
    {
        return None;
    }
    Some(format!(
        "{url:?} is not a repository URL Drover can poll (a relative path means nothing to the coordinator); use \
         {SCHEMES}"
    ))
}

/// Why the `--branches` patterns are refused, if they are.
pub fn branches_problem(patterns: &[String]) -> Option<String> {
    if patterns.len() > MAX_BRANCH_PATTERNS {
        return Some(format!(
            "{} branch patterns, over the limit of {MAX_BRANCH_PATTERNS}; use globs (`release/*`) to cover several",
            patterns.len()
        ));
    }
    patterns.iter().find_map(|p| {
        pattern_problem(p).map(|why| {
            format!(
                "branch pattern {p:?} does not parse: {why}; patterns are globs where `*` matches within a path \
                 segment and `**` across them (`main`, `release/*`, `feature/**`)"
            )
        })
    })
}

/// Why `poll` is refused, if it is.
pub fn poll_problem(poll: Duration) -> Option<String> {
    (poll < MIN_POLL || poll > MAX_POLL).then(|| {
        format!(
            "--poll {}ms is out of range: poll between every 1s and every 24h (e.g. 30s, 5m); webhooks start runs \
             sooner than any poll",
            poll.as_millis()
        )
    })
}

/// Why a webhook delivery id is refused, if it is.
pub fn delivery_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("the delivery has no id".to_owned());
    }
    if id.len() > MAX_DELIVERY_ID_LEN {
        return Some(format!("the delivery id is {} bytes, over the limit of {MAX_DELIVERY_ID_LEN}", id.len()));
    }
    None
}

/// What `git ls-remote --symref URL HEAD 'refs/heads/*' 'refs/tags/*'`
/// said: the heads (an annotated tag at the commit it points to), and the
/// branch HEAD names, if it names one.
pub fn parse_ls_remote(text: &str) -> Result<(Heads, Option<String>), String> {
    let mut heads = Heads::new();
    let mut peeled = Heads::new();
    let mut default = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (left, name) = line.split_once('\t').ok_or_else(|| format!("git ls-remote printed {line:?}"))?;
        if let Some(target) = left.strip_prefix("ref: ") {
            if name == "HEAD" {
                default = target.strip_prefix("refs/heads/").map(str::to_owned);
            }
            continue;
        }
        if !(left.len() == 40 || left.len() == 64) || !left.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("git ls-remote printed {line:?}, not a commit id and a ref"));
        }
        if name == "HEAD" {
            continue;
        }
        match name.strip_suffix("^{}") {
            Some(tag) => peeled.insert(tag.to_owned(), left.to_owned()),
            None => heads.insert(name.to_owned(), left.to_owned()),
        };
    }
    heads.extend(peeled);
    Ok((heads, default))
}

/// A start a change of heads (or a webhook) asks for, before the pipeline
/// at that commit has had its say (`on:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// `branch` moved to `new`, from `old` when it existed before.
    Push { branch: String, old: Option<String>, new: String },
    /// A new tag, or a tag moved.
    Tag { tag: String, commit: String },
}

/// Whether `branch` passes a repository's `--branches` (none: every one).
pub fn branch_wanted(patterns: &[String], branch: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| drover_pipeline::triggers::matches(p, branch))
}

/// The starts a poll asks for: every branch whose head changed and that
/// the repository's `--branches` take, and every new or moved tag. With no
/// heads stored (a repository's first poll) the remote heads are only the
/// baseline. A deleted ref starts nothing.
pub fn observe(stored: Option<&Heads>, remote: &Heads, branches: &[String]) -> Vec<Start> {
    let Some(stored) = stored else { return Vec::new() };
    let mut starts = Vec::new();
    for (name, commit) in remote {
        let old = stored.get(name);
        if old == Some(commit) {
            continue;
        }
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            if branch_wanted(branches, branch) {
                starts.push(Start::Push { branch: branch.to_owned(), old: old.cloned(), new: commit.clone() });
            }
        } else if let Some(tag) = name.strip_prefix("refs/tags/") {
            starts.push(Start::Tag { tag: tag.to_owned(), commit: commit.clone() });
        }
    }
    starts
}

/// `text` as one key segment: every byte but letters, digits, `.`, `_`
/// and `-` as `%XX`, so `release/1.2` is one segment and keys stay ASCII.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn push_key(repo: &str, branch: &str, commit: &str) -> String {
    format!("push/{repo}/{}/{commit}", escape(branch))
}

pub fn tag_key(repo: &str, tag: &str, commit: &str) -> String {
    format!("tag/{repo}/{}/{commit}", escape(tag))
}

pub fn pr_key(repo: &str, number: u64, commit: &str) -> String {
    format!("pr/{repo}/{number}/{commit}")
}

pub fn cron_key(repo: &str, cron: &str, tick_ms: u64) -> String {
    format!("cron/{repo}/{}/{tick_ms}", escape(cron))
}

/// The repository a trigger key names.
pub fn repo_of_key(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

/// Each cron a repository's pipeline has and when it last fired (or was
/// first read), after a pass at `now_ms`, and the ticks to fire now: a
/// schedule seen for the first time starts from now (no old tick fires),
/// one that is gone is forgotten, and each other fires its last tick
/// after the one it fired last, if there is one (one tick, however many
/// were missed while no leader looked).
pub fn due_schedules(
    schedules: &[Schedule],
    fired: &BTreeMap<String, u64>,
    now_ms: u64,
) -> (BTreeMap<String, u64>, Vec<(String, u64)>) {
    let mut next = BTreeMap::new();
    let mut due = Vec::new();
    for schedule in schedules {
        if next.contains_key(&schedule.cron) {
            continue;
        }
        let last = match fired.get(&schedule.cron) {
            None => now_ms,
            Some(&last) => match schedule.due(last, now_ms) {
                Some(tick) => {
                    due.push((schedule.cron.clone(), tick));
                    tick
                }
                None => last,
            },
        };
        next.insert(schedule.cron.clone(), last);
    }
    (next, due)
}

/// The wait before a repository's next poll: `poll`, ±10% by `noise` (any
/// random number), so repositories added together do not poll together.
pub fn poll_delay(poll: Duration, noise: u32) -> Duration {
    poll.mul_f64(0.9 + f64::from(noise % 1001) / 5000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(list: &[(&str, &str)]) -> Heads {
        list.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repository_settings_are_checked_with_a_fix() {
        for name in ["web", "web-app.v2", "A_1"] {
            assert_eq!(name_problem(name), None, "{name}");
        }
        for name in ["", "-x", "a/b", "a b", &"a".repeat(101)] {
            assert!(name_problem(name).unwrap().contains("letters, digits"), "{name}");
        }
        let good = [
            "https://github.com/o/r.git",
            "http://git.local/r",
            "ssh://git@host/r",
            "git://host/r",
            "file:///srv/r",
            "/srv/git/r",
            "git@github.com:o/r.git",
        ];
        for url in good {
            assert_eq!(url_problem(url), None, "{url}");
        }
        // (url, what the error says)
        let bad = [
            ("ftp://x/r", "unsupported URL scheme `ftp://`"),
            ("", "--url is empty"),
            ("relative/path", "is not a repository URL"),
            ("-upload-pack=x", "starts with `-`"),
            ("https://", "names no repository"),
            ("https://x/a b", "spaces or control characters"),
        ];
        for (url, want) in bad {
            let why = url_problem(url).unwrap_or_else(|| panic!("{url} passed"));
            assert!(why.contains(want), "{url}: {why}");
        }
        assert!(url_problem("ftp://x/r").unwrap().contains("https://, http://, ssh://, git://, file://"));
        assert_eq!(branches_problem(&strings(&["main", "release/*", "feature/**"])), None);
        let why = branches_problem(&strings(&["main", "[oops"])).unwrap();
        assert!(why.contains("branch pattern \"[oops\" does not parse"), "{why}");
        let many: Vec<String> = (0..51).map(|i| format!("b{i}")).collect();
        assert!(branches_problem(&many).unwrap().contains("over the limit of 50"));
        assert_eq!(poll_problem(Duration::from_secs(1)), None);
        assert_eq!(poll_problem(Duration::from_secs(24 * 3600)), None);
        assert!(poll_problem(Duration::from_millis(500)).unwrap().contains("between every 1s and every 24h"));
        assert!(poll_problem(Duration::from_secs(24 * 3600 + 1)).is_some());
    }

    #[test]
    fn ls_remote_output_gives_heads_peeled_tags_and_the_default_branch() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let text = format!(
            "ref: refs/heads/main\tHEAD\n{a}\tHEAD\n{a}\trefs/heads/main\n{b}\trefs/heads/release/1\n\
             {c}\trefs/tags/v1\n{b}\trefs/tags/v1^{{}}\n{a}\trefs/tags/light\n"
        );
        let (got, default) = parse_ls_remote(&text).unwrap();
        let want = heads(&[
            ("refs/heads/main", &a),
            ("refs/heads/release/1", &b),
            ("refs/tags/light", &a),
            ("refs/tags/v1", &b),
        ]);
        assert_eq!(got, want);
        assert_eq!(default.as_deref(), Some("main"));
        assert_eq!(parse_ls_remote("").unwrap(), (Heads::new(), None));
        assert!(parse_ls_remote("nonsense").unwrap_err().contains("nonsense"));
        assert!(parse_ls_remote("xyz\trefs/heads/main").unwrap_err().contains("not a commit id"));
    }

    #[test]
    fn changed_heads_that_pass_the_filter_start_runs_and_the_first_poll_is_a_baseline() {
        let push = |branch: &str, old: Option<&str>, new: &str| Start::Push {
            branch: branch.into(),
            old: old.map(str::to_string),
            new: new.into(),
        };
        let stored = heads(&[
            ("refs/heads/main", "1"),
            ("refs/heads/dev", "2"),
            ("refs/heads/gone", "3"),
            ("refs/tags/v1", "4"),
        ]);
        // (case, stored, remote, --branches, starts)
        type Case = (&'static str, Option<Heads>, Heads, Vec<String>, Vec<Start>);
        let cases: Vec<Case> = vec![
            ("the first poll starts nothing", None, heads(&[("refs/heads/main", "9")]), vec![], vec![]),
            ("nothing changed", Some(stored.clone()), stored.clone(), vec![], vec![]),
            (
                "a moved branch, a new branch, a deleted one",
                Some(stored.clone()),
                heads(&[
                    ("refs/heads/main", "5"),
                    ("refs/heads/dev", "2"),
                    ("refs/heads/new", "6"),
                    ("refs/tags/v1", "4"),
                ]),
                vec![],
                vec![push("main", Some("1"), "5"), push("new", None, "6")],
            ),
            (
                "the filter takes main and release/*",
                Some(stored.clone()),
                heads(&[
                    ("refs/heads/main", "5"),
                    ("refs/heads/dev", "7"),
                    ("refs/heads/release/2", "8"),
                    ("refs/heads/release/2/x", "8"),
                ]),
                strings(&["main", "release/*"]),
                vec![push("main", Some("1"), "5"), push("release/2", None, "8")],
            ),
            (
                "new and moved tags, whatever the branch filter",
                Some(stored.clone()),
                heads(&[("refs/tags/v1", "5"), ("refs/tags/v2", "6"), ("refs/heads/main", "1")]),
                strings(&["main"]),
                vec![
                    Start::Tag { tag: "v1".into(), commit: "5".into() },
                    Start::Tag { tag: "v2".into(), commit: "6".into() },
                ],
            ),
        ];
        for (case, stored, remote, branches, want) in cases {
            assert_eq!(observe(stored.as_ref(), &remote, &branches), want, "{case}");
        }
    }

    #[test]
    fn trigger_keys_are_one_segment_per_part() {
        assert_eq!(push_key("web", "release/1.2", "abc"), "push/web/release%2F1.2/abc");
        assert_eq!(tag_key("web", "v1", "abc"), "tag/web/v1/abc");
        assert_eq!(pr_key("web", 42, "abc"), "pr/web/42/abc");
        assert_eq!(cron_key("web", "*/5 * * * *", 60_000), "cron/web/%2A%2F5%20%2A%20%2A%20%2A%20%2A/60000");
        assert_eq!(repo_of_key(&push_key("web", "a/b", "c")), Some("web"));
        assert_eq!(escape("ü"), "%C3%BC");
    }

    #[test]
    fn each_schedule_fires_its_last_due_tick_once_and_a_new_one_starts_from_now() {
        let minute = 60_000;
        let t = 1_800_000_000_000 - 1_800_000_000_000 % minute; // on a minute
        let every_minute = Schedule { cron: "* * * * *".into() };
        let hourly = Schedule { cron: "0 * * * *".into() };
        let fired = |list: &[(&str, u64)]| list.iter().map(|(c, t)| (c.to_string(), *t)).collect::<BTreeMap<_, _>>();
        // (case, schedules, fired before, now, fired after, ticks to fire)
        type Case =
            (&'static str, Vec<Schedule>, BTreeMap<String, u64>, u64, BTreeMap<String, u64>, Vec<(String, u64)>);
        let cases: Vec<Case> = vec![
            (
                "a new schedule starts from now",
                vec![every_minute.clone()],
                fired(&[]),
                t + 5,
                fired(&[("* * * * *", t + 5)]),
                vec![],
            ),
            (
                "within the same minute nothing fires",
                vec![every_minute.clone()],
                fired(&[("* * * * *", t + 5)]),
                t + 30_000,
                fired(&[("* * * * *", t + 5)]),
                vec![],
            ),
            (
                "the next minute fires once",
                vec![every_minute.clone()],
                fired(&[("* * * * *", t + 5)]),
                t + minute + 10,
                fired(&[("* * * * *", t + minute)]),
                vec![("* * * * *".into(), t + minute)],
            ),
            (
                "the same tick again fires nothing",
                vec![every_minute.clone()],
                fired(&[("* * * * *", t + minute)]),
                t + minute + 500,
                fired(&[("* * * * *", t + minute)]),
                vec![],
            ),
            (
                "after five minutes away: only the last tick",
                vec![every_minute.clone()],
                fired(&[("* * * * *", t)]),
                t + 5 * minute + 1,
                fired(&[("* * * * *", t + 5 * minute)]),
                vec![("* * * * *".into(), t + 5 * minute)],
            ),
            (
                "a schedule that is gone is forgotten",
                vec![hourly.clone()],
                fired(&[("* * * * *", t)]),
                t + 1,
                fired(&[("0 * * * *", t + 1)]),
                vec![],
            ),
        ];
        for (case, schedules, before, now, want_fired, want_due) in cases {
            let (after, due) = due_schedules(&schedules, &before, now);
            assert_eq!(after, want_fired, "{case}");
            assert_eq!(due, want_due, "{case}");
        }
    }

    #[test]
    fn polls_are_spread_by_a_tenth_either_way() {
        let poll = Duration::from_secs(30);
        assert_eq!(poll_delay(poll, 0), Duration::from_secs(27));
        assert_eq!(poll_delay(poll, 500), Duration::from_secs(30));
        assert_eq!(poll_delay(poll, 1000), Duration::from_secs(33));
        assert_eq!(poll_delay(poll, 1001), Duration::from_secs(27));
    }
}
