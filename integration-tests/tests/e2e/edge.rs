//! Untrusted input at the edge: a hostile agent speaking the real protocol,
//! two agents under one name, pipelines with dangerous environments, and a
//! git server that never answers. Each bad input costs only itself: the
//! leader's term and everyone else's runs go on.

use std::path::Path;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::harness::{AgentSpec, Fleet, text, wait_for};

/// An agent session driven by hand, message by message, over mTLS with a
/// real agent certificate.
struct RawAgent {
    tx: mpsc::UnboundedSender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::CoordinatorMessage>,
}

impl RawAgent {
    async fn connect(url: &str, tls_dir: &Path, name: &str, labels: &[(&str, &str)]) -> RawAgent {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let read = |file: String| std::fs::read(tls_dir.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
            .identity(Identity::from_pem(read(format!("agent-{name}.pem")), read(format!("agent-{name}-key.pem"))));
        let channel = Endpoint::from_shared(url.to_string()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, outbound) = mpsc::unbounded_channel();
        let hello = Out::Hello(pb::Hello {
            unready: String::new(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            slots: 1,
            running: Vec::new(),
            version: "hostile".into(),
            draining: false,
            instance_id: format!("raw-{name}"),
            caches: Vec::new(),
        });
        tx.send(pb::AgentMessage { msg: Some(hello) }).unwrap();
        let rx = client.session(UnboundedReceiverStream::new(outbound)).await.expect("session").into_inner();
        RawAgent { tx, rx }
    }

    fn send(&self, msg: Out) {
        self.tx.send(pb::AgentMessage { msg: Some(msg) }).expect("session open");
    }

    /// The next message that `pick` takes, skipping others, within 20 s.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&In) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 20s; saw {seen:#?}"))
                .unwrap_or_else(|s| panic!("session failed waiting for {what}: {s}"))
                .unwrap_or_else(|| panic!("session ended waiting for {what}"))
                .msg
                .expect("a message");
            if let Some(found) = pick(&msg) {
                return found;
            }
            seen.push(msg);
        }
    }

    /// Waits for an assignment and accepts it; returns its attempt id.
    async fn accept(&mut self, attempt: u32) -> String {
        let id = self
            .expect(&format!("attempt {attempt}"), |m| match m {
                In::Assign(pb::Assign { attempt_id, work: Some(pb::assign::Work::Job(job)), .. })
                    if job.attempt == attempt =>
                {
                    Some(attempt_id.clone())
                }
                _ => None,
            })
            .await;
        self.send(Out::Accepted(pb::Accepted { attempt_id: id.clone() }));
        id
    }

    /// Waits for the coordinator to take an attempt away; returns why.
    async fn disowned(&mut self, id: &str) -> String {
        self.expect(&format!("a cancel of {id}"), |m| match m {
            In::Cancel(c) if c.attempt_id == id && c.disown => Some(c.reason.clone()),
            _ => None,
        })
        .await
    }

    fn log(&self, id: &str, offset: u64, data: Vec<u8>) {
        self.send(Out::Log(pb::LogChunk { attempt_id: id.into(), offset, data }));
    }
}

