//! `drover-coordinator`: parses flags and runs [`drover_coordinator::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use drover_client::duration;
use drover_coordinator::scheduler::{Config, DEFAULT_MAX_ACTIVE_RUNS, DEFAULT_MAX_QUEUED_JOBS};
use drover_coordinator::server::{self, Options, StoreConfig};
use drover_coordinator::store::embedded::EmbeddedOptions;
use drover_coordinator::store::etcd::{EtcdOptions, EtcdTls};
use drover_coordinator::{compaction, retention};
use drover_telemetry::logging::LogFormat;

/// Schedules Drover pipelines onto pull-based agents over mutual TLS.
#[derive(Parser)]
#[command(name = "drover-coordinator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Directory for the embedded store and scratch space.
    #[arg(long, default_value = ".drover/data")]
    data_dir: PathBuf,
    /// Directory for the bytes of job logs (the store keeps only their
    /// offsets, lengths and checksums); default: blobs in --data-dir.
    /// Coordinators sharing one etcd need one directory they all share
    /// (e.g. NFS), so that any of them can serve any log.
    #[arg(long)]
    blob_dir: Option<PathBuf>,
    /// Directory with ca.pem, coordinator.pem and coordinator-key.pem.
    #[arg(long, default_value = ".drover/tls")]
    tls_dir: PathBuf,
    /// The key that seals secrets at rest (made 0600 by `drover certs
    /// init`); default: secrets.key in --tls-dir, if it exists. Every
    /// coordinator of a cluster needs the same key.
    #[arg(long, value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    /// The CA's key, with which the coordinator signs the certificates of
    /// agents that enroll with a join token (and renews them); default:
    /// ca-key.pem in --tls-dir, if it exists (`drover certs init` puts it
    /// there). Without one, enrollment is off. Coordinators of a cluster
    /// each need it: a file they all read, mode 0600.
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// How long an enrolled agent's certificate is valid (10s to 90d); the
    /// agent renews it at half that, over its connection.
    #[arg(long, default_value = "24h", value_parser = parse_agent_cert_ttl)]
    agent_cert_ttl: Duration,
    /// How long the coordinator's own server certificate is valid when it
    /// holds the CA key (10s to 90d, or `off`): it signs one for the hosts
    /// of coordinator.pem at start and renews it at half its life, with no
    /// connection interrupted. `off` serves coordinator.pem as it is.
    #[arg(long, default_value = "24h", value_parser = parse_server_cert_ttl)]
    server_cert_ttl: ServerCertTtl,
    /// How long a user's certificate (`drover login`) is valid (10s to
    /// 90d); the user logs in again, with a new token, after it.
    #[arg(long, default_value = "30d", value_parser = parse_agent_cert_ttl)]
    user_cert_ttl: Duration,
    /// How long the audit log (`drover audit`) keeps entries, pruned a day
    /// at a time.
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    audit_retention: Duration,
    /// How long a job attempt survives without a heartbeat from its agent
    /// (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_lease_ttl)]
    lease_ttl: Duration,
    /// Cap on each job's log in bytes (suffixes K, M, G for KiB, MiB, GiB).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    log_cap: u64,
    /// Keep artifacts in an S3-compatible bucket, `s3://BUCKET/PREFIX`,
    /// rather than under the blob directory; credentials, region and
    /// endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION and AWS_ENDPOINT_URL (another service than AWS;
    /// AWS_ALLOW_HTTP=true for plain HTTP).
    #[arg(long, value_name = "URL")]
    blob_store: Option<String>,
    /// The most bytes one job's artifacts (one archive) may have; an upload
    /// is refused the moment it passes it (suffixes K, M, G).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    max_artifact_bytes: u64,
    /// The most bytes one file in a job's artifacts may have; the agent
    /// stops packing at a file past it, naming this flag (suffixes K, M, G).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    max_artifact_file_bytes: u64,
    /// The most bytes uploads (artifacts, caches) may fill the blob store
    /// with; past it an upload is refused, naming this flag (suffixes K,
    /// M, G; 0: no limit). Counted at start and at each retention pass.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    blob_store_budget: u64,
    /// Skip fsync after each store write and log segment write: faster,
    /// but a power loss (not a crash) can lose the last writes. Embedded
    /// store only.
    #[arg(long, conflicts_with = "etcd")]
    no_fsync: bool,
    /// The URL agents and the CLI use to reach this coordinator, handed out
    /// by followers to redirect clients to the leader (default: https:// and
    /// the listen address, or this host's name when listening on 0.0.0.0 or
    /// [::]).
    #[arg(long)]
    advertise: Option<String>,
    /// TTL of each coordinator's lease in the leader election: how long a
    /// dead leader blocks the next one (etcd's minimum is about 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    election_ttl: Duration,
    /// Keep state in etcd instead of the embedded store: client URLs,
    /// comma-separated. Several coordinators on one etcd elect a leader.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Prefix of every key Drover writes to etcd.
    #[arg(long, default_value = "/drover", requires = "etcd")]
    etcd_prefix: String,
    /// CA certificate for https:// etcd endpoints.
    #[arg(long, requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (with --etcd-key).
    #[arg(long, requires_all = ["etcd", "etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// Client key for etcd (with --etcd-cert).
    #[arg(long, requires_all = ["etcd", "etcd_cert", "etcd_ca"])]
    etcd_key: Option<PathBuf>,
    /// Keep at most this many finished runs (with their jobs and logs); the
    /// leader prunes the oldest beyond it. Unfinished runs are never pruned.
    #[arg(long, default_value_t = 10_000)]
    keep_runs: usize,
    /// Prune finished runs that finished longer ago than this (e.g. 30d,
    /// 12h).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    keep_runs_for: Duration,
    /// How often the leader looks for runs to prune.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    prune_interval: Duration,
    /// How old an artifact that no run refers to any more (its runs were
    /// pruned) must be before the leader deletes it from the blob store.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    blob_grace: Duration,
    /// How long a job's artifacts are kept when its pipeline file does not
    /// say (`artifacts: {expire: 7d}`); after that the leader deletes them,
    /// whether or not their run is kept.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    artifact_expire: Duration,
    /// The most bytes the caches in the blob store may take together; past
    /// it the leader deletes the least recently used (suffixes K, M, G).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    cache_budget: u64,
    /// How long a cache entry no job has restored is kept.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    cache_expire: Duration,
    /// How long after its run finished a job's log moves from its segment
    /// file into the blob store (the filesystem one, or S3 with
    /// --blob-store), where any coordinator reads it.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    seal_logs_after: Duration,
    /// When ready jobs outnumber free slots: `critical-path` sends first the
    /// jobs with the longest remaining path to their run's end (estimated
    /// from their last runs), `fifo` the oldest.
    #[arg(long, value_enum, default_value = "critical-path")]
    dispatch: DispatchOrder,
    /// Dispatch without preferring agents that hold a job's cache (by free
    /// slots alone), e.g. to measure what the preference gains.
    #[arg(long)]
    no_cache_affinity: bool,
    /// How often the leader compacts etcd's history, keeping one period of
    /// it for watchers; `off` leaves compaction to etcd's own
    /// --auto-compaction-retention. Without compaction etcd keeps every
    /// revision and stops taking writes at its space quota.
    #[arg(long, default_value = "5m", value_parser = parse_optional_duration, requires = "etcd")]
    etcd_compaction_interval: Every,
    /// The most runs that may be unfinished at once; a submit past it is
    /// refused with the count (gRPC RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = DEFAULT_MAX_ACTIVE_RUNS, value_parser = parse_limit)]
    max_active_runs: usize,
    /// The most jobs that unfinished runs may hold in all, counting each
    /// unfinished run's every job (it holds them in memory until it
    /// finishes); a submit past it is refused with the count.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUED_JOBS, value_parser = parse_limit)]
    max_queued_jobs: usize,
    /// How long a job waits for an agent with its labels while no connected
    /// agent has them, then fails saying so; for runs and jobs that do not
    /// set their own (`drover run --queue-timeout`, `queue-timeout:` in the
    /// file). At most 7 days.
    #[arg(long, default_value = "10m", value_parser = parse_queue_timeout)]
    queue_timeout: Duration,
    /// How long the coordinator keeps running once its store has stopped
    /// for good (the embedded store after a failed write or fsync, a full or
    /// read-only disk, its data directory deleted) before it exits non-zero
    /// with the reason, so a supervisor restarts it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    store_fail_exit: Duration,
    /// How long reading a pipeline from a git repository (`drover run
    /// --repo`) may take before the submit fails, naming the URL.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    git_timeout: Duration,
    /// The hosts (names, `*.example.com`) and CIDRs that analysis providers,
    /// gate webhooks and apps' artifacts by URL, which pipelines and
    /// repositories name, may call; by default any host. Link-local
    /// addresses (cloud instance metadata) never.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    outbound_allow: Vec<String>,
    /// How often the leader's triggers look for webhook deliveries, due
    /// polls and cron ticks (at most 5s, so ticks fire on time).
    #[arg(long, default_value = "1s", value_parser = parse_triggers_interval, hide = true)]
    triggers_interval: Duration,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address
    /// (plain HTTP).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Take push and pull-request webhooks from GitHub, Gitea and GitLab on
    /// this address: HTTPS, no client certificate, `POST /hooks/REPO` for a
    /// repository `drover repo add` registered with a webhook secret.
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// The webhook listener's certificate (PEM), e.g. one a public CA
    /// issued for the name forges reach; by default the coordinator's own.
    #[arg(long, requires = "webhook_key")]
    webhook_cert: Option<PathBuf>,
    /// The private key (PEM) of --webhook-cert.
    #[arg(long, requires = "webhook_cert")]
    webhook_key: Option<PathBuf>,
    /// The largest webhook body read; a bigger one gets 413 (suffixes K, M,
    /// G).
    #[arg(long, default_value = "5M", value_parser = parse_size)]
    webhook_max_body: u64,
    /// Serve the web UI on this address: HTTPS without client
    /// certificates; people log in with the single-use link `drover ui`
    /// prints. Off by default.
    #[arg(long)]
    ui_listen: Option<SocketAddr>,
    /// The UI's URL as browsers reach it, for the login links; default:
    /// https:// and --ui-listen's address (the host name for 0.0.0.0).
    #[arg(long, requires = "ui_listen")]
    ui_url: Option<String>,
    /// The UI listener's certificate (PEM), e.g. one a public CA issued for
    /// the name browsers reach; by default the coordinator's own.
    #[arg(long, requires_all = ["ui_key", "ui_listen"])]
    ui_cert: Option<PathBuf>,
    /// The private key (PEM) of --ui-cert.
    #[arg(long, requires = "ui_cert")]
    ui_key: Option<PathBuf>,
    /// How long a web UI session lasts after its login link is used.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    ui_session_ttl: Duration,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Export traces with OTLP over gRPC to this collector, e.g.
    /// http://127.0.0.1:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// A flag's duration: `10s`, `1m30s`, `500ms`, `30d` (see
