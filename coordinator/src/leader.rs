//! Leader election, on any [`Store`] (etcd, or the embedded store for a
//! single coordinator), with fencing.
//!
//! Each coordinator holds a lease and registers itself under
//! [`keys::MEMBERS`]. To lead, it creates [`keys::LEADER`] with its lease in a
//! transaction that requires the key to be absent. The key's create revision
//! is the leader's **epoch**: every write the leader makes goes through
//! [`Fenced`], which checks the key still has that create revision, and every
//! assignment and cancel carries the epoch, so agents refuse an older one.
//! When the leader's lease expires (it died, or it was paused past the TTL)
//! etcd deletes the key, followers see the delete on their watch, and the
//! first to create the key again leads with a higher epoch.
//!
//! While leading, the coordinator runs the registered controllers
//! (`crate::controller`: the scheduler, retention, compaction), each given the
//! term's epoch and fenced store. It steps down when a controller fails
//! (the scheduler does when its writes are fenced), when it cannot renew
//! its lease within the TTL, or on shutdown (when it revokes its lease, so a
//! follower takes over at once instead of after the TTL), and stops every
//! controller before it campaigns again.

use std::sync::Arc;
use std::time::Duration;

use drover_telemetry::trace::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::controller::{Controller, ControllerError, Running, Term};
use crate::core::keys;
use crate::metrics::METRICS;
use crate::scheduler::Handle;
use crate::segments::Segments;
use crate::store::fenced::Fenced;
use crate::store::{Compare, EventKind, LeaseId, Op, Revision, Store, StoreError, Txn, WatchMessage};

/// Who leads, as stored in [`keys::LEADER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub id: String,
    /// Where agents and the CLI reach it.
    pub url: String,
    pub since_ms: u64,
    /// Its web UI, where followers' UIs send actions (`crate::ui`); none
    /// when it serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_url: Option<String>,
    /// It serves agents' calls that followers carry to it
    /// (`api::relayed`). A leader from before relaying says nothing, and
    /// followers send their agents to it instead: it would refuse the
    /// carried calls, and the agents would take that as final.
    #[serde(default)]
    pub carries: bool,
}

/// A coordinator, as stored under [`keys::MEMBERS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: String,
    pub url: String,
    pub started_ms: u64,
}

/// This coordinator's part at the moment.
#[derive(Clone)]
pub enum Role {
    /// Not (yet) leading; `leader` is who does, when known.
    Follower { leader: Option<LeaderInfo> },
    Leader {
        epoch: Revision,
        /// The scheduler's, from the controller that runs it.
        sched: Handle,
    },
}

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Unique and stable across restarts of the same coordinator.
    pub id: String,
    /// The URL to advertise to agents and the CLI.
    pub url: String,
    /// The web UI's URL, when this coordinator serves one.
    pub ui_url: Option<String>,
    /// TTL of the coordinator's lease: how long a dead leader blocks the
    /// election.
    pub ttl: Duration,
    /// Where log bytes live, handed to the controllers with each term; the
    /// coordinator does not campaign while they cannot be written.
    pub segments: Arc<Segments>,
    /// Where artifacts live, handed to the controllers with each term.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// The process's notifier, handed to the controllers with each term.
    pub notifier: crate::notifications::Notifier,
}

