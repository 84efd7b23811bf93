//! The fleet's synchronous core: what it knows of each agent and of each
//! attempt an agent holds, and how every agent message and the passing of
//! time change that. Each call returns the [`FleetEffect`]s its driver
//! carries out, in order; see the module above for the contract with an
//! attempt's owner.
//!
//! Invariant: an attempt is in `held` exactly while its owner counts it as
//! occupying a slot on that agent, from [`Fleet::assign`] (or
//! [`Fleet::adopt`] at recovery) until [`Fleet::release`] or its lease
//! lapses. A report about an attempt that is not held by the reporting agent
//! is stale: it changes nothing, and the agent is told to let it go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    AgentInfo, AgentRecord, Assignment, AttemptEvent, AttemptId, FleetEffect, Now, ToAgent, fence_after, idle_period,
    lease_grace, session_conflict,
};
use crate::core::dispatch::{AgentSlots, FreeIndex};
use crate::core::machine::Outcome;

/// What the fleet needs of the scheduler's configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How long an attempt survives without a heartbeat from its agent.
    pub lease_ttl: Duration,
    /// How often agents heartbeat while they hold an attempt.
    pub heartbeat: Duration,
    /// How often agents heartbeat while they hold none (see
    /// `scheduler::Config::idle_heartbeat`).
    pub idle_heartbeat: Duration,
    /// How long an agent waits for a heartbeat's acknowledgement.
    pub ack_timeout: Duration,
    /// This leader's epoch, sent to agents, which refuse older ones.
    pub epoch: u64,
}

#[derive(Debug, Default)]
pub(super) struct AgentEntry {
    /// The live connection: its id and the sender of its outgoing stream.
    pub(super) conn: Option<(u64, mpsc::Sender<ToAgent>)>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) slots: u32,
    pub(super) in_use: u32,
    pub(super) last_seen_ms: u64,
    /// The live session said the agent is draining. Cleared by a new
    /// session's Hello.
    pub(super) draining: bool,
    /// The live session's agent process (its instance id) and address.
    pub(super) instance: String,
    pub(super) peer: String,
    /// Why the agent takes no new work for now (its work directory is low
    /// on space), or empty. Cleared with the session.
    pub(super) unready: String,
    /// How often the live session was told to heartbeat while idle (longer
    /// for a carried one): how long its silence means nothing.
    pub(super) idle_heartbeat: Duration,
    /// Whether a follower carries the live session.
    pub(super) carried: bool,
}

impl AgentEntry {
    fn record(&self) -> AgentRecord {
        AgentRecord { labels: self.labels.clone(), slots: self.slots, last_seen_ms: self.last_seen_ms }
    }
}

/// Where a held attempt stands, as far as the agent is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Sent; the agent has not confirmed it. A reconnect without it resends
    /// it, and a lapsed lease means it never started.
    Assigned,
    /// The agent confirmed it.
    Running,
    /// The owner asked the agent to kill it, for this reason; a reconnect
    /// that still holds it hears the cancel again.
    Cancelling(String),
}

#[derive(Debug)]
struct Held {
    agent: String,
    deadline: Instant,
    phase: Phase,
}

/// The agents and the attempts they hold. See the module docs.
pub struct Fleet {
    config: FleetConfig,
    agents: BTreeMap<String, AgentEntry>,
    held: HashMap<AttemptId, Held>,
    /// The connected, open agents with a free slot, for dispatch: every
    /// call that changes an agent's session, slots, use, draining or
    /// readiness updates it ([`Fleet::reindex`]).
    index: FreeIndex,
    /// How many agents have a live session (for [`idle_period`]).
    connected: usize,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Fleet {
        Fleet { config, agents: BTreeMap::new(), held: HashMap::new(), index: FreeIndex::new(), connected: 0 }
    }

    /// Brings agent `name`'s place in the index in line with its entry.
    fn reindex(&mut self, name: &str) {
        let empty = BTreeMap::new();
        let (labels, free) = match self.agents.get(name) {
            Some(a) if a.conn.is_some() && !a.draining && a.unready.is_empty() => {
                (&a.labels, a.slots.saturating_sub(a.in_use))
            }
            Some(a) => (&a.labels, 0),
            None => (&empty, 0),
        };
        self.index.set(name, labels, free);
    }

    /// Lends dispatch the index of the agents that can take a job; a pass
    /// takes slots in it as it plans, and gives it back with
    /// [`Fleet::return_index`].
    pub fn lend_index(&mut self) -> FreeIndex {
        std::mem::take(&mut self.index)
    }