#[test]
fn a_hostile_agents_log_chunks_cost_only_its_own_attempts() {
    let mut fleet = Fleet::start("hostile-logs");
    fleet.agent("good", "role=good", 1);
    fleet.issue_agent_certs_with_labels(&["evil".to_string()], "role=evil");
    fleet.wait_agents(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut evil = RawAgent::connect(&fleet.url(), &fleet.agent_tls("evil"), "evil", &[("role", "evil")]).await;
        evil.expect("the welcome", |m| matches!(m, In::Welcome(_)).then_some(())).await;
        let victim = fleet.submit(
            "victim.yml",
            "name: victim\njobs:\n  victim:\n    runs-on: {role: evil}\n    retries: 2\n    steps: [{run: echo hi}]\n",
        );
        let other = fleet.submit(
            "other.yml",
            "name: other\njobs:\n  a: {runs-on: {role: good}, steps: [{run: sleep 0.3}]}\n  \
             b: {runs-on: {role: good}, needs: [a], steps: [{run: sleep 0.3}]}\n  \
             c: {runs-on: {role: good}, needs: [b], steps: [{run: echo done}]}\n",
        );

        // One chunk of 2,000,000 bytes: refused, its attempt lost.
        let first = evil.accept(1).await;
        evil.log(&first, 0, vec![b'x'; 2_000_000]);
        let why = evil.disowned(&first).await;
        assert!(why.contains("sent a log chunk of 2000000 bytes, over the limit of 131072"), "{why}");

        // 60 chunks at offsets 0 to 59: the first is stored, the second
        // overlaps it and ends the attempt; the rest are stale.
        let second = evil.accept(2).await;
        for offset in 0..60 {
            evil.log(&second, offset, vec![b'y'; 100_000]);
        }
        let why = evil.disowned(&second).await;
        assert!(why.contains("sent a log chunk at offset 1 that overlaps the 100000 bytes already taken"), "{why}");

        // A well-behaved third attempt succeeds.
        let third = evil.accept(3).await;
        evil.log(&third, 0, b"hello\n".to_vec());
        evil.expect("the log ack", |m| matches!(m, In::LogAck(a) if a.offset == 6).then_some(())).await;
        evil.send(Out::Result(pb::AttemptResult {
            attempt_id: third.clone(),
            outcome: pb::Outcome::Succeeded as i32,
            exit_code: 0,
            message: String::new(),
            artifact: None,
            cache: None,
        }));
        evil.expect("the result ack", |m| matches!(m, In::ResultAck(a) if a.accepted).then_some(())).await;

        let status = fleet.wait_run(&victim, Duration::from_secs(30));
        assert_eq!(status["state"], "succeeded", "{status:#}");
        let job = fleet.job(&victim, "victim");
        assert_eq!(job["attempt"], 3, "{job:#}");
        let status = fleet.wait_run(&other, Duration::from_secs(30));
        assert_eq!(status["state"], "succeeded", "{status:#}");
    });
    // The stored logs: nothing of attempt 1, one chunk of attempt 2.
    let out = fleet.drover(&["logs", "1", "victim", "--attempt", "2"]);
    assert_eq!(out.stdout.len(), 100_000, "{}", text(&out.stderr));
    let out = fleet.drover(&["logs", "1", "victim", "--attempt", "1"]);
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let out = fleet.drover(&["logs", "1", "victim", "--attempt", "3"]);
    assert_eq!(text(&out.stdout), "hello\n");
    // One term throughout.
    let log = std::fs::read_to_string(&fleet.coordinator(0).log).unwrap();
    assert!(!log.contains("stopping"), "the term ended:\n{log}");
    assert!(log.contains("refused a message from an agent; its attempt ends"), "{log}");
}

#[test]
fn a_second_agent_under_a_live_agents_name_is_refused() {
    let mut fleet = Fleet::start("samename");
    let first = fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "p.yml",
        "name: p\njobs:\n  a: {steps: [{run: sleep 1}]}\n  b: {steps: [{run: sleep 1}]}\n  \
         c: {needs: [a], steps: [{run: sleep 1}]}\n  d: {needs: [b], steps: [{run: echo ok}]}\n",
    );
    let other_dir = fleet.dir.path().join("work-a1-second");
    let (second, _) =
        fleet.start_agent("a1", AgentSpec { slots: 2, work_dir: Some(&other_dir), ..AgentSpec::default() });
    wait_for("the second a1 to be refused", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&fleet.agents[second].log).unwrap_or_default();
        log.contains("is already connected from").then_some(())
    });
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.logs());
    for job in ["a", "b", "c", "d"] {
        assert_eq!(fleet.job(&run, job)["attempt"], 1, "{job} ran more than once");
    }
    let listing = text(&fleet.drover(&["agents"]).stdout);
    assert_eq!(listing.lines().filter(|l| l.starts_with("a1 ")).count(), 1, "{listing}");
    // Once the first is gone, the second takes the name.
    fleet.agents[first].kill();
    let run = fleet.submit("q.yml", "name: q\njobs:\n  a: {steps: [{run: echo second}]}\n");
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.logs());
}

