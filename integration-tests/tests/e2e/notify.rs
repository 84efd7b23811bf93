//! Notifications (issue 17), end to end with the real binaries: `drover
//! notify add`, `list -o json` (the URL's path withheld), `test` against a
//! real HTTP listener that receives the notice as JSON or as a Slack
//! message, a target that answers 500 (exit 1), bad targets (exit 2), and
//! `rm` (exit 4 the second time).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::deploys::json;
use crate::harness::Fleet;
use crate::harness::text;

/// A webhook on a free port: it answers every POST with the status set,
/// and keeps each request's head and body.
struct Hook {
    port: u16,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hook = Hook { port, status: Arc::new(AtomicU16::new(200)), seen: Arc::default() };
        let (answer, seen) = (hook.status.clone(), hook.seen.clone());
        std::thread::spawn(move || {
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
                    seen.lock().unwrap().push((head, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                let status = answer.load(Ordering::SeqCst);
                let _ = write!(conn, "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        });
        hook
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/services/T0/B0/secret-token", self.port)
    }

    fn last(&self) -> (String, Value) {
        self.seen.lock().unwrap().last().cloned().expect("a request")
    }
}

fn fails_with(fleet: &Fleet, args: &[&str], code: i32, says: &str) {
    let out = fleet.drover(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "drover {args:?}: {stderr}");
    assert!(stderr.contains(says), "drover {args:?}: {stderr}");
}

#[test]
fn a_target_is_added_listed_tested_and_removed() {
    let fleet = Fleet::start("notify");
    let hook = Hook::start();
    let url = hook.url();
    let added = json(
        &fleet,
        &[
            "notify",
            "add",
            "ops",
            "--url",
            &url,
            "--min-severity",
            "warning",
            "--env",
            "staging,prod",
            "--kinds",
            "rollout_failed,sync_failed",
            "-o",
            "json",
        ],
    );
    assert_eq!(added["name"], "ops", "{added:#}");

    let listed = json(&fleet, &["notify", "list", "-o", "json"]);
    let shown = format!("http://127.0.0.1:{}/…", hook.port);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    let ops = &listed[0];
    assert_eq!(ops["url"], shown.as_str(), "the path (a Slack webhook's token) is withheld: {ops:#}");
    assert_eq!(ops["format"], "json");
    assert_eq!(ops["min_severity"], "warning");
    assert_eq!(ops["environments"], serde_json::json!(["staging", "prod"]));
    assert_eq!(ops["kinds"], serde_json::json!(["rollout_failed", "sync_failed"]));
    assert_eq!(ops["created_by"], "admin");
    assert!(ops["created_ms"].as_u64().unwrap() > 0, "{ops:#}");
    let out = fleet.drover(&["notify", "list"]);
    assert!(!text(&out.stdout).contains("secret-token"), "{}", text(&out.stdout));

    // A test reaches the listener as JSON, whatever the target's filters.
    let tried = json(&fleet, &["notify", "test", "ops", "-o", "json"]);
    assert_eq!((tried["delivered"].as_bool(), tried["http_status"].as_u64()), (Some(true), Some(200)), "{tried:#}");
    let (head, body) = hook.last();
    assert!(head.starts_with("POST /services/T0/B0/secret-token HTTP/1.1"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    assert_eq!(body["kind"], "test", "{body:#}");
    assert_eq!(body["environment"], "staging", "{body:#}");
    assert!(body["message"].as_str().unwrap().contains("by admin"), "{body:#}");

    // Replaced by name, as a Slack target: a message with a coloured bar.
    json(&fleet, &["notify", "add", "ops", "--url", &url, "--format", "slack", "-o", "json"]);
    let out = fleet.drover(&["notify", "test", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ops answered 200"), "{}", text(&out.stdout));
    let (_, body) = hook.last();
    assert!(body["text"].as_str().unwrap().starts_with("Test: a test of notification target ops"), "{body:#}");
    assert_eq!(body["attachments"][0]["color"], "#439FE0", "{body:#}");

    // A target that answers 500: exit 1, saying so.
    hook.status.store(500, Ordering::SeqCst);
    fails_with(&fleet, &["notify", "test", "ops"], 1, "was not delivered: answered 500");

    // Bad targets: exit 2, saying what to do.
    fails_with(&fleet, &["notify", "add", "x", "--url", "ftp://example.com/x"], 2, "http:// or https://");
    fails_with(
        &fleet,
        &["notify", "add", "x", "--url", &url, "--kinds", "deployed"],
        2,
        "the kinds are rollout_started",
    );
    fails_with(&fleet, &["notify", "test", "nobody"], 4, "`drover notify list` lists them");

    let removed = json(&fleet, &["notify", "rm", "ops", "-o", "json"]);
    assert_eq!(removed["name"], "ops");
    assert_eq!(json(&fleet, &["notify", "list", "-o", "json"]), serde_json::json!([]));
    fails_with(&fleet, &["notify", "rm", "ops"], 4, "no notification target \"ops\"");
}
