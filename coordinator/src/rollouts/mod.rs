//! The rollout controller (issue 15): the leader's driver of deploy jobs'
//! rollouts. It owns `/rollouts/` (see `records`), and talks to the run
//! machine and the agents only through the scheduler (`scheduler::deploys`).
//!
//! Each term it loads every rollout, subscribes to the scheduler's deploy
//! notes (which start with every deploy job under way), sends again every
//! action that was in flight, and then loops: a note (a deploy job to roll
//! out, a cancelled run, a node's report, an operator's command) or a tick
//! goes to the synchronous core (`drive::Driver`); what it staged is then
//! committed in one transaction, and only after that are actions sent to
//! nodes and runs told how their rollouts ended. A rollout that may start
//! is planned here (`core::rollouts::plan`: the environment, its connected
//! nodes, what each serves now), since that needs the store and the fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tracing::{info, warn};

use drover_deploy::rollout::{Rollout, Target};

use crate::controller::{Controller, ControllerError, Started, Term};
use crate::core::fleet::AgentInfo;
use crate::scheduler::{DeployNote, Event, Handle};
use crate::store::{Store, Txn, decode};

pub(crate) mod analysis;
mod baseline;
pub mod drive;
mod freeze;
mod gates;
mod guards;
mod hooks;
mod measure;
mod notices;
mod probe;
pub mod records;
mod retention;
mod rollback;
mod sync;
mod tick;
mod trace;

use drive::Driver;

/// How often pauses, deadlines and nodes away are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How often freezes are read while nothing moves.
const FREEZE_TICK: Duration = Duration::from_secs(2);

/// How long into a term a rollout whose nodes are all away waits for
/// them rather than failing: the agents are still finding the new leader
/// (the scheduler gives their attempts `RECOVERY_GRACE` for the same).
const RECONNECT_GRACE: Duration = crate::scheduler::RECOVERY_GRACE;

pub struct Rollouts {
    /// What analyses and gates may call (`--outbound-allow`).
    pub outbound: crate::outbound::Outbound,
}

#[async_trait]
impl Controller for Rollouts {
    fn name(&self) -> &'static str {
        "rollouts"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &[records::PREFIX]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        let sched = term
            .sched
            .clone()
            .ok_or_else(|| ControllerError::Failed("the rollout controller starts after the scheduler".into()))?;
        let driver = load(term.store.as_ref()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        sched.send(Event::SubscribeDeploys { tx }).await.map_err(|e| ControllerError::Failed(e.to_string()))?;
        let (probes_tx, probes) = mpsc::unbounded_channel();
        let caller = measure::Caller::new(&self.outbound, probes_tx);
        let notifier = term.notifier.clone();
        Ok(Started::work(run(term.store.clone(), sched, driver, (rx, probes), caller, notifier)))
    }
}

/// Every rollout, the release catalogue and what nodes serve, from the store.
async fn load(store: &dyn Store) -> Result<Driver, ControllerError> {
    let mut d = Driver::default();
    if let Some(kv) = store.get(records::SEQ).await? {
        let text = String::from_utf8_lossy(&kv.value).into_owned();
        d.last_id = text
            .parse()
            .map_err(|_| ControllerError::Failed(format!("{} holds {text:?}, not a number", records::SEQ)))?;
    }
    for rec in records::list(store).await? {
        d.last_id = d.last_id.max(rec.id);
        d.records.insert(rec.id, rec);
    }
    let (kvs, _) = store.range(records::RELEASES).await?;
    for kv in kvs {
        let c: records::Catalogued = decode(&kv.key, &kv.value)?;
        let mut parts = kv.key[records::RELEASES.len()..].split('/');
        if let (Some(env), Some(service)) = (parts.next(), parts.next()) {
            let key =
                (records::unescape(&kv.key, env)?, records::unescape(&kv.key, service)?, c.release.version.clone());
            d.catalog.insert(key, c);
        }
    }
    for (env, service, deployed) in records::deployed_in(store, None).await? {
        d.deployed.insert((env, service, deployed.node.clone()), deployed);
    }
    let now = drover_telemetry::trace::now_ms();
    d.set_freezes(crate::freezes::load(store).await?, now);
    d.notices.clear();
    d.resume(now);
    Ok(d)
}

