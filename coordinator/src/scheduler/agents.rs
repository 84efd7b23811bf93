//! What agents say, mapped onto runs: the fleet ([`crate::core::fleet`]) decides
//! about sessions, slots and leases and reports what becomes of each
//! attempt ([`AttemptEvent`]); here those reports become the run machine's
//! inputs, and the fleet's messages join the burst's outbox. Log chunks are
//! judged here too ([`logs::judge`]): their bytes belong to the attempt's
//! log, whoever owns the attempt. Synchronous: see `state.rs`.

use tracing::warn;

use super::state::State;
use crate::core::fleet::{AgentHello, AttemptEvent, AttemptId, FleetEffect, Now, ToAgent, stale_reason};
use crate::core::keys;
use crate::core::logs;
use crate::core::machine::{Input, Outcome};
use crate::metrics::METRICS;
use crate::records::encode;
use crate::segments;

impl State {
    /// A new session: refused at once when another live agent process holds
    /// the name, otherwise accepted at once (the Welcome that follows waits
    /// for the burst's commit) and reconciled by the fleet.
    pub(super) fn hello(&mut self, hello: AgentHello, now: Now) {
        let AgentHello {
            conn,
            name,
            labels,
            slots,
            running,
            draining,
            unready,
            caches,
            instance,
            peer,
            version,
            via,
            tx,
            reply,
        } = hello;
        let carried = !via.is_empty();
        let result =
            self.fleet.hello(conn, &name, labels, slots, &running, draining, unready, instance, peer, carried, tx, now);
        match result {
            Ok(fx) => {
                let _ = reply.send(Ok(()));
                self.warm.insert(name.clone(), caches.into_iter().collect());
                self.versions.insert(name.clone(), (version, via));
                self.on_fleet(fx, now, false);
            }
            Err(why) => {
                METRICS.agent_refusals.inc();
                let _ = reply.send(Err(why));
            }
        }
    }

    /// What the passing of time does: leases that lapsed end their
    /// attempts, and blocked jobs past their queue timeout fail.
    pub(super) fn tick(&mut self, now: Now) {
        self.expire_leases(now);
        self.expire_blocked(now);
    }

    /// Leases that lapsed by `now` end their attempts.
    pub(super) fn expire_leases(&mut self, now: Now) {
        let fx = self.fleet.expire(now.at);
        for _ in &fx {
            METRICS.lease_expiries.inc();
        }
        self.on_fleet(fx, now, false);
    }

    /// Carries out the fleet's effects in order. With `measure`, an
    /// acceptance is an agent's confirmation of an assignment, whose delay
    /// since the job became ready is the dispatch latency.
    pub(super) fn on_fleet(&mut self, fx: Vec<FleetEffect>, now: Now, measure: bool) {
        for effect in fx {
            self.fleet_effect(effect, now, measure);
        }
    }

    pub(super) fn fleet_effect(&mut self, effect: FleetEffect, now: Now, measure: bool) {
        match effect {
            FleetEffect::Send(agent, msg) => self.send_to(agent, msg),
            FleetEffect::Owner(event) => self.attempt_event(event, now, measure),
            FleetEffect::Resend(agent, id) => {
                if let Some(assignment) = self.assignment(id) {
                    self.send_to(agent, ToAgent::Assign(Box::new(assignment)));
                }
            }
            FleetEffect::PersistAgent(name, record) => {
                self.pending.insert(keys::agent(&name), encode(&record));
            }
            FleetEffect::Changed { connected } => {
                self.reasons_stale = true;
                if connected != 0 {
                    METRICS.agents_connected.add(connected);
                }
            }
            FleetEffect::Dispatch => self.dispatch_needed = true,
        }
    }

    /// What became of an attempt, as its run's machine takes it. Every
    /// attempt is a job's today; another owner would be told here.
    fn attempt_event(&mut self, event: AttemptEvent, now: Now, measure: bool) {
        let (id, input) = match event {
            AttemptEvent::Accepted(id) => {
                if measure && let Some(ready) = self.ready_at.remove(&(id.run, id.job.clone())) {
                    METRICS.dispatch_latency.observe_duration(now.at.saturating_duration_since(ready));
                }
                let input = Input::Accepted { job: id.job, attempt: id.attempt };
                (id.run, input)
            }
            AttemptEvent::Finished(id, outcome) => finished(id, outcome),
            AttemptEvent::Lost(id, reason) => finished(id, Outcome::Lost { reason }),
            AttemptEvent::NotStarted(id, reason) => finished(id, Outcome::NotStarted { reason }),
        };
        self.apply(id, input, now);
    }

    /// A log chunk: judged against where the attempt's log ends, its bytes
    /// staged for their segment file and acknowledged after the commit; a
    /// resend is acknowledged again; a bad chunk ends its attempt.
    pub(super) fn log(&mut self, conn: u64, name: String, id: AttemptId, offset: u64, data: Vec<u8>, now: Now) {
        if !self.fleet.is_current(&name, conn) {
            return;
        }
        if !self.fleet.owns(&name, &id) {
            self.send_to(name, ToAgent::Cancel { id, reason: stale_reason(), disown: true });
            return;
        }
        METRICS.log_bytes.add(data.len() as u64);
        let Some(&end) = self.log_ends.get(&id) else {
            // Every held attempt has its end, from its assignment or from
            // recovery. Not acknowledged: the agent sends it again.
            warn!(attempt = %id, "no known end for this attempt's log; the chunk waits for a resend");
            return;
        };
        let limit = self.config.log_cap.saturating_add(logs::MARKER_ROOM);
        match logs::judge(offset, data.len(), end, limit) {
            logs::Verdict::Append { keep, end } => {
                // Past the cap nothing more is stored, but the chunk is
                // acknowledged so the agent can let go of it. The bytes go
                // to the attempt's segment file and only their length and
                // checksum to the store; `commit` writes and syncs the file
                // before the store, and acknowledges after both. Chunks that
                // continue one taken earlier in the burst join it (up to
                // `segments::MAX_RECORD_BYTES`): a fast log then takes one
                // key per burst, not one per chunk.
                if keep > 0 {
                    let mut data = data;
                    data.truncate(keep);
                    let earlier = self
                        .log_writes
                        .iter_mut()
                        .rev()
                        .find(|w| w.run == id.run && w.attempt == id.attempt && w.job == id.job);
                    match earlier {
                        Some(w)
                            if w.offset + w.data.len() as u64 == offset
                                && w.data.len() + data.len() <= segments::MAX_RECORD_BYTES =>
                        {
                            w.data.extend_from_slice(&data)
                        }
                        _ => self.log_writes.push(segments::Write {
                            run: id.run,
                            job: id.job.clone(),
                            attempt: id.attempt,
                            offset,
                            data,
                        }),
                    }
                }
                self.log_ends.insert(id.clone(), end);
                self.send_to(name, ToAgent::LogAck { id, offset: end });
            }
            logs::Verdict::Resent { ack } => self.send_to(name, ToAgent::LogAck { id, offset: ack }),
            logs::Verdict::Refuse(why) => {
                METRICS.agent_refusals.inc();
                let fx = self.fleet.refuse(&name, id, &why);
                self.on_fleet(fx, now, false);
            }
        }
    }
}

fn finished(id: AttemptId, outcome: Outcome) -> (u64, Input) {
    (id.run, Input::Finished { job: id.job, attempt: id.attempt, outcome })
}
