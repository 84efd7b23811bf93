//! A real etcd cluster for the tests and benchmarks that need one: members
//! on free ports below the ephemeral range ([`free_port`]), each with its
//! own data directory, that can be killed and restarted on the same ports
//! and data; and a few calls to etcd's JSON gateway (revision, database
//! size, compaction).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, TempDir, wait_for};

/// Picks a free TCP port on 127.0.0.1 for a program that cannot bind port 0
/// and report it (etcd), or for a port that must stay dead.
///
/// The port comes from below the kernel's ephemeral range, so no outgoing
/// connection and no `bind(0)` of a parallel test can take it between this
/// call and the program's bind, nor while a member is down for a restart.
/// Each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Start at a spot that differs between test processes.
    let floor = 10_000u16.min(low / 2);
    let span = low - floor;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port = next.unwrap_or_else(|| floor + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= low { floor } else { port + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port between {floor} and {low}");
}

/// A real etcd cluster of one or more members on free ports, each with its
/// own data directory. Members can be killed and restarted on the same ports
/// and data.
pub struct Etcd {
    dir: TempDir,
    members: Vec<EtcdMember>,
}

struct EtcdMember {
    name: String,
    client: u16,
    peer: u16,
    proc: Option<Proc>,
}

impl Etcd {
    pub fn start(tag: &str, n: usize) -> Etcd {
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd is not installed: `apt-get install etcd-server` (the README's test command does)")
        });
        let dir = TempDir::new(&format!("etcd-{tag}"));
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember { name: format!("m{i}"), client: free_port(), peer: free_port(), proc: None })
            .collect();
        let mut etcd_cluster = Etcd { dir, members };
        for i in 0..n {
            etcd_cluster.spawn(i, &etcd);
        }
        for i in 0..n {
            etcd_cluster.wait_healthy(i);
        }
        etcd_cluster
    }

    fn spawn(&mut self, i: usize, etcd: &Path) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let m = &self.members[i];
        let log = self.dir.path().join(format!("{}.log", m.name));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("etcd log");
        let child = Command::new(etcd)
            .args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", "drover-test"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start etcd");
        let name = m.name.clone();
        self.members[i].proc = Some(Proc { child, name, log });
    }

    fn wait_healthy(&self, i: usize) {
        let port = self.members[i].client;
        wait_for(&format!("etcd member {i} to be healthy"), Duration::from_secs(30), || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            body.contains("\"health\":\"true\"").then_some(())
        });
    }

    /// The client URLs, comma-separated, for `--etcd`.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    /// Calls etcd's JSON gateway on the first member that answers.
    fn gateway(&self, path: &str, body: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        for m in &self.members {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", m.client)) else { continue };
            let request = format!(
                "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut resp = String::new();
            if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
                continue;
            }
            if let Some(start) = resp.find('{') {
                return serde_json::from_str(&resp[start..]).expect("etcd answers JSON");
            }
        }
        panic!("no etcd member answered {path}");
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        let v = self.gateway("/v3/kv/range", r#"{"key":"AA=="}"#);
        v["header"]["revision"].as_str().and_then(|r| r.parse().ok()).expect("a revision")
    }

    /// The size of the database file of the first member that answers, in
    /// bytes.
    pub fn db_size(&self) -> u64 {
        let v = self.gateway("/v3/maintenance/status", "{}");
        v["dbSize"].as_str().and_then(|s| s.parse().ok()).expect("a dbSize")
    }

    /// Whether the history at `revision` is gone (compacted).
    pub fn is_compacted(&self, revision: u64) -> bool {
        let v = self.gateway("/v3/kv/range", &format!(r#"{{"key":"AA==","revision":"{revision}"}}"#));
        v.to_string().contains("compacted")
    }

    /// Compacts the history up to the current revision.
    pub fn compact(&self) {
        let rev = self.revision();
        self.gateway("/v3/kv/compaction", &format!(r#"{{"revision":"{rev}","physical":true}}"#));
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Starts member `i` again on its ports and data, and waits for it.
    pub fn restart(&mut self, i: usize) {
        let etcd = which("etcd").expect("etcd");
        self.spawn(i, &etcd);
        self.wait_healthy(i);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}
