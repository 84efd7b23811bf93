//! Notifications tested: filtering and rendering with tables, targets
//! checked and kept in a real store, and delivery against real HTTP
//! servers on port 0 (a std listener on a thread of the test's own).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::controller::tests::{TestDir, store_and_segments};
use crate::store::{Op, Txn};

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        url: "https://hooks.example.com/services/T0/B0/secret".into(),
        format: Format::Json,
        min_severity: Severity::Info,
        environments: vec![],
        kinds: vec![],
        created_by: "alice".into(),
        created_ms: 1,
    }
}

fn notice(kind: Kind, environment: &str) -> Notice {
    Notice::new(kind, environment, "web", "node web-1 failed its health check", 1_700_000_000_123)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn kinds_and_severities_have_one_name_each() {
    for kind in Kind::ALL.into_iter().chain([Kind::Test]) {
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()), "{kind:?}");
    }
    for kind in Kind::ALL {
        assert_eq!(Kind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(Kind::parse("test"), None, "a target cannot ask for the test notice");
    assert_eq!(Kind::RolloutRolledBack.as_str(), "rollout_rolled_back");
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    for severity in Severity::ALL {
        assert_eq!(serde_json::to_value(severity).unwrap(), json!(severity.as_str()));
        assert_eq!(Severity::parse(severity.as_str()), Ok(severity));
    }
    assert_eq!(Severity::parse(""), Ok(Severity::Info));
    assert!(Severity::parse("error").unwrap_err().contains("use info, warning or critical"));
    assert_eq!(Notice::new(Kind::RolloutFailed, "p", "web", "", 0).severity, Severity::Critical);
}

#[test]
fn a_target_takes_the_notices_it_wants() {
    let with = |min: Severity, envs: &[&str], kinds: &[&str]| Target {
        min_severity: min,
        environments: strings(envs),
        kinds: strings(kinds),
        ..target("t")
    };
    use Severity::*;
    // (case, target, notice, wanted)
    let cases = [
        ("no filters take everything", with(Info, &[], &[]), notice(Kind::RolloutStarted, "staging"), true),
        ("severity equal to the least", with(Warning, &[], &[]), notice(Kind::RolloutRolledBack, "s"), true),
        ("severity above the least", with(Warning, &[], &[]), notice(Kind::RolloutFailed, "s"), true),
        ("severity below the least", with(Warning, &[], &[]), notice(Kind::RolloutSucceeded, "s"), false),
        ("critical only", with(Critical, &[], &[]), notice(Kind::AnalysisFailed, "s"), false),
        ("a named environment", with(Info, &["prod", "staging"], &[]), notice(Kind::GateWaiting, "staging"), true),
        ("another environment", with(Info, &["prod"], &[]), notice(Kind::GateWaiting, "staging"), false),
        ("no environment, envs named", with(Info, &["prod"], &[]), notice(Kind::FreezeStarted, ""), false),
        ("a named kind", with(Info, &[], &["sync_failed", "rollout_failed"]), notice(Kind::SyncFailed, "s"), true),
        ("another kind", with(Info, &[], &["sync_failed"]), notice(Kind::SyncSucceeded, "s"), false),
        ("all three hold", with(Warning, &["prod"], &["rollout_failed"]), notice(Kind::RolloutFailed, "prod"), true),
        ("kind holds, env not", with(Warning, &["prod"], &["rollout_failed"]), notice(Kind::RolloutFailed, "s"), false),
        (
            "severity raised by the sender",
            with(Critical, &[], &[]),
            notice(Kind::GateWaiting, "s").with_severity(Critical),
            true,
        ),
    ];
    for (case, target, notice, want) in cases {
        assert_eq!(wants(&target, &notice), want, "{case}");
    }
}

#[test]
fn a_json_target_gets_the_notice_as_an_object() {
    let full = notice(Kind::RolloutRolledBack, "production")
        .with_rollout(42)
        .with_app("shop")
        .with_field("version", "3f9a1c2b7d4e");
    let bare = Notice::new(Kind::FreezeStarted, "production", "", "the quarter closes", 5);
    // (case, notice, body)
    let cases = [
        (
            "every field",
            full,
            json!({
                "kind": "rollout_rolled_back", "severity": "warning", "environment": "production", "service": "web",
                "rollout": 42, "app": "shop", "message": "node web-1 failed its health check",
                "at_ms": 1_700_000_000_123_u64, "fields": {"version": "3f9a1c2b7d4e"},
            }),
        ),
        (
            "no rollout, app or fields",
            bare,
            json!({
                "kind": "freeze_started", "severity": "info", "environment": "production", "service": "",
                "rollout": null, "app": null, "message": "the quarter closes", "at_ms": 5, "fields": {},
            }),
        ),
    ];
    for (case, notice, want) in cases {
        assert_eq!(body(&target("t"), &notice), want, "{case}");
    }
}

#[test]
fn a_summary_is_one_line_naming_what_and_where() {
    let cases = [
        (
            notice(Kind::RolloutFailed, "production").with_rollout(42),
            "Rollout failed: web in production (rollout 42): node web-1 failed its health check",
        ),
        (Notice::new(Kind::FreezeEnded, "staging", "", "", 0), "Freeze ended: staging"),
        (
            Notice::new(Kind::SyncFailed, "staging", "", "render:\n  bad file", 0).with_app("shop"),
            "Sync failed: app shop in staging: render: bad file",
        ),
        (Notice::new(Kind::Test, "", "", "hello", 0), "Test: hello"),
    ];
    for (notice, want) in cases {
        assert_eq!(summary(&notice), want);
    }
    let long = Notice::new(Kind::GateWaiting, "s", "web", "x".repeat(1000), 0);
    assert_eq!(summary(&long).chars().count(), 300);
    assert!(summary(&long).ends_with('…'));
}

#[test]
fn a_slack_target_gets_a_message_with_a_bar_coloured_by_severity() {
    let slack = Target { format: Format::Slack, ..target("ops") };
    // (severity, colour)
    let cases = [(Severity::Info, "#439FE0"), (Severity::Warning, "#DAA038"), (Severity::Critical, "#A30200")];
    for (severity, colour) in cases {
        let body = body(&slack, &notice(Kind::GateDecided, "staging").with_severity(severity));
        assert_eq!(body["attachments"][0]["color"], colour, "{severity:?}");
    }

    let n = Notice::new(Kind::RolloutFailed, "production", "web", "<!channel> a & b > c", 1_700_000_000_999)
        .with_rollout(7)
        .with_field("version", "3f9a1c2b7d4e");
    let want = json!({
        "text": "Rollout failed: web in production (rollout 7): &lt;!channel&gt; a &amp; b &gt; c",
        "attachments": [{
            "color": "#A30200",
            "fallback": "Rollout failed: web in production (rollout 7): &lt;!channel&gt; a &amp; b &gt; c",
            "fields": [
                {"title": "Severity", "value": "critical", "short": true},
                {"title": "Environment", "value": "production", "short": true},
                {"title": "Service", "value": "web", "short": true},
                {"title": "Rollout", "value": "7", "short": true},
                {"title": "version", "value": "3f9a1c2b7d4e", "short": true},
                {"title": "Message", "value": "&lt;!channel&gt; a &amp; b &gt; c", "short": false},
            ],
            "footer": "Drover · rollout_failed",
            "ts": 1_700_000_000_u64,
        }],
    });
    assert_eq!(body(&slack, &n), want);
}

#[test]
fn a_bad_target_is_refused_saying_what_to_do() {
    let many: Vec<String> = (0..17).map(|i| format!("env-{i}")).collect();
    // (case, change, what the refusal says; "" for none)
    let cases: Vec<(&str, Target, &str)> = vec![
        ("fine", target("ops"), ""),
        ("a bad name", target("-ops"), "invalid notification target name \"-ops\""),
        ("a name with a slash", target("a/b"), "e.g. `ops`"),
        ("no URL", Target { url: String::new(), ..target("t") }, "give the webhook's --url"),
        ("ftp", Target { url: "ftp://example.com/x".into(), ..target("t") }, "must start with http:// or https://"),
        ("no host", Target { url: "http:///x".into(), ..target("t") }, "names no host"),
        ("no scheme", Target { url: "hooks.slack.com/x".into(), ..target("t") }, "must start with http://"),
        ("no host, only a port", Target { url: "http://:80/x".into(), ..target("t") }, "names no host"),
        ("not a URL", Target { url: "https://[::1/x".into(), ..target("t") }, "--url is not a URL"),
        ("a space", Target { url: "https://a.example/x y".into(), ..target("t") }, "a space or a control"),
        (
            "too long",
            Target { url: format!("https://a.example/{}", "x".repeat(2048)), ..target("t") },
            "over the limit of 2048",
        ),
        ("a bad environment", Target { environments: strings(&["prod eu"]), ..target("t") }, "--env: invalid"),
        ("17 environments", Target { environments: many.clone(), ..target("t") }, "over the limit of 16"),
        ("16 environments", Target { environments: many[..16].to_vec(), ..target("t") }, ""),
        (
            "an unknown kind",
            Target { kinds: strings(&["rollout_failed", "deploy_failed"]), ..target("t") },
            "unknown kind \"deploy_failed\"; the kinds are rollout_started, rollout_succeeded",
        ),
        ("the test kind", Target { kinds: strings(&["test"]), ..target("t") }, "unknown kind \"test\""),
    ];
    for (case, target, want) in cases {
        match check(target) {
            Ok(_) => assert!(want.is_empty(), "{case}: accepted"),
            Err(why) => assert!(!want.is_empty() && why.contains(want), "{case}: {why}"),
        }
    }
    let secret = check(Target { url: "ftp://x/secret-token".into(), ..target("t") }).unwrap_err();
    assert!(!secret.contains("secret-token"), "the URL is not repeated: {secret}");
    let kept = check(Target {
        environments: strings(&["prod", "staging", "prod"]),
        kinds: strings(&["sync_failed", "sync_failed"]),
        ..target("t")
    })
    .unwrap();
    assert_eq!((kept.environments, kept.kinds), (strings(&["prod", "staging"]), strings(&["sync_failed"])));
}

#[tokio::test]
async fn targets_are_added_replaced_listed_and_removed() {
    let dir = TestDir::new("notify-targets");
    let (store, _) = store_and_segments(&dir).await;
    let store = store.as_ref();
    add(store, target("ops")).await.unwrap();
    add(store, Target { format: Format::Slack, ..target("chat") }).await.unwrap();
    add(store, Target { min_severity: Severity::Critical, ..target("ops") }).await.unwrap();
    let listed = list(store).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["chat", "ops"]);
    assert_eq!(get(store, "ops").await.unwrap().min_severity, Severity::Critical, "replaced");

    let err = add(store, target("bad name")).await.unwrap_err();
    assert!(matches!(err, NotificationsError::Invalid(_)), "{err}");
    for i in 2..MAX_TARGETS {
        add(store, target(&format!("t{i}"))).await.unwrap();
    }
    let err = add(store, target("one-more")).await.unwrap_err();
    assert!(err.to_string().contains("remove one with `drover notify rm NAME`"), "{err}");
    add(store, target("ops")).await.expect("replacing one is not adding one");

    assert_eq!(remove(store, "chat").await.unwrap().format, Format::Slack);
    let err = remove(store, "chat").await.unwrap_err();
    assert_eq!(err.to_string(), "there is no notification target \"chat\"; `drover notify list` lists them");
    assert!(matches!(get(store, "chat").await, Err(NotificationsError::NotFound(_))));

    // A record that does not decode is an error naming its key, not skipped.
    store.txn(Txn::ops(vec![Op::put(format!("{NOTIFICATIONS}broken"), "{")])).await.unwrap();
    let err = load(store).await.unwrap_err();
    assert!(err.to_string().contains("/notifications/broken"), "{err}");
}

