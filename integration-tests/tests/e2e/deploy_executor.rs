//! The deploy executor with real parts: the built `drover-agent` as each
//! release's supervisor, a real service (a small Python HTTP server that
//! answers with its version), the real proxy on a real port, releases
//! installed from real artifact archives. The one stand-in is the
//! transfer: [`LocalBlobs`] copies a blob from a test directory where the
//! agent would download it from the coordinator (the real download is the
//! end-to-end tests' business). Every wait has a deadline.
//!
//! Beside the deploy actions: a live service's output read back as the
//! coordinator asks for it ([`Executor::logs`]), its continuous health
//! check reporting it unhealthy and healthy again ([`Event::Health`]), and
//! deploy hooks ([`Work::Hook`]): their steps' environment, directory and
//! output, a failing step, a timeout, and a release installed for a hook
//! but never started; and a live release started afresh beside itself
//! ([`Work::Restart`], a canary's baseline).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_agent::deploy::executor::{
    Config, Event, Executor, HealthCheck, HealthDef, Hook, HookStep, LogsChunk, LogsRequest, Order, ReleaseRef, Report,
    ReportState, ServiceDef, ServiceHealth, Work,
};
use drover_agent::deploy::proxy::ServiceProxy;
use drover_agent::deploy::supervise::OUTPUT_FILE;
use drover_agent::deploy::supervise::{Adopted, Supervisor};
use drover_agent::exec::JobAuth;
use drover_agent::exec::artifacts::Transfer;
use drover_agent::exec::cache::{BlobRef, Found};
use drover_agent::watch::Launch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

/// Generous: deadlines, not expectations.
const DEADLINE: Duration = Duration::from_secs(20);