#[test]
fn dangerous_environment_names_are_refused_at_submit() {
    let fleet = Fleet::start("envdeny");
    for (yaml, want) in [
        (
            "name: p\nenv:\n  LD_PRELOAD: /tmp/x.so\njobs:\n  a: {steps: [{run: x}]}\n",
            "p.yml:3:3: env variable `LD_PRELOAD`",
        ),
        (
            "name: p\njobs:\n  a:\n    env: {BASH_ENV: /tmp/x}\n    steps: [{run: x}]\n",
            "p.yml:4:11: env variable `BASH_ENV`",
        ),
        ("name: p\nenv:\n  PATH: /nonexistent\njobs:\n  a: {steps: [{run: x}]}\n", "p.yml:3:9: env variable `PATH`"),
    ] {
        let path = fleet.dir.path().join("p.yml");
        std::fs::write(&path, yaml).unwrap();
        let out = fleet.drover(&["run", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
    let out = fleet.drover(&["runs"]);
    assert!(!text(&out.stdout).contains(" p "), "nothing was stored: {}", text(&out.stdout));
}

#[test]
fn a_git_server_that_never_answers_times_out_with_the_url() {
    let fleet = Fleet::start_with("git-timeout", &["--git-timeout", "2s"]);
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/repo.git", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = fleet.drover(&["run", "--repo", &url, "--ref", "main"]);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("git did not finish within 2s reading {url}")), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    drop(silent);
}

#[test]
fn active_runs_and_their_jobs_are_capped_at_submit() {
    let fleet = Fleet::start_with("caps", &["--max-active-runs", "2", "--max-queued-jobs", "5"]);
    // No agent: every run stays unfinished.
    let one = "name: one\njobs:\n  a: {steps: [{run: 'true'}]}\n";
    let first = fleet.submit("one.yml", one);
    fleet.submit("one.yml", one);
    let path = fleet.dir.path().join("one.yml");
    let out = fleet.drover(&["run", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("already has 2 unfinished runs, its limit (--max-active-runs 2)"), "{stderr}");
    // Cancelling one makes room, but not for four more jobs.
    assert!(fleet.drover(&["cancel", &first]).status.success());
    let four = fleet.dir.path().join("four.yml");
    std::fs::write(&four, "name: four\njobs:\n  a: {steps: [{run: x}]}\n  b: {steps: [{run: x}]}\n  c: {steps: [{run: x}]}\n  d: {steps: [{run: x}]}\n  e: {steps: [{run: x}]}\n").unwrap();
    let out = fleet.drover(&["run", four.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("this run's 5 jobs would bring the jobs of unfinished runs to 6, over the coordinator's limit (--max-queued-jobs 5)"), "{stderr}");
    fleet.submit("one.yml", one);
}

#[test]
fn an_agent_claiming_labels_outside_its_certificate_is_refused() {
    let mut fleet = Fleet::start("labels");
    // The certificate says role=a; the agent claims role=b.
    fleet.issue_agent_certs_with_labels(&["b1".to_string()], "role=a");
    let (i, _) = fleet.start_agent("b1", AgentSpec { labels: "role=b", ..AgentSpec::default() });
    let exited = wait_for("the agent to exit", Duration::from_secs(20), || fleet.agents[i].child.try_wait().unwrap());
    assert_eq!(exited.code(), Some(2), "{}", fleet.agents[i].log_tail());
    let log = std::fs::read_to_string(&fleet.agents[i].log).unwrap();
    assert!(
        log.contains("claims labels its certificate does not give it: role=b (the certificate gives: role=a)"),
        "{log}"
    );
    // Nothing meant for role=b went to it, and it is not listed.
    assert!(!text(&fleet.drover(&["agents"]).stdout).contains("b1"));
    // With no --labels it gets its certificate's, and role=a jobs run on it.
    fleet.agents.remove(i);
    fleet.start_agent("b1", AgentSpec::default());
    fleet.wait_agents(1);
    let listing = text(&fleet.drover(&["agents"]).stdout);
    assert!(listing.contains("role=a"), "{listing}");
    let run = fleet.submit("a.yml", "name: a\njobs:\n  a: {runs-on: {role: a}, steps: [{run: echo on-a}]}\n");
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
}

#[test]
fn an_agent_downloads_only_the_artifacts_its_own_attempts_need() {
    let mut fleet = Fleet::start("blob-access");
    fleet.agent("good", "role=good", 1);
    fleet.issue_agent_certs_with_labels(&["nosy".to_string()], "role=nosy");
    fleet.wait_agents(1);
    let run = fleet.submit(
        "secret.yml",
        "name: secret\njobs:\n  build:\n    runs-on: {role: good}\n    steps: [{run: 'echo private > p.txt'}]\n    artifacts: {paths: [p.txt]}\n",
    );
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded", "{}", fleet.logs());
    let sha = fleet.job(&run, "build")["artifact"]["sha256"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Another agent knows the digest (it is no secret), and holds a
        // session, but no attempt that needs it.
        let mut nosy = RawAgent::connect(&fleet.url(), &fleet.agent_tls("nosy"), "nosy", &[("role", "nosy")]).await;
        nosy.expect("the welcome", |m| matches!(m, In::Welcome(_)).then_some(())).await;
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let dir = fleet.agent_tls("nosy");
        let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("agent-nosy.pem"), read("agent-nosy-key.pem")));
        let channel = Endpoint::from_shared(fleet.url()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let refused = client
            .get_blob(pb::GetBlobRequest { sha256: sha.clone(), offset: 0, ..Default::default() })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("agent nosy holds no attempt that needs blob"), "{refused:?}");
        // Nor may it upload as another agent's attempt.
        let header = pb::BlobUpload {
            part: Some(pb::blob_upload::Part::Header(pb::BlobHeader {
                attempt_id: format!("{run}/build/1"),
                sha256: sha.clone(),
                size: 8,
                ..Default::default()
            })),
        };
        let refused = client.put_blob(tokio_stream::iter([header])).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains(&format!("a request for attempt {run}/build/1 carries no job token")),
            "{refused:?}"
        );
        // Nor restore, fetch or save another agent's attempt's cache.
        let attempt = format!("{run}/build/1");
        let refused = client
            .restore_cache(pb::RestoreCacheRequest {
                attempt_id: attempt.clone(),
                key: "deps".into(),
                restore_keys: vec![],
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("carries no job token"), "{refused:?}");
        let refused = client
            .get_blob(pb::GetBlobRequest {
                sha256: sha.clone(),
                offset: 0,
                cache_attempt_id: attempt.clone(),
                cache_key: "deps".into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let blob = pb::CacheBlob { root: "workspace".into(), sha256: sha.clone(), size: 8 };
        let refused = client
            .save_cache(pb::SaveCacheRequest {
                attempt_id: attempt.clone(),
                key: "deps".into(),
                blobs: vec![blob],
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let caches = fleet.drover(&["caches", "-o", "json"]);
        assert_eq!(text(&caches.stdout).trim(), "[]", "nothing was saved");
    });
    // The admin still gets them.
    let dest = fleet.dir.path().join("got");
    let out = fleet.drover(&["artifacts", "get", &run, "build", "-o", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A client of the agent service with agent `name`'s certificate, beside
/// its session.
async fn agent_client(
    fleet: &Fleet,
    name: &str,
) -> pb::agent_service_client::AgentServiceClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let dir = fleet.agent_tls(name);
    let read = |file: String| std::fs::read(dir.join(file)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .identity(Identity::from_pem(read(format!("agent-{name}.pem")), read(format!("agent-{name}-key.pem"))));
    let channel = Endpoint::from_shared(fleet.url()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    pb::agent_service_client::AgentServiceClient::new(channel)
}

#[test]
fn a_jobs_token_opens_only_its_own_attempts_downloads_and_only_while_it_holds_the_lease() {
    let mut fleet = Fleet::start("job-token");
    fleet.agent("good", "role=good", 1);
    fleet.issue_agent_certs_with_labels(&["nosy".to_string()], "role=nosy");
    fleet.wait_agents(1);
    let other = fleet.submit(
        "other.yml",
        "name: other\njobs:\n  build:\n    runs-on: {role: good}\n    steps: [{run: 'echo private > p.txt'}]\n    artifacts: {paths: [p.txt]}\n",
    );
    assert_eq!(fleet.wait_run(&other, Duration::from_secs(60))["state"], "succeeded", "{}", fleet.logs());
    let private = fleet.job(&other, "build")["artifact"]["sha256"].as_str().unwrap().to_string();
    let run = fleet.submit(
        "mine.yml",
        "name: mine\njobs:\n  make:\n    runs-on: {role: good}\n    steps: [{run: 'echo input > i.txt'}]\n    artifacts: {paths: [i.txt]}\n  take:\n    needs: [make]\n    runs-on: {role: nosy}\n    steps: [{run: 'cat i.txt'}]\n",
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut nosy = RawAgent::connect(&fleet.url(), &fleet.agent_tls("nosy"), "nosy", &[("role", "nosy")]).await;
        let (id, token, input) = nosy
            .expect("the assignment of take", |m| match m {
                In::Assign(pb::Assign { attempt_id, work: Some(pb::assign::Work::Job(job)), .. }) => {
                    let input = job.inputs.first()?.artifact.as_ref()?.sha256.clone();
                    Some((attempt_id.clone(), job.job_token.clone(), input))
                }
                _ => None,
            })
            .await;
        nosy.send(Out::Accepted(pb::Accepted { attempt_id: id.clone() }));
        assert!(token.starts_with("djob_"), "{token}");
        let mut client = agent_client(&fleet, "nosy").await;
        let get = |sha: &str, attempt: &str, token: &str| pb::GetBlobRequest {
            sha256: sha.to_string(),
            attempt_id: attempt.to_string(),
            job_token: token.to_string(),
            ..Default::default()
        };
        // Its own need, with its token: served.
        let mut stream = client.get_blob(get(&input, &id, &token)).await.expect("its own need").into_inner();
        assert!(stream.message().await.unwrap().is_some_and(|d| !d.data.is_empty()));
        // (what, request, the refusal)
        let make = format!("{run}/make/1");
        let cases = [
            (
                "another run's artifact",
                get(&private, &id, &token),
                format!("attempt {id} of agent nosy does not need blob"),
            ),
            ("no token", get(&input, &id, ""), format!("a request for attempt {id} carries no job token")),
            (
                "its token for another attempt",
                get(&input, &make, &token),
                format!("not attempt {make}'s on agent nosy"),
            ),
            ("no attempt at all", get(&input, "", ""), "agent nosy holds no attempt that needs blob".to_string()),
        ];
        for (what, request, want) in cases {
            let refused = client.get_blob(request).await.expect_err(what);
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}: {refused:?}");
            assert!(refused.message().contains(&want), "{what}: want {want:?}: {refused:?}");
        }
        // Once its result is in, the attempt is not held, and the token
        // opens nothing.
        nosy.send(Out::Result(pb::AttemptResult {
            attempt_id: id.clone(),
            outcome: pb::Outcome::Succeeded as i32,
            exit_code: 0,
            message: String::new(),
            artifact: None,
            cache: None,
        }));
        nosy.expect("the result ack", |m| matches!(m, In::ResultAck(a) if a.accepted).then_some(())).await;
        let refused = client.get_blob(get(&input, &id, &token)).await.expect_err("after the attempt");
        assert!(refused.message().contains("does not need blob"), "{refused:?}");
    });
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    let audit = text(&fleet.drover(&["audit", "-o", "json"]).stdout);
    assert!(audit.contains("\"job-token\"") && audit.contains("\"warning\""), "a forged token is audited: {audit}");
    let everything = format!("{audit}{}", fleet.logs());
    assert!(!everything.contains("djob_"), "a job token was logged");
}