async fn run(
    store: Arc<dyn Store>,
    sched: Handle,
    mut d: Driver,
    (mut notes, mut probes): (mpsc::UnboundedReceiver<DeployNote>, mpsc::UnboundedReceiver<probe::Ask>),
    caller: measure::Caller,
    notifier: crate::notifications::Notifier,
) -> Result<(), ControllerError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Freezes are read now and then even when nothing moves, so that one
    // beginning or ending is told (`notices.rs`).
    let mut freeze_tick = tokio::time::interval(FREEZE_TICK);
    freeze_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replies = Vec::new();
    let mut rollbacks = Vec::new();
    let mut syncs = Vec::new();
    let term_started = tokio::time::Instant::now();
    // The analysis task of each rollout whose step is being analysed, by
    // rollout: the run it measures; aborted with the term (dropped).
    let (measured_tx, mut measured) = mpsc::unbounded_channel();
    let mut analyses = Analyses::default();
    // Likewise the task of each webhook gate waited at.
    let (answered_tx, mut answered) = mpsc::unbounded_channel();
    let mut confirms = Confirms::default();
    loop {
        let now = drover_telemetry::trace::now_ms();
        tokio::select! {
            Some((id, m)) = measured.recv() => d.measured(id, m, now),
            Some((id, answer)) = answered.recv() => d.gate_answered(id, answer, now),
            Some(ask) = probes.recv() => d.probe(ask),
            note = notes.recv() => match note {
                // The scheduler stopped: the term is over.
                None => return Ok(()),
                Some(DeployNote::Start(job)) => d.start_job(*job, now),
                Some(DeployNote::Cancel { run, job, attempt, reason }) => {
                    let id = d.records.values().find(|r| r.job.as_ref().is_some_and(|j| j.run == run && j.job == job && j.attempt == attempt)).map(|r| r.id);
                    if let Some(id) = id {
                        d.abort(id, reason, now);
                    }
                }
                Some(DeployNote::Report(report)) => d.report(report, now),
                Some(DeployNote::Health(health)) => d.health(health, now),
                Some(DeployNote::HookOutput { node, rollout, seq, data }) => d.hook_output(rollout, seq, &node, data),
                Some(DeployNote::Sync(cmd)) => {
                    let result = d.start_sync(&cmd, now);
                    if let Ok(id) = &result {
                        info!(rollout = id, env = %cmd.env, by = %cmd.by, "sync rollout");
                    }
                    syncs.push((cmd.reply, result));
                }
                Some(DeployNote::Rollback(cmd)) => {
                    let result = d.rollback(&cmd.env, &cmd.service, cmd.to.clone(), cmd.staged, &cmd.by, cmd.force.as_deref(), now);
                    if let Ok(id) = &result {
                        info!(rollout = id, env = %cmd.env, service = %cmd.service, by = %cmd.by, "rollback asked for");
                    }
                    rollbacks.push((cmd.reply, result));
                }
                Some(DeployNote::Command(cmd)) => {
                    let result = d.command(cmd.rollout, cmd.verb.clone(), &cmd.by, now);
                    if result.is_ok() {
                        info!(rollout = cmd.rollout, verb = ?cmd.verb, by = %cmd.by, "rollout command");
                    }
                    replies.push((cmd.reply, result));
                }
            },
            // Only while something moves: listing the fleet is not free
            // with thousands of agents.
            _ = freeze_tick.tick(), if !busy(&d) => {
                d.set_freezes(crate::freezes::load(store.as_ref()).await?, now);
            }
            _ = tick.tick(), if busy(&d) => {
                d.set_freezes(crate::freezes::load(store.as_ref()).await?, now);
                d.windows = windows(store.as_ref()).await?;
                d.thaw(now);
                let agents = sched.agents().await.map_err(|e| ControllerError::Failed(e.to_string()))?;
                let connected: BTreeSet<String> = agents.iter().filter(|a| a.connected).map(|a| a.name.clone()).collect();
                d.tick(&connected, now);
            }
        }
        if !d.startable.is_empty() {
            let agents = sched.agents().await.map_err(|e| ControllerError::Failed(e.to_string()))?;
            let young = term_started.elapsed() < RECONNECT_GRACE;
            start_ready(store.as_ref(), &mut d, &agents, young, now).await?;
        }
        // Write, then act. A key staged twice is written once, as it was
        // last staged (etcd refuses a transaction that writes a key twice).
        let staged: std::collections::BTreeMap<String, crate::store::Op> =
            std::mem::take(&mut d.ops).into_iter().map(|op| (op.key().to_string(), op)).collect();
        if !staged.is_empty() {
            store.txn(Txn::ops(staged.into_values().collect())).await?;
        }
        for span in std::mem::take(&mut d.spans) {
            span.emit();
        }
        for notice in std::mem::take(&mut d.notices) {
            notifier.send(notice);
        }
        for out in std::mem::take(&mut d.logs) {
            let event =
                Event::DeployLog { run: out.job.run, job: out.job.job, attempt: out.job.attempt, data: out.data };
            if sched.send(event).await.is_err() {
                return Ok(());
            }
        }
        for (reply, result) in replies.drain(..) {
            let _ = reply.send(result);
        }
        for (reply, result) in rollbacks.drain(..).chain(syncs.drain(..)) {
            let _ = reply.send(result);
        }
        send_actions(&sched, &mut d).await;
        analyses.reconcile(&d, &measured_tx, &caller);
        confirms.reconcile(&d, &answered_tx, &caller);
        for f in std::mem::take(&mut d.finished) {
            let event = Event::DeployFinished {
                run: f.job.run,
                job: f.job.job,
                attempt: f.job.attempt,
                succeeded: f.succeeded,
                message: f.message,
            };
            if sched.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The analysis tasks, one per rollout whose step is being analysed.
#[derive(Default)]
struct Analyses {
    /// By rollout and whether it is the background analysis.
    running: std::collections::HashMap<(u64, bool), (analysis::Analysing, tokio::task::JoinHandle<()>)>,
}

impl Analyses {
    /// Starts a task for each run the records say is being analysed and
    /// has none, and aborts those of runs that are over.
    fn reconcile(
        &mut self,
        d: &Driver,
        tx: &mpsc::UnboundedSender<(u64, analysis::Measurement)>,
        caller: &measure::Caller,
    ) {
        let current = |id: u64, background: bool| {
            let rec = d.records.get(&id).filter(|r| !r.is_finished())?;
            if background { rec.background } else { rec.analysing }
        };
        self.running.retain(|(id, background), (run, task)| {
            let keep = current(*id, *background) == Some(*run);
            if !keep {
                task.abort();
            }
            keep
        });
        for rec in d.records.values().filter(|r| !r.is_finished()) {
            let Some(spec) = rec.deploy.analysis.as_ref() else { continue };
            for (background, run) in [(false, rec.analysing), (true, rec.background)] {
                let Some(run) = run else { continue };
                if let std::collections::hash_map::Entry::Vacant(slot) = self.running.entry((rec.id, background)) {
                    let split = rec.split.clone();
                    let task =
                        tokio::spawn(analysis::analyse(rec.id, run, spec.clone(), split, caller.clone(), tx.clone()));
                    slot.insert((run, task));
                }
            }
        }
    }
}

impl Drop for Analyses {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// The webhook gates' tasks, one per gate a rollout waits at.
#[derive(Default)]
struct Confirms {
    running: std::collections::HashMap<(u64, String, Option<u32>), tokio::task::JoinHandle<()>>,
}

impl Confirms {
    /// Starts a task for each webhook gate waited at that has none, and
    /// aborts those of gates decided.
    fn reconcile(&mut self, d: &Driver, tx: &mpsc::UnboundedSender<(u64, gates::Answer)>, caller: &measure::Caller) {
        let mut waited = std::collections::HashMap::new();
        for rec in d.records.values().filter(|r| !r.is_finished()) {
            let Some(g) = rec.gates.iter().rev().find(|g| g.state == gates::GateState::Waiting) else { continue };
            let Some(drover_pipeline::deploy::GateKind::Confirm { url, timeout, interval }) =
                rec.deploy.gates.iter().find(|spec| spec.name == g.name).map(|spec| &spec.kind)
            else {
                continue;
            };
            let call = gates::Call {
                rollout: rec.id,
                environment: rec.env.clone(),
                service: rec.service.clone(),
                version: rec.release.version.clone(),
                sha256: rec.release.sha256.clone(),
                commit: rec.release.commit.clone(),
                gate: g.name.clone(),
                at: g.at.as_str(),
                step: g.step,
            };
            let deadline = g.asked_ms + timeout.as_millis() as u64;
            waited.insert((rec.id, g.name.clone(), g.step), (call, url.clone(), *interval, deadline));
        }
        self.running.retain(|key, task| {
            let keep = waited.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (call, url, interval, deadline)) in waited {
            let id = key.0;
            self.running.entry(key).or_insert_with(|| {
                tokio::spawn(gates::confirm(id, call, url, interval, deadline, caller.clone(), tx.clone()))
            });
        }
    }
}

impl Drop for Confirms {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

/// Whether anything moves that the tick looks after: a rollout under way
/// or waiting to start, a hook in flight, or an action not yet taken.
fn busy(d: &Driver) -> bool {
    !d.startable.is_empty()
        || !d.waiting_thaw.is_empty()
        || !d.unsent.is_empty()
        || d.records.values().any(|r| r.hook.is_some() || (r.rollout.is_some() && !r.is_finished()))
}

/// Each environment that has deploy windows, by name.
async fn windows(
    store: &dyn Store,
) -> Result<std::collections::BTreeMap<String, crate::core::environments::Spec>, ControllerError> {
    match crate::environments::list(store).await {
        Ok(envs) => {
            Ok(envs.into_iter().filter(|e| !e.spec.windows.is_empty()).map(|e| (e.spec.name.clone(), e.spec)).collect())
        }
        Err(crate::environments::EnvironmentsError::Store(e)) => Err(e.into()),
        Err(e) => Err(ControllerError::Failed(e.to_string())),
    }
}

/// Plans and starts the rollouts whose service is free.
async fn start_ready(
    store: &dyn Store,
    d: &mut Driver,
    agents: &[AgentInfo],
    young: bool,
    now: u64,
) -> Result<(), ControllerError> {
    let rejects = crate::releases::load(store).await?;
    d.set_freezes(crate::freezes::load(store).await?, now);
    d.windows = windows(store).await?;
    for id in std::mem::take(&mut d.startable) {
        // A frozen environment takes no new release until it thaws.
        if d.wait_for_thaw(id, now) {
            continue;
        }
        // Nor does one whose `before_rollout` gates have not all opened.
        if d.wait_at_gates(id, now) {
            continue;
        }
        let Some(rec) = d.records.get(&id) else { continue };
        // A rejected release is installed by nothing.
        if let Some(r) = rejects.find(&rec.service, &rec.release.version, &rec.release.sha256).filter(|_| !rec.remove) {
            let why = r.refusal(&rec.release.version);
            warn!(rollout = id, %why, "rollout refused");
            d.begin(id, Err(why), now);
            continue;
        }
        // An automatic change never installs an older build than runs.
        if let Some(why) = d.downgrade(id) {
            warn!(rollout = id, %why, "rollout refused");
            d.begin(id, Err(why), now);
            continue;
        }
        // Its environment, then those its waves name.
        let mut envs = Vec::new();
        let mut missing = None;
        for name in rec.envs() {
            match crate::environments::get(store, name).await {
                Ok(env) => envs.push(env.spec),
                Err(crate::environments::EnvironmentsError::NotFound(name)) => {
                    missing = Some(format!(
                        "there is no environment {name}; define it with `drover env create {name} --selector \
                         KEY=VALUE`"
                    ));
                    break;
                }
                Err(crate::environments::EnvironmentsError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    missing = Some(e.to_string());
                    break;
                }
            }
        }
        let planned = match missing {
            Some(why) => Err(why),
            None => {
                let mut previous = BTreeMap::new();
                for env in &envs {
                    for (node, version) in
                        d.previous_not_rejected(&env.name, &rec.service, &rec.release.version, &rejects)
                    {
                        previous.entry(node).or_insert(version);
                    }
                }
                let mut nodes_of: Vec<Vec<crate::core::environments::Node>> = Vec::with_capacity(envs.len());
                for (i, env) in envs.iter().enumerate() {
                    let all = crate::core::environments::nodes(&env.selector, agents);
                    nodes_of.push(match &rec.select {
                        // The others are a deploy job's waves' environments.
                        _ if i > 0 => all,
                        // A removal goes over the nodes that serve the service.
                        None if rec.remove => {
                            let serving = d.serving(&rec.env, &rec.service);
                            all.into_iter().filter(|n| serving.contains(&n.name)).collect()
                        }
                        None => all,
                        Some(select) => {
                            let narrowed: Vec<AgentInfo> = agents
                                .iter()
                                .filter(|a| crate::core::environments::selects(&select.selector, &a.labels))
                                .cloned()
                                .collect();
                            let nodes = crate::core::environments::nodes(&env.selector, &narrowed);
                            crate::core::apps::pick(nodes, select.count, &previous)
                        }
                    });
                }
                let over: Vec<(&crate::core::environments::Spec, &[crate::core::environments::Node])> =
                    envs.iter().zip(&nodes_of).map(|(env, nodes)| (env, nodes.as_slice())).collect();
                let branch = rec.branch.as_deref();
                let planned =
                    crate::core::rollouts::plan_across(&rec.deploy, &rec.release.version, &over, branch, &previous);
                // A new leader's agents are still finding it: nodes that
                // are known but away may be back in a moment.
                if young
                    && !nodes_of[0].is_empty()
                    && matches!(planned, Err(crate::core::rollouts::PlanError::NoNodes { .. }))
                {
                    d.startable.insert(id);
                    continue;
                }
                match planned.map_err(|e| e.to_string()) {
                    // A fast track goes straight to its release on every node.
                    Ok(p) if rec.fast_track => {
                        let targets = p
                            .rollout
                            .nodes
                            .into_iter()
                            .map(|n| Target { node: n.name, rollback_to: n.rollback_to })
                            .collect();
                        Rollout::fast_track(p.rollout.spec.release, targets).map_err(|e| e.to_string())
                    }
                    Ok(p) => {
                        d.records.get_mut(&id).expect("listed").node_envs = p.node_envs;
                        Ok(p.rollout)
                    }
                    Err(why) => Err(why),
                }
            }
        };
        if let Err(why) = &planned {
            warn!(rollout = id, %why, "rollout refused");
        }
        d.begin(id, planned, now);
    }
    Ok(())
}

/// Sends every staged action whose node is connected; the rest wait for
/// the next round.
async fn send_actions(sched: &Handle, d: &mut Driver) {
    let pending: Vec<_> = d.unsent.iter().map(|(k, a)| (k.clone(), a.clone())).collect();
    for ((id, node), action) in pending {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = Event::Deploy { node: node.clone(), action: Box::new(action), reply };
        if sched.send(event).await.is_err() {
            return;
        }
        if let Ok(Ok(())) = rx.await {
            d.unsent.remove(&(id, node));
        }
    }
    d.probes.forget_abandoned();
    let probes: Vec<_> = d.probes.unsent.iter().map(|(k, (node, a))| (*k, node.clone(), a.clone())).collect();
    for (key, node, action) in probes {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if sched.send(Event::Deploy { node, action: Box::new(action), reply }).await.is_err() {
            return;
        }
        if let Ok(Ok(())) = rx.await {
            d.probes.unsent.remove(&key);
        }
    }
}