/// Runs elections until `shutdown` turns true, publishing the role on `role`,
/// and runs `controllers` (`crate::controller::registry`) for each term it
/// wins.
pub async fn run(
    store: Arc<dyn Store>,
    config: ElectionConfig,
    controllers: Vec<Box<dyn Controller>>,
    role: watch::Sender<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        match term(&store, &config, &controllers, &role, &mut shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                warn!(error = %e, "election interrupted; retrying");
                let _ = role.send(Role::Follower { leader: None });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One lease's worth of campaigning, and leading if we win.
async fn term(
    store: &Arc<dyn Store>,
    config: &ElectionConfig,
    controllers: &[Box<dyn Controller>],
    role: &watch::Sender<Role>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    // Segments that cannot be written are this coordinator's fault, as a
    // stopped store is: leading would only end the term at the first log
    // chunk. The server exits after --store-fail-exit.
    if let Some(reason) = config.segments.stopped() {
        return Err(StoreError::Unavailable(format!("not campaigning: {reason}")));
    }
    let lease = store.lease_grant(config.ttl).await?;
    let member = MemberInfo { id: config.id.clone(), url: config.url.clone(), started_ms: now_ms() };
    store
        .txn(Txn::ops(vec![Op::Put {
            key: keys::member(&config.id),
            value: serde_json::to_vec(&member).expect("serializes"),
            lease,
        }]))
        .await?;
    let (alive_tx, mut alive) = watch::channel(true);
    let keeper = tokio::spawn(keep_alive(store.clone(), lease, config.ttl, alive_tx));
    let result = campaign_and_lead(store, config, controllers, role, shutdown, lease, &mut alive).await;
    keeper.abort();
    let _ = role.send(Role::Follower { leader: None });
    // Revoking deletes our leader key at once, so followers need not wait
    // out the TTL. If the store is unreachable the lease simply expires.
    let _ = tokio::time::timeout(Duration::from_secs(1), store.lease_revoke(lease)).await;
    result
}

/// Renews the lease every third of its TTL; sends false once it has not
/// been renewed for a whole TTL (or the store says it is gone).
async fn keep_alive(store: Arc<dyn Store>, lease: LeaseId, ttl: Duration, alive: watch::Sender<bool>) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match tokio::time::timeout(ttl / 3, store.lease_keep_alive(lease)).await {
            Ok(Ok(())) => last_ok = Instant::now(),
            Ok(Err(StoreError::LeaseNotFound(_))) => {
                let _ = alive.send(false);
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "cannot renew the coordinator's lease"),
            Err(_) => warn!("renewing the coordinator's lease timed out"),
        }
        // Stop short of the TTL: etcd may expire the lease a little early
        // from our point of view.
        if last_ok.elapsed() >= ttl.mul_f32(0.9) {
            let _ = alive.send(false);
            return;
        }
    }
}

