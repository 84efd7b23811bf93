//! The deploy executor with real parts: the built `drover-agent` as each
//! release's supervisor, a real service (a small Python HTTP server that
//! answers with its version), the real proxy on a real port, releases
//! installed from real artifact archives. The one stand-in is the
//! transfer: [`LocalBlobs`] copies a blob from a test directory where the
//! agent would download it from the coordinator (the real download is the
//! end-to-end tests' business). Every wait has a deadline.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_agent::deploy::executor::{
    Config, Executor, HealthCheck, HealthDef, Order, ReleaseRef, Report, ReportState, ServiceDef, Work,
};
use drover_agent::deploy::supervise::{Adopted, Supervisor};
use drover_agent::exec::artifacts::Transfer;
use drover_agent::exec::cache::{BlobRef, Found};
use drover_agent::watch::Launch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

/// Generous: deadlines, not expectations.
const DEADLINE: Duration = Duration::from_secs(20);

const SERVER: &str = r#"
import http.server, os, sys
V = os.environ["VERSION"]
HEALTH = int(os.environ.get("HEALTH", "200"))
sys.stderr.write(V + " listening on " + os.environ["PORT"] + "\n")
sys.stderr.flush()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = HEALTH if self.path == "/healthz" else 200
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
    async fn upload(&self, _: &str, _: &Path, _: &str, _: u64) -> Result<(), String> {
        Err("not in these tests".into())
    }
    async fn restore_cache(&self, _: &str, _: &str, _: &[String]) -> Result<(Option<Found>, String), String> {
        Err("not in these tests".into())
    }
    async fn fetch_cache(&self, _: &str, _: &str, _: &BlobRef, _: &Path) -> Result<(), String> {
        Err("not in these tests".into())
    }
    async fn save_cache(&self, _: &str, _: &str, _: &[BlobRef]) -> Result<(bool, String), String> {
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

    fn executor(&self) -> (Executor, UnboundedReceiver<Report>) {
        let launch = Launch { program: crate::harness::bin("drover-agent"), log_format: "text" };
        let transfer = Arc::new(LocalBlobs(self.root.join("blobs")));
        let mut config = Config::new(self.services(), Ipv4Addr::LOCALHOST.into(), None, launch, transfer);
        config.drain_timeout = Duration::from_secs(2);
        config.stop_grace = Duration::from_secs(2);
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
}

impl Drop for Place {
    fn drop(&mut self) {
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

/// The reports of action `id` until its last (any but INSTALLED), each as
/// "STATE version".
async fn reports(rx: &mut UnboundedReceiver<Report>, id: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    loop {
        let report = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no report of {id} within {DEADLINE:?}; so far {out:?}"))
            .expect("the executor is there");
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

    // The agent stops (the proxy with it) and starts again: the service
    // never stopped, and its port opens again.
    ex.shutdown().await;
    assert!(get(port).await.is_err(), "the port is closed while the agent is down");
    assert_eq!(place.live_supervisors().len(), 1, "the service outlives the agent");
    let (mut ex, mut rx) = place.executor();
    ex.adopt();
    assert_eq!(ex.services(), ["web"]);
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
    ex.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_release_whose_supervisor_is_gone_starts_again_when_the_agent_does() {
    let place = Place::new("reboot");
    let port = free_port();
    let v1 = place.release("v1", &[("server.py", SERVER)], "server.py");
    let (mut ex, mut rx) = place.executor();
    ex.submit(install("c/1", &v1, def(port, "v1", &[]), false));
    assert_eq!(reports(&mut rx, "c/1").await.0, ["Installed v1", "Healthy v1"]);
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
    assert_eq!(place.live_supervisors().len(), 1);
    ex.submit(order("c/2", Work::Rollback { to_version: String::new(), service: None }));
    assert_eq!(reports(&mut rx, "c/2").await.0, ["RolledBack "]);
    ex.shutdown().await;
}