/// [`drover_client::duration`]), longer than zero.
/// `--dispatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DispatchOrder {
    CriticalPath,
    Fifo,
}

/// `--triggers-interval`: longer than zero, at most 5s.
fn parse_triggers_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d > Duration::from_secs(5) => Err(format!("{s} is over the limit of 5s: cron ticks would fire late")),
        d => Ok(d),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match duration::parse(s, duration::FLAG_UNITS) {
        Some(d) if d.is_zero() => Err("the duration must be longer than zero".to_string()),
        Some(d) => Ok(d),
        None => Err(format!(
            "{s:?} is not a duration: write whole numbers with units d, h, m, s or ms, largest first \
             (500ms, 10s, 1m30s, 12h, 30d)"
        )),
    }
}

/// A count limit: a whole number of at least 1.
fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a limit: write a whole number of at least 1")),
    }
}

/// Agents heartbeat every quarter of the lease and at most every 100 ms, so
/// a lease under a second would expire between heartbeats.
fn parse_queue_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > drover_pipeline::MAX_TIMEOUT {
        return Err(format!("{s} is over the limit of 7d for a queue timeout"));
    }
    Ok(d)
}

fn parse_agent_cert_ttl(s: &str) -> Result<Duration, String> {
    use drover_coordinator::core::identity::{MAX_CERT_TTL, MIN_CERT_TTL};
    let ttl = parse_duration(s)?;
    if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&ttl) {
        return Err(format!(
            "a certificate lives {}s to {} days",
            MIN_CERT_TTL.as_secs(),
            MAX_CERT_TTL.as_secs() / 86_400
        ));
    }
    Ok(ttl)
}