async fn campaign_and_lead(
    store: &Arc<dyn Store>,
    config: &ElectionConfig,
    controllers: &[Box<dyn Controller>],
    role: &watch::Sender<Role>,
    shutdown: &mut watch::Receiver<bool>,
    lease: LeaseId,
    alive: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let info = LeaderInfo {
        id: config.id.clone(),
        url: config.url.clone(),
        since_ms: now_ms(),
        ui_url: config.ui_url.clone(),
        carries: true,
    };
    let epoch = loop {
        if !*alive.borrow() {
            return Err(StoreError::Unavailable("the coordinator's lease expired".into()));
        }
        let resp = store
            .txn(Txn {
                compare: vec![Compare::CreateRevision(keys::LEADER.into(), 0)],
                success: vec![Op::Put {
                    key: keys::LEADER.into(),
                    value: serde_json::to_vec(&info).expect("serializes"),
                    lease,
                }],
                failure: vec![Op::Get { key: keys::LEADER.into() }],
            })
            .await?;
        if resp.succeeded {
            break resp.revision;
        }
        let Some(current) = resp.gets.into_iter().next().flatten() else { continue };
        let leader = match crate::store::decode::<LeaderInfo>(&current.key, &current.value) {
            Ok(leader) => Some(leader),
            Err(e) => {
                // Not ours, as far as we can tell: wait for its lease.
                warn!(error = %e, "the leader key does not decode; waiting for its lease to expire");
                None
            }
        };
        if leader.as_ref().is_some_and(|l| l.id == config.id) && current.lease != lease {
            // Our own claim from before a restart: it is stale, take it back
            // now instead of waiting for its lease to expire.
            info!("removing this coordinator's leader key from a previous run");
            store
                .txn(Txn {
                    compare: vec![Compare::ModRevision(keys::LEADER.into(), current.mod_revision)],
                    success: vec![Op::delete(keys::LEADER)],
                    failure: vec![],
                })
                .await?;
            continue;
        }
        let _ = role.send(Role::Follower { leader: leader.clone() });
        info!(leader = ?leader.map(|l| l.url), "following");
        let mut watch = store.watch(keys::LEADER, current.mod_revision + 1).await?;
        // Wait for the leader key to go away (or the watch to end, in which
        // case we simply try again).
        loop {
            tokio::select! {
                msg = watch.recv() => match msg {
                    Some(WatchMessage::Events(events)) => {
                        if events.iter().any(|e| e.kind == EventKind::Delete) {
                            break;
                        }
                    }
                    Some(WatchMessage::Compacted { .. }) | None => break,
                },
                _ = alive.changed() => break,
                _ = shutdown.changed() => return Ok(()),
            }
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    };

    info!(epoch, "elected leader");
    let term = Term {
        epoch,
        store: Fenced::new(store.clone(), keys::LEADER, epoch),
        segments: config.segments.clone(),
        blobs: config.blobs.clone(),
        sched: None,
        notifier: config.notifier.clone(),
    };
    // A controller that cannot start (the scheduler's recovery found the
    // store unavailable) ends the term before it is announced.
    let mut running = Running::start(controllers, &term).await.map_err(|failure| match failure.error {
        ControllerError::Store(e) => e,
        _ => StoreError::Rejected(failure.to_string()),
    })?;
    let Some(sched) = running.scheduler() else {
        running.stop().await;
        return Err(StoreError::Rejected("no registered controller runs the scheduler".into()));
    };
    let _ = role.send(Role::Leader { epoch, sched });
    METRICS.is_leader.set(1);
    let outcome = tokio::select! {
        failure = running.failed() => {
            warn!(epoch, controller = failure.controller, error = %failure.error, "a controller failed; ending the term");
            Err(term_error(failure.error))
        }
        _ = alive.wait_for(|a| !*a) => Err(StoreError::Unavailable("could not renew the coordinator's lease".into())),
        _ = shutdown.wait_for(|s| *s) => Ok(()),
    };
    // Step down before anything else: nobody may reach the old scheduler.
    let _ = role.send(Role::Follower { leader: None });
    METRICS.is_leader.set(0);
    METRICS.agents_connected.set(0);
    running.stop().await;
    match &outcome {
        Ok(()) => info!(epoch, "stepping down: shutting down"),
        Err(e) => warn!(epoch, error = %e, "stepped down"),
    }
    outcome
}

/// Why a term ended, for the log and the retry loop: a store error as it
/// was, anything else as a refusal (it says which controller and why).
fn term_error(error: ControllerError) -> StoreError {
    match error {
        ControllerError::Store(e) => e,
        other => StoreError::Rejected(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::controller::tests::{Behaviour, Seen, TestDir, recorder, store_and_segments};
    use crate::controller::{self, registry};

    /// Bounds a wait for something the test has made happen, so a broken
    /// leader fails the test instead of hanging it.
    async fn soon<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("{what}: not within 20s"))
    }

    /// The scheduler's handle and epoch once `role` says we lead in an epoch
    /// after `after`.
    async fn leading(role: &mut watch::Receiver<Role>, after: Revision) -> (Revision, Handle) {
        let role = soon("leading", role.wait_for(|r| matches!(r, Role::Leader { epoch, .. } if *epoch > after))).await;
        match &*role.expect("the election runs") {
            Role::Leader { epoch, sched } => (*epoch, sched.clone()),
            Role::Follower { .. } => unreachable!(),
        }
    }

    fn election(id: &str, segments: Arc<Segments>) -> ElectionConfig {
        let blobs = Arc::new(
            crate::blobs::Blobs::open(
                &std::env::temp_dir().join(format!("drover-blobs-{id}-{}", std::process::id())),
                false,
            )
            .unwrap(),
        );
        let notifier = crate::notifications::Notifier::off();
        ElectionConfig {
            id: id.into(),
            url: format!("https://{id}"),
            ui_url: None,
            ttl: Duration::from_secs(2),
            segments,
            blobs,
            notifier,
        }
    }

    fn registered() -> Vec<Box<dyn Controller>> {
        registry(&controller::Config {
            scheduler: crate::scheduler::Config::default(),
            retention: crate::retention::Config::default(),
            compaction: None,
            triggers: None,
            apps: None,
            outbound: Default::default(),
        })
    }

    #[tokio::test]
    async fn each_term_runs_the_registered_controllers_and_a_failed_one_ends_the_term() {
        let dir = TestDir::new("leader-terms");
        let (store, segments) = store_and_segments(&dir).await;
        let (tx, mut seen) = mpsc::unbounded_channel();
        let (test_controller, fail) = recorder("test", Behaviour::Run, &tx);
        let mut controllers = registered();
        controllers.push(test_controller);
        let (role_tx, mut role) = watch::channel(Role::Follower { leader: None });
        let (stop_tx, stop) = watch::channel(false);
        let election = tokio::spawn(run(store.clone(), election("c1", segments), controllers, role_tx, stop));

        // The term is announced with the scheduler's handle, once every
        // controller has started with the term's epoch.
        let (first, sched) = leading(&mut role, 0).await;
        assert_eq!(soon("start", seen.recv()).await, Some(Seen::Started("test", first)));
        let leader = store.get(keys::LEADER).await.unwrap().expect("a leader key");
        assert_eq!(leader.create_revision, first, "the epoch is the leader key's create revision");
        assert!(!sched.is_closed());

        // A controller that fails ends the term: every controller stops
        // (the scheduler too), and the next term starts them all afresh.
        fail.notify_one();
        assert_eq!(soon("stop", seen.recv()).await, Some(Seen::Stopped("test")));
        let (second, sched2) = leading(&mut role, first).await;
        assert!(sched.is_closed(), "the first term's scheduler stopped with its term");
        assert_eq!(soon("restart", seen.recv()).await, Some(Seen::Started("test", second)));

        // Shutting down stops them and steps down.
        stop_tx.send(true).unwrap();
        soon("shutdown", election).await.unwrap();
        assert_eq!(seen.recv().await, Some(Seen::Stopped("test")));
        assert!(matches!(*role.borrow(), Role::Follower { leader: None }));
        assert!(sched2.is_closed(), "the scheduler stopped with the term");
        assert!(store.get(keys::LEADER).await.unwrap().is_none(), "the lease was revoked");
    }

    #[tokio::test]
    async fn a_controller_that_cannot_start_keeps_the_term_from_being_announced() {
        let dir = TestDir::new("leader-start");
        let (store, segments) = store_and_segments(&dir).await;
        let (tx, mut seen) = mpsc::unbounded_channel();
        let mut controllers = registered();
        controllers.push(recorder("test", Behaviour::FailToStart, &tx).0);
        let (role_tx, role) = watch::channel(Role::Follower { leader: None });
        let (stop_tx, stop) = watch::channel(false);
        let election = tokio::spawn(run(store, election("c1", segments), controllers, role_tx, stop));

        // It campaigns again, in a new term, and never leads.
        let Some(Seen::Refused("test", first)) = soon("a start", seen.recv()).await else { panic!("refused") };
        let Some(Seen::Refused("test", second)) = soon("another", seen.recv()).await else { panic!("refused") };
        assert!(second > first, "a new term: {first} then {second}");
        stop_tx.send(true).unwrap();
        soon("shutdown", election).await.unwrap();
        assert!(matches!(*role.borrow(), Role::Follower { leader: None }));
    }
}