    /// Takes back the index lent to a pass and brings the agents it took
    /// slots of (`touched`) in line with their entries again: a slot it
    /// planned but did not assign is free.
    pub fn return_index<'n>(&mut self, index: FreeIndex, touched: impl IntoIterator<Item = &'n str>) {
        self.index = index;
        for name in touched {
            self.reindex(name);
        }
    }

    /// Whether the index matches the agents' entries (for tests).
    #[cfg(test)]
    pub fn index_is_current(&self) -> bool {
        self.index == FreeIndex::of(&self.slots())
    }

    /// An agent known from its stored record (a new leader starts with
    /// those), not connected.
    pub fn restore(&mut self, name: String, record: AgentRecord) {
        let entry = AgentEntry {
            labels: record.labels,
            slots: record.slots,
            last_seen_ms: record.last_seen_ms,
            ..AgentEntry::default()
        };
        self.agents.insert(name.clone(), entry);
        self.reindex(&name);
    }

    /// An attempt the store says `agent` holds, inherited from another term,
    /// with a lease until `deadline`.
    pub fn adopt(&mut self, agent: String, id: AttemptId, phase: Phase, deadline: Instant) {
        self.agents.entry(agent.clone()).or_default().in_use += 1;
        self.reindex(&agent);
        self.held.insert(id, Held { agent, deadline, phase });
    }

    /// Whether `conn` is the agent's live session: events from an older
    /// session of the same agent are ignored.
    pub fn is_current(&self, name: &str, conn: u64) -> bool {
        self.agents.get(name).and_then(|a| a.conn.as_ref()).is_some_and(|(c, _)| *c == conn)
    }

    /// Whether agent `name` holds the attempt `id`.
    pub fn owns(&self, name: &str, id: &AttemptId) -> bool {
        self.held.get(id).is_some_and(|h| h.agent == name)
    }

    /// A new session. Refused, with the reason, when another live agent
    /// process holds the name ([`session_conflict`]); otherwise it replaces
    /// any older session of the agent, is welcomed, and is reconciled with
    /// what the agent says it holds (`running`): those still its own are
    /// renewed and confirmed to their owners, the rest cancelled (disowned);
    /// assignments lost in transit are resent, and attempts it no longer
    /// has are lost. It is told its idle heartbeat period, which grows with
    /// the fleet and for a session a follower `carried` ([`idle_period`]).
    #[allow(clippy::too_many_arguments)]
    pub fn hello(
        &mut self,
        conn: u64,
        name: &str,
        labels: BTreeMap<String, String>,
        slots: u32,
        running: &[AttemptId],
        draining: bool,
        unready: String,
        instance: String,
        peer: String,
        carried: bool,
        tx: mpsc::Sender<ToAgent>,
        now: Now,
    ) -> Result<Vec<FleetEffect>, String> {
        let ttl = self.config.lease_ttl;
        let entry = self.agents.entry(name.to_string()).or_default();
        // An idle agent is heard from once per idle heartbeat (the one its
        // live session was told): silence longer than that and a lease TTL
        // means it is gone.
        let quiet = ttl + entry.idle_heartbeat.max(self.config.idle_heartbeat);
        if let Err(why) = session_conflict(entry, name, &instance, &peer, now.ms, quiet) {
            warn!(agent = %name, %peer, reason = %why, "refused a second session under one agent name");
            return Err(why);
        }
        info!(agent = %name, slots, ?labels, running = running.len(), draining, %peer, "agent connected");
        entry.instance = instance;
        entry.peer = peer;
        if !unready.is_empty() {
            warn!(agent = %name, reason = %unready, "agent not ready: no new work for it");
        }
        entry.unready = unready;
        // A new connection replaces the old one; dropping the old sender
        // ends the old stream.
        let newly = entry.conn.is_none();
        self.connected += usize::from(newly);
        entry.conn = Some((conn, tx));
        entry.labels = labels;
        entry.slots = slots;
        entry.draining = draining;
        entry.last_seen_ms = now.ms;
        entry.carried = carried;
        entry.idle_heartbeat = idle_period(self.config.idle_heartbeat, self.connected, carried);
        let mut fx = vec![
            FleetEffect::PersistAgent(name.to_string(), entry.record()),
            FleetEffect::Changed { connected: if newly { 1 } else { 0 } },
        ];
        // Through the outbox like everything else: after the commit, and
        // ahead of whatever this session is sent next.
        let welcome = ToAgent::Welcome {
            heartbeat: self.config.heartbeat,
            idle_heartbeat: entry.idle_heartbeat,
            lease_ttl: ttl,
            epoch: self.config.epoch,
            ack_timeout: self.config.ack_timeout,
            fence: fence_after(ttl),
        };
        fx.push(FleetEffect::Send(name.to_string(), welcome));

        for id in running {
            if !self.renew_or_reject(name, id, now.at, &mut fx) {
                continue;
            }
            let held = self.held.get_mut(id).expect("renewed");
            match &held.phase {
                // The cancel may have been sent while the agent was away.
                Phase::Cancelling(reason) => {
                    let msg = ToAgent::Cancel { id: id.clone(), reason: reason.clone(), disown: false };
                    fx.push(FleetEffect::Send(name.to_string(), msg));
                }
                Phase::Assigned => held.phase = Phase::Running,
                Phase::Running => {}
            }
            fx.push(FleetEffect::Owner(AttemptEvent::Accepted(id.clone())));
        }
        // What we believe the agent holds but it does not: an assignment that
        // was lost in transit is sent again; a running attempt is lost.
        let listed: HashSet<&AttemptId> = running.iter().collect();
        let mut missing: Vec<&AttemptId> =
            self.held.iter().filter(|(id, h)| h.agent == name && !listed.contains(id)).map(|(id, _)| id).collect();
        missing.sort();
        let missing: Vec<AttemptId> = missing.into_iter().cloned().collect();
        for attempt in missing {
            let held = self.held.get_mut(&attempt).expect("listed above");
            if held.phase == Phase::Assigned {
                held.deadline = now.at + ttl;
                fx.push(FleetEffect::Resend(name.to_string(), attempt));
            } else {
                let reason = format!("agent {name} reconnected without it");
                fx.push(FleetEffect::Owner(AttemptEvent::Lost(attempt, reason)));
            }
        }
        self.reindex(name);
        fx.push(FleetEffect::Dispatch);
        Ok(fx)
    }

    /// A session ended. Its agent stays known (and listed) as away.
    pub fn gone(&mut self, conn: u64, name: &str, now: Now) -> Vec<FleetEffect> {
        let Some(a) = self.agents.get_mut(name).filter(|a| a.conn.as_ref().is_some_and(|(c, _)| *c == conn)) else {
            return Vec::new();
        };
        info!(agent = %name, "agent disconnected");
        a.conn = None;
        self.connected -= 1;
        a.last_seen_ms = now.ms;
        let fx = vec![FleetEffect::PersistAgent(name.to_string(), a.record()), FleetEffect::Changed { connected: -1 }];
        self.reindex(name);
        fx
    }

    /// A session closed because its name was put on the deny list: the
    /// agent is away, and every attempt it held is lost now (not at its
    /// lease's end), so its jobs retry elsewhere where `retries` allow. A
    /// revoked agent's reports would be refused anyway.
    pub fn revoked(&mut self, conn: u64, name: &str, reason: &str, now: Now) -> Vec<FleetEffect> {
        let mut fx = self.gone(conn, name, now);
        if fx.is_empty() {
            return fx;
        }
        let mut held: Vec<AttemptId> =
            self.held.iter().filter(|(_, h)| h.agent == name).map(|(id, _)| id.clone()).collect();
        held.sort();
        for id in held {
            self.held.remove(&id);
            warn!(attempt = %id, agent = %name, "the attempt of a revoked agent is lost");
            fx.push(FleetEffect::Owner(AttemptEvent::Lost(id, format!("agent {name} was revoked: {reason}"))));
        }
        if let Some(a) = self.agents.get_mut(name) {
            a.in_use = 0;
        }
        self.reindex(name);
        fx
    }

    /// A heartbeat, received by the edge at `received`: leases run from
    /// there, never from when the scheduler got round to it.
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &mut self,
        conn: u64,
        name: &str,
        running: &[AttemptId],
        draining: bool,
        unready: String,
        received: Instant,
        now: Now,
    ) -> Vec<FleetEffect> {
        let mut fx = Vec::new();
        if !self.is_current(name, conn) {
            return fx;
        }
        let mut period = None;
        if let Some(a) = self.agents.get_mut(name) {
            a.last_seen_ms = now.ms;
            // The fleet grew since the session was told its idle period:
            // a longer one, never a shorter (the quiet window of a name,
            // [`session_conflict`], counts from what the session was told,
            // and a shorter period would reach the agent only after it).
            let idle = idle_period(self.config.idle_heartbeat, self.connected, a.carried);
            if idle > a.idle_heartbeat {
                a.idle_heartbeat = idle;
                period = Some(idle);
            }
            if a.draining != draining {
                info!(agent = %name, draining, "agent draining: no new work for it");
                a.draining = draining;
                fx.push(FleetEffect::Changed { connected: 0 });
            }
            if a.unready != unready {
                if unready.is_empty() {
                    info!(agent = %name, "agent ready again");
                    fx.push(FleetEffect::Dispatch);
                } else {
                    warn!(agent = %name, reason = %unready, "agent not ready: no new work for it");
                }
                a.unready = unready;
                fx.push(FleetEffect::Changed { connected: 0 });
            }
        }
        // Most heartbeats change nothing dispatch looks at.
        if !fx.is_empty() {
            self.reindex(name);
        }
        if let Some(idle_heartbeat) = period {
            fx.push(FleetEffect::Send(name.to_string(), ToAgent::IdlePeriod { idle_heartbeat }));
        }
        for id in running {
            self.renew_or_reject(name, id, received, &mut fx);
        }
        fx
    }

    /// The agent confirmed an assignment.
    pub fn accepted(&mut self, conn: u64, name: &str, id: AttemptId, now: Now) -> Vec<FleetEffect> {
        let mut fx = Vec::new();
        if !self.is_current(name, conn) {
            return fx;
        }
        if self.renew_or_reject(name, &id, now.at, &mut fx) {
            let held = self.held.get_mut(&id).expect("renewed");
            if held.phase == Phase::Assigned {
                held.phase = Phase::Running;
            }
            fx.push(FleetEffect::Owner(AttemptEvent::Accepted(id)));
        }
        fx
    }

    /// The agent reported how an attempt ended. A stale report is refused
    /// (`accepted: false`), so the agent stops resending it.
    pub fn result(
        &mut self,
        conn: u64,
        name: &str,
        id: AttemptId,
        outcome: Outcome,
        message: &str,
    ) -> Vec<FleetEffect> {
        if !self.is_current(name, conn) {
            return Vec::new();
        }
        if !self.owns(name, &id) {
            debug!(agent = %name, attempt = %id, "refused a stale result");
            return vec![FleetEffect::Send(name.to_string(), ToAgent::ResultAck { id, accepted: false })];
        }
        if !message.is_empty() {
            debug!(attempt = %id, %message, "attempt finished");
        }
        vec![
            FleetEffect::Owner(AttemptEvent::Finished(id.clone(), outcome)),
            FleetEffect::Send(name.to_string(), ToAgent::ResultAck { id, accepted: true }),
        ]
    }

    /// Ends an attempt whose agent broke the protocol for it (a bad log
    /// chunk): lost, with the reason, and the agent is told to kill it and
    /// forget it. One bad message costs its own attempt, nothing else.
    pub fn refuse(&mut self, agent: &str, attempt: AttemptId, why: &str) -> Vec<FleetEffect> {
        let reason = format!("agent {agent} {why}");
        warn!(attempt = %attempt, %agent, %reason, "refused a message from an agent; its attempt ends");
        let cancel = ToAgent::Cancel { id: attempt.clone(), reason: reason.clone(), disown: true };
        vec![FleetEffect::Send(agent.to_string(), cancel), FleetEffect::Owner(AttemptEvent::Lost(attempt, reason))]
    }

    /// Takes the attempts whose lease has lapsed by `now` from their agents
    /// (their slots are free again) and tells their owners, oldest attempt
    /// id first.
    pub fn expire(&mut self, now: Instant) -> Vec<FleetEffect> {
        let mut expired: Vec<AttemptId> =
            self.held.iter().filter(|(_, h)| h.deadline <= now).map(|(id, _)| id.clone()).collect();
        if expired.is_empty() {
            return Vec::new();
        }
        expired.sort();
        let ttl = self.config.lease_ttl.as_secs_f64();
        let mut fx = Vec::with_capacity(expired.len());
        for id in expired {
            let held = self.held.remove(&id).expect("listed above");
            if let Some(a) = self.agents.get_mut(&held.agent) {
                a.in_use = a.in_use.saturating_sub(1);
            }
            self.reindex(&held.agent);
            let agent = held.agent;
            warn!(attempt = %id, %agent, "attempt lease expired");
            fx.push(FleetEffect::Owner(if held.phase == Phase::Assigned {
                AttemptEvent::NotStarted(id, format!("agent {agent} did not confirm it within {ttl:.0}s"))
            } else {
                AttemptEvent::Lost(id, format!("agent {agent} stopped renewing its lease for {ttl:.0}s"))
            }));
        }
        fx
    }

    /// Hands `agent` an attempt: it takes a slot, and its lease runs for a
    /// TTL from `now` (the agent confirms it long before). Returns the
    /// message to send.
    pub fn assign(&mut self, agent: String, assignment: Assignment, now: Instant) -> FleetEffect {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.in_use += 1;
        }
        self.reindex(&agent);
        let held = Held { agent: agent.clone(), deadline: now + self.config.lease_ttl, phase: Phase::Assigned };
        self.held.insert(assignment.id.clone(), held);
        FleetEffect::Send(agent, ToAgent::Assign(Box::new(assignment)))
    }

    /// Asks `agent` to kill an attempt it holds, for `reason`; it stays held
    /// until its result comes (or its lease lapses).
    pub fn cancel(&mut self, agent: String, id: &AttemptId, reason: &str) -> FleetEffect {
        if let Some(held) = self.held.get_mut(id) {
            held.phase = Phase::Cancelling(reason.to_string());
        }
        FleetEffect::Send(agent, ToAgent::Cancel { id: id.clone(), reason: reason.into(), disown: false })
    }

    /// The owner is done with an attempt: its slot is free.
    pub fn release(&mut self, id: &AttemptId) {
        if let Some(held) = self.held.remove(id) {
            if let Some(a) = self.agents.get_mut(&held.agent) {
                a.in_use = a.in_use.saturating_sub(1);
            }
            self.reindex(&held.agent);
        }
    }

    /// Adds `stall` to every lease: time the coordinator lost (a slow store
    /// or disk) is nobody's fault.
    pub fn extend(&mut self, stall: Duration) {
        for held in self.held.values_mut() {
            held.deadline += stall;
        }
    }

    /// The connected agents as dispatch sees them, in name order.
    pub fn slots(&self) -> Vec<AgentSlots<'_>> {
        self.agents
            .iter()
            .filter(|(_, a)| a.conn.is_some())
            .map(|(name, a)| AgentSlots {
                name,
                labels: &a.labels,
                free: a.slots.saturating_sub(a.in_use),
                draining: a.draining,
                unready: &a.unready,
                caches: None,
            })
            .collect()
    }

    /// Whether `agent` has a live session.
    pub fn is_connected(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| a.conn.is_some())
    }

    /// The attempts `agent` holds.
    pub fn held_by<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a AttemptId> + 'a {
        self.held.iter().filter(move |(_, h)| h.agent == agent).map(|(id, _)| id)
    }

    /// Every agent `drover agents` lists: connected, or known from a record.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.agents
            .iter()
            .filter(|(_, a)| a.slots > 0 || a.conn.is_some())
            .map(|(name, a)| AgentInfo {
                name: name.clone(),
                labels: a.labels.clone(),
                slots: a.slots,
                in_use: a.in_use,
                connected: a.conn.is_some(),
                last_seen_ms: a.last_seen_ms,
                draining: a.conn.is_some() && a.draining,
                unready: if a.conn.is_some() { a.unready.clone() } else { String::new() },
                version: String::new(),
                via: String::new(),
            })
            .collect()
    }

    /// Hands a message to the agent's live session, if it has one. Called
    /// only after the burst that decided it is committed.
    pub fn deliver(&self, agent: &str, msg: ToAgent) {
        let Some((_, tx)) = self.agents.get(agent).and_then(|a| a.conn.as_ref()) else { return };
        // A full outgoing buffer means the agent stopped reading; its lease
        // will tell. Never block the scheduler on one slow agent.
        if let Err(e) = tx.try_send(msg) {
            warn!(%agent, error = %e, "could not send to agent");
        }
    }

    /// Renews the lease of an attempt the agent holds, counting from `from`,
    /// or tells the agent to kill it when it is no longer the agent's.
    /// Whether the agent holds it.
    fn renew_or_reject(&mut self, name: &str, id: &AttemptId, from: Instant, fx: &mut Vec<FleetEffect>) -> bool {
        let deadline = from + self.config.lease_ttl + lease_grace(self.config.lease_ttl);
        match self.held.get_mut(id) {
            Some(held) if held.agent == name => {
                held.deadline = held.deadline.max(deadline);
                true
            }
            _ => {
                let cancel = ToAgent::Cancel { id: id.clone(), reason: super::stale_reason(), disown: true };
                fx.push(FleetEffect::Send(name.to_string(), cancel));
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
