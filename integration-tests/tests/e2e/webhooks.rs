//! Webhooks on the real coordinator, sent as GitHub sends them (HTTPS,
//! `X-Hub-Signature-256` over the raw body) for a real git repository: a
//! signed push starts a run at that commit; a bad signature, no signature
//! and a 20 MB body start nothing; a replayed delivery starts nothing and
//! gets 200; a pull request's run gets no secrets from a repository that
//! is not trusted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::git::git;
use crate::harness::{Fleet, text, wait_for};

pub(crate) const SECRET: &str = "hook-secret-1";

/// The status code and body of a POST of `body` to `path` with `headers`.
pub(crate) fn post(fleet: &Fleet, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let addr = fleet.webhooks[0].clone().expect("a webhook listener");
    let ca = std::fs::read(fleet.coordinator_tls().join("ca.pem")).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n", body.len()));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut rd, mut wr) = tokio::io::split(stream);
        wr.write_all(head.as_bytes()).await.unwrap();
        // The answer may come before the body is sent (a body refused by
        // its length): read while writing.
        let send = async {
            for chunk in body.chunks(64 * 1024) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
            let _ = wr.flush().await;
            std::future::pending::<()>().await;
        };
        let mut answer = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::select! {
            () = send => {}
            () = read => {}
        }
        let answer = String::from_utf8_lossy(&answer).to_string();
        let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
        (code, body)
    })
}

pub(crate) fn sign(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub(crate) fn github(event: &str, delivery: &str, signature: Option<String>) -> Vec<(&'static str, String)> {
    let mut headers = vec![("X-GitHub-Event", event.to_string()), ("X-GitHub-Delivery", delivery.to_string())];
    if let Some(sig) = signature {
        headers.push(("X-Hub-Signature-256", sig));
    }
    headers
}

/// The runs the coordinator has, newest first.
fn runs(fleet: &Fleet) -> Vec<serde_json::Value> {
    let out = fleet.drover(&["runs", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array().cloned().unwrap_or_else(|| panic!("`drover runs -o json` is a list: {json}"))
}

fn commit(repo: &Path, file: &str, contents: &str, message: &str) -> String {
    std::fs::write(repo.join(file), contents).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

const PIPELINE: &str = "name: hooked
on: [push, pull_request]
jobs:
  build:
    steps: [{run: 'echo \"event ${{ drover.event }} on ${{ drover.branch }}\"'}]
";

const WITH_SECRET: &str = "name: hooked
on: [push, pull_request]
jobs:
  build:
    secrets: [DEPLOY_TOKEN]
    steps: [{run: 'echo \"token $DEPLOY_TOKEN\"'}]
  show:
    steps: [{run: 'echo \"checked out $(git rev-parse HEAD)\"'}]
";

#[test]
fn a_signed_push_starts_a_run_and_forgeries_replays_and_floods_start_nothing() {
    let mut fleet = Fleet::start_with("webhooks", &["--webhook-listen", "127.0.0.1:0"]);
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, ".drover.yml", PIPELINE, "one");
    let secret_file = fleet.dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = repo.to_str().unwrap();
    let out = fleet.drover(&[
        "repo",
        "add",
        "web",
        "--url",
        url,
        "--poll",
        "24h",
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let second = commit(&repo, "README", "hello\n", "two");
    let body = format!(r#"{{"ref":"refs/heads/main","before":"{first}","after":"{second}"}}"#).into_bytes();

    // Refused: nothing starts.
    let (code, answer) = post(&fleet, "/hooks/web", &github("push", "d-bad", Some(sign(b"other body"))), &body);
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("bad signature"), "{answer}");
    let (code, answer) = post(&fleet, "/hooks/web", &github("push", "d-none", None), &body);
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("X-Hub-Signature-256"), "{answer}");
    let flood = vec![b' '; 20 * 1024 * 1024];
    let (code, answer) = post(&fleet, "/hooks/web", &github("push", "d-big", Some(sign(&flood))), &flood);
    assert_eq!(code, 413, "{answer}");
    let (code, answer) = post(&fleet, "/hooks/nope", &github("push", "d-x", Some(sign(&body))), &body);
    assert_eq!(code, 404, "{answer}");
    assert!(runs(&fleet).is_empty(), "nothing started");

    // Signed: a run at that commit, started by the push.
    let sent = Instant::now();
    let (code, answer) = post(&fleet, "/hooks/web", &github("push", "d-1", Some(sign(&body))), &body);
    assert_eq!(code, 202, "{answer}");
    let run = wait_for("the pushed commit's run", Duration::from_secs(30), || runs(&fleet).into_iter().next());
    eprintln!("figure: webhook -> run started in {:?}", sent.elapsed());
    let id = run["id"].as_str().unwrap().to_string();
    let status = fleet.wait_run(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["commit"], second.as_str(), "{status:#}");
    let log = text(&fleet.drover(&["logs", &id, "build"]).stdout);
    assert!(log.contains("event push on main"), "{log}");

    // The same delivery again: 200, and nothing more.
    let (code, answer) = post(&fleet, "/hooks/web", &github("push", "d-1", Some(sign(&body))), &body);
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("received before"), "{answer}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&fleet).len(), 1, "a replay starts nothing");

    // A ping is answered and starts nothing.
    let (code, answer) = post(&fleet, "/hooks/web", &github("ping", "d-ping", Some(sign(b"{}"))), b"{}");
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn a_pull_request_run_of_an_untrusted_repository_gets_no_secrets() {
    let mut fleet = Fleet::start_with("webhooks-pr", &["--webhook-listen", "127.0.0.1:0"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let set = crate::secrets::set_secret(&fleet, "DEPLOY_TOKEN", b"tok-3141592653\n");
    assert!(set.status.success(), "{}", text(&set.stderr));
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, ".drover.yml", WITH_SECRET, "one");
    // A pull request from a fork: its head is on no branch here, only under
    // refs/pull/12/head, as GitHub keeps it.
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let head = commit(&repo, "change", "x\n", "a change from a contributor");
    git(&repo, &["update-ref", "refs/pull/12/head", &head]);
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["branch", "-q", "-D", "feature"]);
    let secret_file = fleet.dir.path().join("hook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    // file://, so that git clones as from a server: only what refs reach.
    let url = format!("file://{}", repo.display());
    let url = url.as_str();
    let out =
        fleet.drover(&["repo", "add", "web", "--url", url, "--webhook-secret-file", secret_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let body = format!(
        r#"{{"action":"opened","number":12,"pull_request":{{"head":{{"sha":"{head}","ref":"feature"}},"base":{{"ref":"main"}}}}}}"#
    )
    .into_bytes();
    let (code, answer) = post(&fleet, "/hooks/web", &github("pull_request", "pr-1", Some(sign(&body))), &body);
    assert_eq!(code, 202, "{answer}");
    let run = wait_for("the pull request's run", Duration::from_secs(30), || runs(&fleet).into_iter().next());
    let id = run["id"].as_str().unwrap().to_string();
    let status = fleet.wait_run(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["commit"], head.as_str(), "{status:#}");
    let job = fleet.job(&id, "build");
    assert!(job["message"].as_str().unwrap().contains("secrets are withheld from pull-request runs"), "{job:#}");
    let log = text(&fleet.drover(&["logs", &id, "build"]).stdout);
    assert!(!log.contains("tok-3141592653"), "{log}");
    // The agent fetched the fork's head too.
    assert_eq!(fleet.job(&id, "show")["state"], "succeeded");
    let log = text(&fleet.drover(&["logs", &id, "show"]).stdout);
    assert!(log.contains(&format!("checked out {head}")), "{log}");
}
