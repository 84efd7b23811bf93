//! The coordinator's metrics, recorded by the scheduler and the election and
//! served at `/metrics` by [`crate::server`] (with `--metrics-listen`).

use std::sync::LazyLock;

use drover_telemetry::metrics::{Counter, DURATION_BUCKETS, Gauge, Histogram, LATENCY_BUCKETS, Text};

/// Job results, as label values.
pub const RESULTS: [&str; 4] = ["succeeded", "failed", "cancelled", "skipped"];
/// What became of a notification for one target, as label values
/// (`crate::notifications`).
pub const NOTIFICATION_OUTCOMES: [&str; 3] = ["delivered", "failed", "dropped"];

pub struct Metrics {
    pub queue_depth: Gauge,
    /// Queue entries dispatch looked at (offered to the fleet, or given a
    /// wait reason): against the jobs dispatched, what the queue costs.
    pub dispatch_looked_at: Counter,
    /// From a job becoming ready to an agent accepting it.
    pub dispatch_latency: Histogram,
    /// Per result in [`RESULTS`] order: from start to end of the job's last
    /// attempt.
    pub job_duration: [Histogram; 4],
    pub jobs_finished: [Counter; 4],
    pub runs_submitted: Counter,
    pub agents_connected: Gauge,
    /// Agent sessions this coordinator carries to the leader, as a
    /// follower (`api::agent::relay`).
    pub agents_carried: Gauge,
    pub lease_expiries: Counter,
    /// Messages from agents refused at the edge (bad log chunks, refused
    /// sessions); each costs only its own attempt or session.
    pub agent_refusals: Counter,
    pub store_txn: Histogram,
    pub store_txn_errors: Counter,
    pub log_bytes: Counter,
    pub is_leader: Gauge,
    pub runs_pruned: Counter,
    /// Apps whose nodes do not run what their revision declares.
    pub apps_out_of_sync: Gauge,
    /// Apps found drifted from the commit they last synced.
    pub app_drift: Counter,
    /// One-way doors (`irreversible: true`) that failed and froze.
    pub rollouts_frozen: Counter,
    /// Per outcome in [`NOTIFICATION_OUTCOMES`] order.
    pub notifications: [Counter; 3],
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    queue_depth: Gauge::default(),
    dispatch_looked_at: Counter::default(),
    dispatch_latency: Histogram::new(LATENCY_BUCKETS),
    job_duration: std::array::from_fn(|_| Histogram::new(DURATION_BUCKETS)),
    jobs_finished: Default::default(),
    runs_submitted: Counter::default(),
    agents_connected: Gauge::default(),
    agents_carried: Gauge::default(),
    lease_expiries: Counter::default(),
    agent_refusals: Counter::default(),
    store_txn: Histogram::new(LATENCY_BUCKETS),
    store_txn_errors: Counter::default(),
    log_bytes: Counter::default(),
    is_leader: Gauge::default(),
    runs_pruned: Counter::default(),
    apps_out_of_sync: Gauge::default(),
    app_drift: Counter::default(),
    rollouts_frozen: Counter::default(),
    notifications: Default::default(),
});

/// The index of a result label, for the per-result arrays.
pub fn result_index(result: &str) -> Option<usize> {
    RESULTS.iter().position(|r| *r == result)
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let m = &*METRICS;
    let mut t = Text::default();
    t.gauge("drover_queue_depth", "Jobs ready and waiting for an agent.", m.queue_depth.get());
    t.counter(
        "drover_dispatch_looked_at_total",
        "Queue entries dispatch looked at: offered to the fleet, or given a wait reason.",
        m.dispatch_looked_at.get(),
    );
    t.histogram(
        "drover_dispatch_latency_seconds",
        "Time from a job becoming ready to an agent accepting it.",
        &m.dispatch_latency,
    );
    let durations: Vec<(&str, &Histogram)> = RESULTS.iter().copied().zip(m.job_duration.iter()).collect();
    t.histograms("drover_job_duration_seconds", "Job run time by result.", "result", &durations);
    let finished: Vec<(&str, u64)> = RESULTS.iter().copied().zip(m.jobs_finished.iter().map(Counter::get)).collect();
    t.counters("drover_jobs_finished_total", "Jobs that reached a final state, by result.", "result", &finished);
    t.counter("drover_runs_submitted_total", "Runs submitted to this coordinator.", m.runs_submitted.get());
    t.gauge("drover_agents_connected", "Agents with a live session to this coordinator.", m.agents_connected.get());
    t.gauge(
        "drover_agents_carried",
        "Agent sessions this coordinator carries to the leader (as a follower); the leader counts them in \
         drover_agents_connected.",
        m.agents_carried.get(),
    );
    t.counter("drover_lease_expiries_total", "Attempts lost because their lease expired.", m.lease_expiries.get());
    t.counter(
        "drover_agent_refusals_total",
        "Messages and sessions from agents refused at the edge (bad log chunks, refused Hellos).",
        m.agent_refusals.get(),
    );
    t.histogram("drover_store_txn_seconds", "Latency of store write transactions.", &m.store_txn);
    t.counter("drover_store_txn_errors_total", "Store write transactions that failed.", m.store_txn_errors.get());
    t.counter("drover_log_bytes_total", "Log bytes received from agents.", m.log_bytes.get());
    t.gauge("drover_is_leader", "1 while this coordinator leads.", m.is_leader.get());
    t.counter("drover_runs_pruned_total", "Finished runs pruned by the retention policy.", m.runs_pruned.get());
    t.gauge(
        "drover_apps_out_of_sync",
        "Apps whose nodes do not run what their revision declares (the leader's view).",
        m.apps_out_of_sync.get(),
    );
    t.counter(
        "drover_app_drift_total",
        "Times an app was found drifted from the commit it last synced (a node on another release, a service \
         stopped).",
        m.app_drift.get(),
    );
    t.counter(
        "drover_rollouts_frozen_total",
        "Rollouts of a one-way door (irreversible: true) that failed and froze where they stood rather than roll \
         back; each waits for a person.",
        m.rollouts_frozen.get(),
    );
    let notifications: Vec<(&str, u64)> =
        NOTIFICATION_OUTCOMES.iter().copied().zip(m.notifications.iter().map(Counter::get)).collect();
    t.counters(
        "drover_notifications_total",
        "Notifications to each target that wanted them, by outcome: delivered (a 2xx, retries included), failed \
         (no 2xx in all its tries) or dropped (a queue was full).",
        "outcome",
        &notifications,
    );
    t.finish()
}