/// A webhook on a free port, on a thread: each request's head and JSON
/// body are kept, and answered with the next of `statuses`, then 200.
struct Hook {
    port: u16,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Hook {
    fn start(statuses: &[u16]) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let (kept, statuses) = (seen.clone(), statuses.to_vec());
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut head, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    kept.lock().unwrap().push((head, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                let status = statuses.next().unwrap_or(200);
                let _ = write!(conn, "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope");
            }
        });
        Hook { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook/secret-token", self.port)
    }

    fn messages(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|(_, body)| body["message"].as_str().unwrap_or("").to_owned()).collect()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `cond` holds, or fails the test at the deadline.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Short waits, small queues.
fn quick() -> Settings {
    Settings {
        queue: 8,
        target_queue: 8,
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(100),
        attempts: 5,
        give_up_after: Duration::from_secs(20),
        call_timeout: Duration::from_secs(3),
    }
}

async fn notifier_for(dir: &TestDir, targets: Vec<Target>) -> Notifier {
    let (store, _) = store_and_segments(dir).await;
    for t in targets {
        add(store.as_ref(), t).await.unwrap();
    }
    Notifier::spawn_with(store, quick())
}

fn numbered(i: usize) -> Notice {
    Notice::new(Kind::RolloutStarted, "staging", "web", format!("notice {i}"), i as u64)
}

#[tokio::test]
async fn a_target_that_fails_twice_gets_each_notice_once_in_order() {
    let dir = TestDir::new("notify-retries");
    let hook = Hook::start(&[500, 500]);
    let notifier = notifier_for(&dir, vec![Target { url: hook.url(), ..target("hook") }]).await;
    notifier.send(numbered(1));
    notifier.send(numbered(2));
    eventually("both delivered", Duration::from_secs(10), || notifier.counts().delivered == 2).await;
    assert_eq!(hook.messages(), ["notice 1", "notice 1", "notice 1", "notice 2"], "two retries, then in order");
    assert_eq!(notifier.counts(), Counts { delivered: 2, failed: 0, dropped: 0 });
    let (head, body) = hook.seen.lock().unwrap()[3].clone();
    assert!(head.starts_with("POST /hook/secret-token HTTP/1.1"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    assert_eq!(body["kind"], "rollout_started");
}

#[tokio::test]
async fn a_dead_target_is_counted_failed_and_holds_up_neither_the_sender_nor_other_targets() {
    let dir = TestDir::new("notify-dead");
    let live = Hook::start(&[]);
    // Bound but never accepted: a connection waits in the backlog, and
    // the request is never answered.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let targets = vec![
        Target { url: format!("http://127.0.0.1:{}/x", closed_port()), ..target("dead") },
        Target { url: format!("http://127.0.0.1:{}/x", hung.local_addr().unwrap().port()), ..target("hung") },
        Target { url: live.url(), ..target("live") },
        Target { kinds: strings(&["sync_failed"]), url: live.url(), ..target("picky") },
    ];
    let notifier = notifier_for(&dir, targets).await;

    // The test's runtime has one thread, so nothing is taken from the
    // queue (of 8) while the sends run: the rest are dropped, at once.
    let started = tokio::time::Instant::now();
    for i in 0..100 {
        notifier.send(numbered(i));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "sending took {:?}", started.elapsed());
    assert_eq!(notifier.counts().dropped, 92);

    // The live target gets its 8 in order while the hung one waits on its
    // first (3 s a try), and the dead one fails each of its 8.
    eventually("the live target's notices", Duration::from_secs(10), || live.messages().len() == 8).await;
    let want: Vec<String> = (0..8).map(|i| format!("notice {i}")).collect();
    assert_eq!(live.messages(), want);
    eventually("the dead target's failures", Duration::from_secs(10), || notifier.counts().failed == 8).await;
    assert_eq!(notifier.counts(), Counts { delivered: 8, failed: 8, dropped: 92 });
}

#[tokio::test]
async fn a_test_notice_says_how_the_target_answered() {
    let hook = Hook::start(&[503]);
    let slack = Target { url: hook.url(), format: Format::Slack, ..target("chat") };
    let refused = send_test(&slack, "alice", 1_000).await;
    assert_eq!((refused.status, refused.error.as_str()), (503, "answered 503: nope"));
    let ok = send_test(&slack, "alice", 1_000).await;
    assert_eq!((ok.status, ok.error.as_str()), (200, ""));
    let (_, body) = hook.seen.lock().unwrap()[1].clone();
    assert_eq!(body["text"], "Test: a test of notification target chat (`drover notify test`, by alice)");

    let dead = Target { url: format!("http://127.0.0.1:{}/secret-token", closed_port()), ..target("dead") };
    let unanswered = send_test(&dead, "alice", 1_000).await;
    assert_eq!(unanswered.status, 0);
    assert!(!unanswered.error.is_empty() && !unanswered.error.contains("secret-token"), "{}", unanswered.error);
}