/// The service. `HEALTH` is the status of `/healthz`; while the file
/// `SICK_FILE` names exists, it is 503.
const SERVER: &str = r#"
import http.server, os, sys
V = os.environ["VERSION"]
HEALTH = int(os.environ.get("HEALTH", "200"))
SICK = os.environ.get("SICK_FILE", "")
sys.stderr.write(V + " listening on " + os.environ["PORT"] + "\n")
sys.stderr.flush()
print("started", V, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = HEALTH if self.path == "/healthz" else 200
        if self.path == "/healthz" and SICK and os.path.exists(SICK):
            code = 503
        body = V.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Blobs by sha256 in a directory: the coordinator's `GetBlob`, locally.
struct LocalBlobs(PathBuf);

#[async_trait::async_trait]
impl Transfer for LocalBlobs {
    async fn fetch(&self, sha256: &str, size: u64, dest: &Path) -> Result<(), String> {
        let src = self.0.join(sha256);
        let copied = tokio::fs::copy(&src, dest).await.map_err(|e| format!("{}: {e}", src.display()))?;
        if copied != size { Err(format!("blob {sha256} holds {copied} bytes, not {size}")) } else { Ok(()) }
    }
    async fn fetch_artifact(&self, _: JobAuth<'_>, _: &str, _: u64, _: &Path) -> Result<(), String> {
        Err("not in these tests".into())
    }
    async fn upload(&self, _: JobAuth<'_>, _: &Path, _: &str, _: u64) -> Result<(), String> {
        Err("not in these tests".into())
    }
    async fn restore_cache(&self, _: JobAuth<'_>, _: &str, _: &[String]) -> Result<(Option<Found>, String), String> {
        Err("not in these tests".into())
    }
    async fn fetch_cache(&self, _: JobAuth<'_>, _: &str, _: &BlobRef, _: &Path) -> Result<(), String> {
        Err("not in these tests".into())
    }
    async fn save_cache(&self, _: JobAuth<'_>, _: &str, _: &[BlobRef]) -> Result<(bool, String), String> {
        Err("not in these tests".into())
    }
}

/// A test's directory: blobs, sources and the services dir. Stops every
/// supervisor left in it when the test ends, pass or fail.
struct Place {
    root: PathBuf,
}

impl Place {
    fn new(name: &str) -> Place {
        let root = std::env::temp_dir().join(format!("drover-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        Place { root }
    }

    fn services(&self) -> PathBuf {
        self.root.join("services")
    }

    fn executor(&self) -> (Executor, UnboundedReceiver<Event>) {
        let launch = Launch { program: crate::harness::bin("drover-agent"), log_format: "text" };
        let transfer = Arc::new(LocalBlobs(self.root.join("blobs")));
        let mut config = Config::new(self.services(), Ipv4Addr::LOCALHOST.into(), None, launch, transfer);
        config.drain_timeout = Duration::from_secs(2);
        config.stop_grace = Duration::from_secs(2);
        config.hook_grace = Duration::from_secs(1);
        config.node = "node-1".into();
        Executor::new(config)
    }

    /// Packs `files` (path, contents) as a job's artifact archive, stores
    /// it as a blob and returns the release.
    fn release(&self, version: &str, files: &[(&str, &str)], path: &str) -> ReleaseRef {
        let src = self.root.join("src").join(version);
        for (name, body) in files {
            let file = src.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, body).unwrap();
        }
        let mut tar = Vec::new();
        let manifest = drover_archive::pack(
            &src,
            &["**"],
            drover_archive::IfNoFiles::Error,
            &drover_archive::Limits::default(),
            &mut tar,
        )
        .unwrap();
        let sha256 = manifest.sha256.to_string();
        std::fs::write(self.root.join("blobs").join(&sha256), &tar).unwrap();
        ReleaseRef {
            version: version.into(),
            sha256,
            size: tar.len() as u64,
            path: path.into(),
            run_id: "7".into(),
            commit: String::new(),
            url: String::new(),
        }
    }

    /// The supervisors still live under the services dir.
    fn live_supervisors(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for service in std::fs::read_dir(self.services()).into_iter().flatten().flatten() {
            for dir in std::fs::read_dir(service.path().join("supervisors")).into_iter().flatten().flatten() {
                if let Ok(Adopted::Live(..)) = Supervisor::adopt(&dir.path()) {
                    out.push(dir.path());
                }
            }
        }
        out
    }

    /// The proxy process of service `web`, while one is live.
    fn proxy(&self) -> Option<ServiceProxy> {
        ServiceProxy::adopt(&self.services().join("web").join("proxy")).unwrap().map(|(proxy, _)| proxy)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        for service in std::fs::read_dir(self.services()).into_iter().flatten().flatten() {
            if let Ok(Some((proxy, _))) = ServiceProxy::adopt(&service.path().join("proxy")) {
                let _ = proxy.stop();
            }
        }
        for dir in self.live_supervisors() {
            if let Ok(Adopted::Live(supervisor, _)) = Supervisor::adopt(&dir) {
                let _ = supervisor.stop(Duration::ZERO);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A free port on 127.0.0.1 for the service's proxy.
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn def(port: u16, version: &str, env: &[(&str, &str)]) -> ServiceDef {
    let mut vars = BTreeMap::from([("VERSION".to_string(), version.to_string())]);
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServiceDef {
        command: "exec python3 server.py".into(),
        env: vars,
        port,
        health: Some(HealthDef {
            check: HealthCheck::Http("/healthz".into()),
            interval_ms: 100,
            healthy_after: 2,
            unhealthy_after: 1,
            timeout_ms: 2500,
        }),
    }
}

fn order(id: &str, work: Work) -> Order {
    Order { action_id: id.into(), service: "web".into(), work }
}

fn install(id: &str, release: &ReleaseRef, service: ServiceDef, beside: bool) -> Order {
    order(id, Work::Install { release: release.clone(), service, beside })
}

/// The next event, within the deadline.
async fn next_event(rx: &mut UnboundedReceiver<Event>, what: &str) -> Event {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
        .expect("the executor is there")
}

/// The reports of action `id` until its last (any but INSTALLED), each as
/// "STATE version"; health changes on the way are passed over.
async fn reports(rx: &mut UnboundedReceiver<Event>, id: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    loop {
        let Event::Report(report) = next_event(rx, &format!("report of {id} (so far {out:?})")).await else {
            continue;
        };
        assert_eq!(report.action_id, id, "reports come in order: {report:?}");
        out.push(format!("{:?} {}", report.state, report.version));
        if report.state != ReportState::Installed {
            return (out, report.message);
        }
    }
}

/// What the service's port answers to `GET /`, or why nothing.
async fn get(port: u16) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.map_err(|e| e.to_string())?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).ok_or_else(|| format!("not HTTP: {answer:?}"))
}

/// Waits until the port answers `want`.
async fn answers(port: u16, want: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = get(port).await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "port {port} answers {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_install_switch_fail_roll_back_and_survive_an_agent_restart() {
    let place = Place::new("rolling");
    let port = free_port();
    // v1: the root is one file; v2: a tar.gz made by tar; v3: a directory.
    let v1 = place.release("v1", &[("server.py", SERVER)], "server.py");
    let dir2 = place.root.join("v2-app");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("server.py"), SERVER).unwrap();
    let tgz = place.root.join("app.tar.gz");
    let made = std::process::Command::new("tar").arg("czf").arg(&tgz).arg(".").current_dir(&dir2).status().unwrap();
    assert!(made.success());
    std::fs::create_dir_all(place.root.join("src/v2")).unwrap();
    std::fs::copy(&tgz, place.root.join("src/v2/app.tar.gz")).unwrap();
    let v2 = place.release("v2", &[], "app.tar.gz");
    let v3 = place.release("v3", &[("app/server.py", SERVER)], "app");

    let (mut ex, mut rx) = place.executor();
    ex.submit(install("r/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "r/1").await.0, ["Installed v1", "Healthy v1"]);
    answers(port, "v1").await;

    ex.submit(install("r/2", &v2, def(port, "v2", &[]), false));
    assert_eq!(reports(&mut rx, "r/2").await.0, ["Installed v2", "Healthy v2"]);
    answers(port, "v2").await;
    assert_eq!(place.live_supervisors().len(), 1, "v1 was stopped once v2 served");

    // v3 never passes its health check: it is stopped, and v2 serves on.
    ex.submit(install("r/3", &v3, def(port, "v3", &[("HEALTH", "503")]), false));
    let (states, message) = reports(&mut rx, "r/3").await;
    assert_eq!(states, ["Installed v3", "Failed v2"]);
    assert!(message.starts_with("release v3 is not healthy, so it is stopped: not healthy within "), "{message}");
    assert!(message.contains("status 503") && message.contains("v3 listening on"), "{message}");
    assert_eq!(get(port).await.as_deref(), Ok("v2"));
    assert_eq!(place.live_supervisors().len(), 1, "v3 was stopped");

    // Sent again after a failover: reported at once, nothing restarted.
    ex.submit(install("r/2", &v2, def(port, "v2", &[]), false));
    assert_eq!(reports(&mut rx, "r/2").await.0, ["Installed v2", "Healthy v2"]);

    // Back to v1, installed but stopped: started again from disk.
    ex.submit(order("r/4", Work::Rollback { to_version: "v1".into(), service: Some(def(port, "v1", &[])) }));
    assert_eq!(reports(&mut rx, "r/4").await.0, ["RolledBack v1"]);
    answers(port, "v1").await;

    // The agent stops and starts again: the service and its proxy never
    // stopped, so the port answers all along, and both are adopted.
    let proxy = place.proxy().expect("the service's proxy runs");
    ex.shutdown().await;
    drop(rx);
    assert_eq!(get(port).await.as_deref(), Ok("v1"), "the port answers while the agent is down");
    assert_eq!(place.live_supervisors().len(), 1, "the service outlives the agent");
    let (mut ex, mut rx) = place.executor();
    ex.adopt();
    assert_eq!(ex.services(), ["web"]);
    answers(port, "v1").await;

    // The adopted proxy is the same process, and still switches.
    ex.submit(install("r/4b", &v2, def(port, "v2", &[]), false));
    assert_eq!(reports(&mut rx, "r/4b").await.0, ["Installed v2", "Healthy v2"]);
    answers(port, "v2").await;
    assert_eq!(place.proxy().map(|p| p.pid()), Some(proxy.pid()), "the proxy was adopted, not started again");
    ex.submit(order("r/4c", Work::Rollback { to_version: "v1".into(), service: Some(def(port, "v1", &[])) }));
    assert_eq!(reports(&mut rx, "r/4c").await.0, ["RolledBack v1"]);
    answers(port, "v1").await;

    ex.submit(order("r/5", Work::Switch { version: "v9".into() }));
    let (states, message) = reports(&mut rx, "r/5").await;
    assert_eq!(
        (states, message.as_str()),
        (vec!["Failed v1".to_string()], "release v9 is not running on this node: install it (beside) first")
    );

    ex.submit(order("r/6", Work::Rollback { to_version: "v0".into(), service: None }));
    let (states, message) = reports(&mut rx, "r/6").await;
    assert_eq!((states, message.as_str()), (vec!["Failed v1".to_string()], "release v0 is not on this node"));

    // Nothing to go back to: the service goes and its port is free.
    ex.submit(order("r/7", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "r/7").await.0, ["RolledBack "]);
    assert!(get(port).await.is_err(), "the port is closed");
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
    assert!(place.live_supervisors().is_empty());
    assert!(place.proxy().is_none(), "the proxy process is gone");
    ex.shutdown().await;
    // A restarted agent does not open the port of a removed service again.
    let (mut ex, _rx) = place.executor();
    ex.adopt();
    ex.shutdown().await;
    assert!(place.proxy().is_none(), "a stopped proxy is not started again");
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is still free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_starts_beside_and_switches_and_a_taken_port_fails_the_install() {
    let place = Place::new("blue-green");
    let port = free_port();
    let v1 = place.release("v1", &[("server.py", SERVER)], "");
    let v2 = place.release("v2", &[("srv/server.py", SERVER)], "srv");
    let (mut ex, mut rx) = place.executor();

    ex.submit(install("b/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "b/1").await.0, ["Installed v1", "Healthy v1"]);
    ex.submit(install("b/2", &v2, def(port, "v2", &[]), true));
    assert_eq!(reports(&mut rx, "b/2").await.0, ["Installed v2", "Healthy v2"]);
    assert_eq!(get(port).await.as_deref(), Ok("v1"), "blue serves until the switch");
    assert_eq!(place.live_supervisors().len(), 2);
    ex.submit(order("b/3", Work::Switch { version: "v2".into() }));
    assert_eq!(reports(&mut rx, "b/3").await.0, ["Switched v2"]);
    answers(port, "v2").await;
    assert_eq!(place.live_supervisors().len(), 1, "blue stopped after draining");
    ex.submit(order("b/4", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "b/4").await.0, ["RolledBack "]);

    // Someone else holds the service's port: the install fails, naming it,
    // and the release it started does not stay.
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    ex.submit(install("b/5", &v1, def(taken_port, "v1", &[]), false));
    let (states, message) = reports(&mut rx, "b/5").await;
    assert_eq!(states, ["Installed v1", "Failed "]);
    assert!(message.starts_with(&format!("port {taken_port} on 127.0.0.1 is in use: ")), "{message}");
    assert!(place.live_supervisors().is_empty());
    ex.shutdown().await;
}

/// A place whose service `web` serves release v1 (`path` in its archive)
/// on a free port, installed and healthy.
async fn live_v1(name: &str, path: &str) -> (Place, u16, Executor, UnboundedReceiver<Event>) {
    let place = Place::new(name);
    let port = free_port();
    let v1 = place.release("v1", &[("server.py", SERVER)], path);
    let (mut ex, mut rx) = place.executor();
    ex.submit(install("v1/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "v1/1").await.0, ["Installed v1", "Healthy v1"]);
    (place, port, ex, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_release_starts_afresh_beside_itself_and_the_new_start_is_adopted() {
    let (place, port, mut ex, mut rx) = live_v1("restart", "").await;
    let pid = |dir: &Path| match Supervisor::adopt(dir) {
        Ok(Adopted::Live(s, _)) => s.pid(),
        _ => panic!("{} is not live", dir.display()),
    };
    let [old] = place.live_supervisors().try_into().expect("one supervisor");
    let old_pid = pid(&old);

    // Started afresh: a supervisor of its own, and the old one stops.
    ex.submit(order("r/2", Work::Restart { version: "v1".into() }));
    let (states, message) = reports(&mut rx, "r/2").await;
    assert_eq!(states, ["Healthy v1"], "{message}");
    answers(port, "v1").await;
    let [fresh] = place.live_supervisors().try_into().expect("one supervisor");
    assert_eq!(fresh.file_name().unwrap(), "v1.1", "{}", fresh.display());
    assert_ne!(pid(&fresh), old_pid);

    // A version the node does not serve is refused; v1 serves on.
    ex.submit(order("r/3", Work::Restart { version: "v9".into() }));
    let (states, message) = reports(&mut rx, "r/3").await;
    assert_eq!(states, ["Failed v1"]);
    assert!(message.contains("release v9 is not what this node serves (v1 is)"), "{message}");

    // A restarted agent adopts the new start, and a rollback stops it.
    ex.shutdown().await;
    let (mut ex, mut rx) = place.executor();
    ex.adopt();
    answers(port, "v1").await;
    ex.submit(order("r/4", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "r/4").await.0, ["RolledBack "]);
    assert!(place.live_supervisors().is_empty(), "the adopted new start stopped: {:?}", place.live_supervisors());
    ex.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_release_whose_supervisor_is_gone_starts_again_when_the_agent_does() {
    let (place, port, ex, _rx) = live_v1("reboot", "server.py").await;
    ex.shutdown().await;
    // As after a reboot: the supervisor (and its service with it) is gone.
    let [dir] = place.live_supervisors().try_into().expect("one supervisor");
    let Ok(Adopted::Live(supervisor, _)) = Supervisor::adopt(&dir) else { panic!("it runs") };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(supervisor.pid(), libc::SIGKILL) };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !place.live_supervisors().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the supervisor outlived SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ex, mut rx) = place.executor();
    ex.adopt();
    answers(port, "v1").await;
    // The service may answer a moment before its new supervisor's record
    // reads as live.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while place.live_supervisors().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", place.live_supervisors());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ex.submit(order("c/2", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "c/2").await.0, ["RolledBack "]);
    ex.shutdown().await;
}

/// The next health change, passing over reports.
async fn next_health(rx: &mut UnboundedReceiver<Event>) -> ServiceHealth {
    loop {
        if let Event::Health(health) = next_event(rx, "health change").await {
            return health;
        }
    }
}

fn logs(service: &str, offset: u64, max_bytes: u32) -> LogsRequest {
    LogsRequest { request_id: 41, service: service.into(), offset, max_bytes }
}

/// Reads `request` until its data holds `want`.
async fn logs_holding(ex: &Executor, request: LogsRequest, want: &str) -> LogsChunk {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let chunk = ex.logs(request.clone()).await;
        assert_eq!((chunk.request_id, chunk.error.as_str()), (41, ""));
        if String::from_utf8_lossy(&chunk.data).contains(want) {
            return chunk;
        }
        assert!(tokio::time::Instant::now() < deadline, "the output never held {want:?}: {chunk:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_releases_output_is_read_from_its_end_or_an_offset() {
    let place = Place::new("logs");
    let port = free_port();
    let v1 = place.release("v1", &[("server.py", SERVER)], "server.py");
    let v2 = place.release("v2", &[("server.py", SERVER)], "server.py");
    let (mut ex, mut rx) = place.executor();

    let chunk = ex.logs(logs("web", u64::MAX, 0)).await;
    assert_eq!(
        chunk,
        LogsChunk { request_id: 41, error: "service web is not deployed on this node".into(), ..Default::default() }
    );

    ex.submit(install("l/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "l/1").await.0, ["Installed v1", "Healthy v1"]);
    let file = place.services().join("web/supervisors/v1").join(OUTPUT_FILE);
    let end = logs_holding(&ex, logs("web", u64::MAX, 0), "started v1\n").await;
    let text = String::from_utf8_lossy(&end.data).into_owned();
    assert!(text.contains("v1 listening on "), "{text}");
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!((end.next_offset, end.data.len() as u64), (len, len), "the whole file, and its length");

    // The last 11 bytes, then on from an offset: the same bytes.
    let last = ex.logs(logs("web", u64::MAX, 11)).await;
    assert_eq!((last.data.len(), last.next_offset), (11, len));
    let head = ex.logs(logs("web", 0, 5)).await;
    assert_eq!((head.data.as_slice(), head.next_offset), (&end.data[..5], 5));
    let rest = ex.logs(logs("web", 5, 0)).await;
    assert_eq!((rest.data.as_slice(), rest.next_offset), (&end.data[5..], len));
    let none = ex.logs(logs("web", len, 0)).await;
    assert_eq!((none.data.len(), none.next_offset), (0, len));
    // Past the end (the file was rotated since): from the start again.
    let again = ex.logs(logs("web", len + 1000, 0)).await;
    assert_eq!((again.data, again.next_offset), (end.data.clone(), len));

    // Blue-green: the output is the live release's, before and after the
    // switch.
    ex.submit(install("l/2", &v2, def(port, "v2", &[]), true));
    assert_eq!(reports(&mut rx, "l/2").await.0, ["Installed v2", "Healthy v2"]);
    let before = ex.logs(logs("web", 0, 0)).await;
    assert!(!String::from_utf8_lossy(&before.data).contains("v2"), "{before:?}");
    ex.submit(order("l/3", Work::Switch { version: "v2".into() }));
    assert_eq!(reports(&mut rx, "l/3").await.0, ["Switched v2"]);
    let after = logs_holding(&ex, logs("web", 0, 0), "started v2\n").await;
    assert!(!String::from_utf8_lossy(&after.data).contains("v1"), "{after:?}");

    ex.submit(order("l/4", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "l/4").await.0, ["RolledBack "]);
    let gone = ex.logs(logs("web", 0, 0)).await;
    assert_eq!(gone.error, "service web is not deployed on this node");
    ex.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_service_that_turns_unhealthy_is_reported_and_again_once_it_recovers() {
    let place = Place::new("health");
    let port = free_port();
    let sick = place.root.join("sick");
    let sick_env = sick.to_string_lossy().into_owned();
    let v1 = place.release("v1", &[("server.py", SERVER)], "server.py");
    let (mut ex, mut rx) = place.executor();

    // Healthy from the gate on: said once it is live, before the report.
    ex.submit(install("h/1", &v1, def(port, "v1", &[("SICK_FILE", &sick_env)]), false));
    let mut seen = Vec::new();
    loop {
        match next_event(&mut rx, "the install's events").await {
            Event::Health(h) => seen.push(format!("health {} {} {:?}", h.version, h.healthy, h.message)),
            Event::Report(r) => seen.push(format!("{:?} {}", r.state, r.version)),
            Event::HookOutput { action_id, .. } => panic!("output of hook {action_id}, which never ran"),
        }
        if seen.last().is_some_and(|l| l == "Healthy v1") {
            break;
        }
    }
    assert_eq!(seen, ["Installed v1", "health v1 true \"\"", "Healthy v1"]);

    std::fs::write(&sick, "").unwrap();
    let h = next_health(&mut rx).await;
    assert_eq!((h.service.as_str(), h.version.as_str(), h.healthy), ("web", "v1", false), "{h:?}");
    assert!(h.message.ends_with("status 503"), "{h:?}");
    std::fs::remove_file(&sick).unwrap();
    assert_eq!(
        next_health(&mut rx).await,
        ServiceHealth { service: "web".into(), version: "v1".into(), healthy: true, message: String::new() }
    );

    // A restarted agent checks what it adopts: unknown until two passes.
    ex.shutdown().await;
    let (mut ex, mut rx) = place.executor();
    ex.adopt();
    let h = next_health(&mut rx).await;
    assert_eq!((h.version.as_str(), h.healthy), ("v1", true), "{h:?}");

    // Rolled back to nothing: the monitor stops before the report.
    ex.submit(order("h/2", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "h/2").await.0, ["RolledBack "]);
    ex.shutdown().await;
    // Every sender is gone once the executor is: the channel ends.
    let left = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("the channel ends");
    assert_eq!(left, None, "nothing after the service was removed");
}

fn hook(id: &str, point: &str, release: &ReleaseRef, steps: &[(&str, &str)], timeout_ms: u64) -> Order {
    order(
        id,
        Work::Hook(Hook {
            point: point.into(),
            steps: steps.iter().map(|(name, run)| HookStep { name: name.to_string(), run: run.to_string() }).collect(),
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            release: release.clone(),
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
        }),
    )
}

/// Hook `id`'s output, all of it, and then its final report; health
/// changes on the way are passed over, anything else fails the test.
async fn hook_run(rx: &mut UnboundedReceiver<Event>, id: &str) -> (String, Report) {
    let mut output = Vec::new();
    loop {
        match next_event(rx, &format!("the end of hook {id}")).await {
            Event::HookOutput { action_id, data } => {
                assert_eq!(action_id, id, "output of another action");
                assert!(data.len() <= 64 << 10, "a chunk of {} bytes", data.len());
                output.extend(data);
            }
            Event::Report(report) => {
                assert_eq!(report.action_id, id, "{report:?}");
                return (String::from_utf8(output).unwrap(), report);
            }
            Event::Health(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_their_steps_from_the_release_and_report_how_they_ended() {
    let place = Place::new("hooks");
    let port = free_port();
    let v1 = place.release("v1", &[("server.py", SERVER), ("VERSION", "v1\n")], "");
    let v2 = place.release("v2", &[("server.py", SERVER), ("VERSION", "v2\n")], "");
    let (mut ex, mut rx) = place.executor();
    ex.submit(install("k/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "k/1").await.0, ["Installed v1", "Healthy v1"]);
    answers(port, "v1").await;

    // On v2, not yet on the node: installed for it, never started. The
    // steps run from its root with a cleared environment, and their
    // stdout and stderr come back in the order written.
    let look = concat!(
        r#"cat VERSION; echo "$DROVER_HOOK $DROVER_SERVICE $DROVER_RELEASE_VERSION $DROVER_NODE $GREETING"; pwd; "#,
        r#"echo "agent env: ${CARGO_MANIFEST_DIR:-none}"; echo "PATH=$PATH"; echo out; echo err >&2; echo out again"#
    );
    ex.submit(hook("k/2", "before", &v2, &[("look", look), ("", "echo second")], 10_000));
    let (output, report) = hook_run(&mut rx, "k/2").await;
    let root = std::fs::canonicalize(place.services().join("web/releases/v2")).unwrap();
    let want = format!(
        "$ {look}\nv2\nbefore web v2 node-1 hi\n{}\nagent env: none\nPATH={}\nout\nerr\nout again\n\
         $ echo second\nsecond\n",
        root.display(),
        drover_agent::exec::DEFAULT_PATH
    );
    assert_eq!(output, want);
    assert_eq!((report.state, report.version.as_str()), (ReportState::HookPassed, "v2"), "{report:?}");
    assert_eq!(get(port).await.as_deref(), Ok("v1"), "the old release still serves");
    assert_eq!(place.live_supervisors().len(), 1, "v2 was not started");
    let current = std::fs::read_link(place.services().join("web/current")).unwrap();
    assert!(current.ends_with("v1"), "current still points at v1: {current:?}");

    // The first failing step ends the hook, named with its exit code.
    let steps = [("fine", "true"), ("./smoke", "echo smoking; exit 3"), ("never", "echo never")];
    ex.submit(hook("k/3", "after", &v2, &steps, 10_000));
    let (output, report) = hook_run(&mut rx, "k/3").await;
    assert_eq!(output, "$ true\n$ echo smoking; exit 3\nsmoking\n");
    assert_eq!(
        (report.state, report.message.as_str(), report.version.as_str()),
        (ReportState::HookFailed, "step 2 (./smoke) exited with 3", "v2")
    );

    // Past its timeout the step's group is killed: SIGTERM, then SIGKILL
    // for what ignores it.
    let started = tokio::time::Instant::now();
    ex.submit(hook("k/4", "after", &v2, &[("slow", "trap '' TERM; echo waiting; sleep 30")], 500));
    let (output, report) = hook_run(&mut rx, "k/4").await;
    assert_eq!(output, "$ trap '' TERM; echo waiting; sleep 30\nwaiting\n");
    assert_eq!(
        (report.state, report.message.as_str()),
        (ReportState::HookFailed, "timed out after 500ms in step 1 (slow)")
    );
    assert!(started.elapsed() < Duration::from_secs(10), "killed in {:?}", started.elapsed());

    // A release that cannot be downloaded fails the hook before any step.
    let mut missing = v2.clone();
    missing.version = "v9".into();
    missing.sha256 = "00".repeat(32);
    ex.submit(hook("k/5", "before", &missing, &[("never", "echo never")], 0));
    let (output, report) = hook_run(&mut rx, "k/5").await;
    assert_eq!(output, "");
    assert_eq!((report.state, report.version.as_str()), (ReportState::HookFailed, "v9"));
    assert!(report.message.starts_with("cannot install release v9: cannot download release v9 "), "{report:?}");

    // The install after the hook finds v2 on the node.
    ex.submit(install("k/6", &v2, def(port, "v2", &[]), false));
    assert_eq!(reports(&mut rx, "k/6").await.0, ["Installed v2", "Healthy v2"]);
    answers(port, "v2").await;
    ex.submit(order("k/7", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "k/7").await.0, ["RolledBack "]);
    ex.shutdown().await;
}