#[derive(Debug, Clone, Copy)]
struct ServerCertTtl(Option<Duration>);

fn parse_server_cert_ttl(s: &str) -> Result<ServerCertTtl, String> {
    match s {
        "off" => Ok(ServerCertTtl(None)),
        s => parse_agent_cert_ttl(s).map(|d| ServerCertTtl(Some(d))),
    }
}

fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(1) {
        return Err("the lease TTL must be at least 1s (agents renew leases every quarter of it)".to_string());
    }
    Ok(ttl)
}

/// A period, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct Every(Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<Every, String> {
    if s == "off" {
        return Ok(Every(None));
    }
    parse_duration(s).map(|d| Every(Some(d))).map_err(|e| format!("{e}; or `off`"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size; use e.g. 65536, 512K, 16M"))?;
    let mult = match unit {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("{s:?} has unknown unit {unit:?}; use K, M or G")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry =
        drover_telemetry::trace::init(args.log_format, "drover-coordinator", args.otlp_endpoint.as_deref())
            .map_err(|e| anyhow::anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    // Tests and `drover dev` read these lines to learn the ports. One write,
    // and a reader that stops reading (closing the pipe) does not kill us.
    let webhooks = match args.webhook_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for webhooks on {addr}"))?,
        ),
        None => None,
    };
    let ui = match args.ui_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the web UI on {addr}"))?,
        ),
        None => None,
    };
    let mut banner = format!("drover-coordinator listening on {addr}\n");
    if let Some(m) = &metrics {
        banner.push_str(&format!("metrics on http://{}/metrics\n", m.local_addr()?));
    }
    if let Some(w) = &webhooks {
        banner.push_str(&format!("webhooks on https://{}/hooks/\n", w.local_addr()?));
    }
    if let Some(u) = &ui {
        banner.push_str(&format!("web UI on https://{}/\n", u.local_addr()?));
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    let opts = Options {
        blob_store: args.blob_store,
        max_artifact_bytes: args.max_artifact_bytes,
        blob_store_budget: args.blob_store_budget,
        max_artifact_file_bytes: args.max_artifact_file_bytes,
        data_dir: args.data_dir,
        tls_dir: args.tls_dir,
        scheduler: Config {
            lease_ttl: args.lease_ttl,
            log_cap: args.log_cap,
            max_active_runs: args.max_active_runs,
            max_queued_jobs: args.max_queued_jobs,
            queue_timeout: args.queue_timeout,
            artifact_expire: args.artifact_expire,
            cache_affinity: !args.no_cache_affinity,
            critical_path: args.dispatch == DispatchOrder::CriticalPath,
            ..Config::default()
        },
        store: if args.etcd.is_empty() {
            StoreConfig::Embedded(EmbeddedOptions { fsync: !args.no_fsync, ..Default::default() })
        } else {
            StoreConfig::Etcd(EtcdOptions {
                endpoints: args.etcd.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect(),
                prefix: args.etcd_prefix,
                tls: args.etcd_ca.map(|ca| EtcdTls { ca, cert: args.etcd_cert, key: args.etcd_key }),
                ..Default::default()
            })
        },
        advertise: args.advertise,
        git_timeout: args.git_timeout,
        outbound: drover_coordinator::outbound::Outbound::parse(&args.outbound_allow)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        triggers_interval: args.triggers_interval,
        store_fail_exit: args.store_fail_exit,
        blob_dir: args.blob_dir,
        secrets_key_file: args.secrets_key_file,
        ca_key: args.ca_key,
        agent_cert_ttl: args.agent_cert_ttl,
        server_cert_ttl: args.server_cert_ttl.0,
        user_cert_ttl: args.user_cert_ttl,
        webhook_cert: args.webhook_cert.zip(args.webhook_key),
        webhook_max_body: usize::try_from(args.webhook_max_body).unwrap_or(usize::MAX),
        ui_url: args.ui_url,
        ui_cert: args.ui_cert.zip(args.ui_key),
        ui_session_ttl: args.ui_session_ttl,
        election_ttl: args.election_ttl,
        retention: retention::Config {
            keep_runs: args.keep_runs,
            keep_for: args.keep_runs_for,
            interval: args.prune_interval,
            blob_grace: args.blob_grace,
            cache_budget: args.cache_budget,
            cache_expire: args.cache_expire,
            seal_after: args.seal_logs_after,
            audit_keep: args.audit_retention,
        },
        // The embedded store bounds its own history.
        compaction: if args.etcd.is_empty() { None } else { args.etcd_compaction_interval.0 }
            .map(|every| compaction::Config { every }),
    };
    server::run(listener, server::Listeners { metrics, webhooks, ui }, opts, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
