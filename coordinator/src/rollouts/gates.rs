//! Gates at named points of a rollout (issue 17; the deploy's `gates:`,
//! `drover_pipeline::deploy::Gate`): before the rollout, before each step
//! after the first, and before promotion (once every node is healthy). A
//! point is passed once every gate written for it has opened, in the order
//! written; each gate asked is kept with the rollout as a [`GateRecord`],
//! with who or what opened or refused it.
//!
//! - **Before the rollout.** A rollout that may start waits, untouched,
//!   until its `before_rollout` gates open (`start_ready` asks
//!   [`Driver::wait_at_gates`]). A refusal ends it unstarted.
//! - **Before a step, a wave, promotion.** The verdict on a step, once its
//!   analysis passed and no freeze holds it, goes through the gates of the
//!   next point ([`Driver::through_gates`]: `before_step` when a step of
//!   the same wave follows, `before_wave` when the next wave's first does,
//!   `before_promotion` after the last). A refusal is the step's
//!   failing verdict: the rollout goes back, or pauses as `on_failure`
//!   says; resuming asks the refused gate again.
//! - **Who opens them.** An `approval` gate: one of its approvers, with
//!   `drover rollout approve ID [--gate NAME] [--comment TEXT]`, or `drover
//!   rollout reject ID --reason TEXT`. A `confirm` gate: the controller's
//!   task for it ([`confirm`]) POSTs the rollout to the webhook every
//!   interval until a 2xx opens it; none within its timeout refuses it. A
//!   new leader starts those tasks again from the records; the timeout
//!   counts from when the gate was first asked.

use std::time::Duration;

use drover_deploy::rollout::{Input, Verdict};
use drover_pipeline::deploy::{Gate, GateAt, GateKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::drive::Driver;

/// The most gate records a rollout keeps (the oldest decided go first).
pub const MAX_GATE_RECORDS: usize = 100;
/// How long one webhook call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    Waiting,
    Opened,
    Refused,
}

impl GateState {
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Waiting => "waiting",
            GateState::Opened => "opened",
            GateState::Refused => "refused",
        }
    }
}

/// One gate asked, as kept with the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    pub name: String,
    pub at: GateAt,
    /// The step whose verdict waits for it; none before the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub asked_ms: u64,
    pub state: GateState,
    /// Who or what opened or refused it: a certificate's name, or the
    /// webhook and its answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// The approver's comment, the refusal's reason, or the webhook's last
    /// answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default)]
    pub decided_ms: u64,
}

/// A webhook gate's answer, from its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub step: Option<u32>,
    /// Whether it opened (a 2xx), or timed out.
    pub opened: bool,
    /// What was answered last, in words.
    pub said: String,
}

/// How a point stands.
enum Point {
    Open,
    Waiting,
}

impl Driver {
    /// Whether rollout `id` waits at its `before_rollout` gates.
    pub(super) fn wait_at_gates(&mut self, id: u64, now_ms: u64) -> bool {
        matches!(self.ask(id, GateAt::BeforeRollout, None, now_ms), Point::Waiting)
    }

    /// Step `step` of rollout `id` passed its analysis and no freeze holds
    /// it: on through the gates of the next point, to a passing verdict.
    pub(super) fn through_gates(&mut self, id: u64, step: u32, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let at = match rec.rollout.as_ref() {
            Some(m) if step + 1 < m.steps() && m.wave_of(step + 1) != m.wave_of(step) => GateAt::BeforeWave,
            Some(m) if step + 1 < m.steps() => GateAt::BeforeStep,
            _ => GateAt::BeforePromotion,
        };
        if let Point::Open = self.ask(id, at, Some(step), now_ms) {
            self.apply(id, Input::Verdict { step, verdict: Verdict::Pass }, now_ms);
        }
    }

    /// Asks the gates of point `at` (before step `step`'s verdict) of
    /// rollout `id` in order: open when every one has opened; otherwise
    /// the first that has not is waited for (asked anew if it was refused).
    fn ask(&mut self, id: u64, at: GateAt, step: Option<u32>, now_ms: u64) -> Point {
        let Some(rec) = self.records.get_mut(&id) else { return Point::Open };
        if rec.fast_track {
            return Point::Open;
        }
        let gates: Vec<Gate> = rec.deploy.gates.iter().filter(|g| g.at == at).cloned().collect();
        for gate in gates {
            let last = rec.gates.iter().rev().find(|g| g.name == gate.name && g.step == step).map(|g| g.state);
            match last {
                Some(GateState::Opened) => continue,
                Some(GateState::Waiting) => return Point::Waiting,
                Some(GateState::Refused) | None => {
                    rec.gates.push(GateRecord {
                        name: gate.name.clone(),
                        at,
                        step,
                        asked_ms: now_ms,
                        state: GateState::Waiting,
                        by: String::new(),
                        comment: String::new(),
                        decided_ms: 0,
                    });
                    trim(&mut rec.gates);
                    let how = match &gate.kind {
                        GateKind::Approval { approvers } => format!(
                            "for one of {} to run `drover rollout approve {id} --gate {}`",
                            approvers.join(", "),
                            gate.name
                        ),
                        GateKind::Confirm { url, .. } => format!("for a 2xx answer from {url}"),
                    };
                    let message = format!("waiting at gate {} ({}) {how}", gate.name, at.as_str());
                    match rec.rollout.as_mut() {
                        Some(m) => m.message = message.clone(),
                        None => rec.message = message.clone(),
                    }
                    self.stage(id);
                    self.notify(id, crate::notifications::Kind::GateWaiting, message, now_ms);
                    return Point::Waiting;
                }
            }
        }
        Point::Open
    }

    /// `drover rollout approve|reject`: `by` opens (or refuses, `open`
    /// false) the gate rollout `id` waits at, which must be `gate` when
    /// one is named, an approval gate, and one `by` may decide. `text` is
    /// the comment or the reason.
    pub fn decide_gate(
        &mut self,
        id: u64,
        gate: Option<&str>,
        by: &str,
        open: bool,
        text: &str,
        now_ms: u64,
    ) -> Result<(), String> {
        let rec = self.records.get(&id).ok_or_else(|| format!("there is no rollout {id}"))?;
        let waiting = rec.gates.iter().rposition(|g| g.state == GateState::Waiting);
        let Some(at) = waiting else {
            return Err(format!("rollout {id} is not waiting at a gate"));
        };
        let record = &rec.gates[at];
        if let Some(name) = gate.filter(|name| *name != record.name) {
            return Err(format!("rollout {id} waits at gate {}, not {name}", record.name));
        }
        let spec = rec.deploy.gates.iter().find(|g| g.name == record.name);
        match spec.map(|g| &g.kind) {
            Some(GateKind::Approval { approvers }) if approvers.iter().any(|a| a == by) => {}
            Some(GateKind::Approval { approvers }) => {
                return Err(format!(
                    "{by} may not decide gate {} of rollout {id}: its approvers are {}",
                    record.name,
                    approvers.join(", ")
                ));
            }
            _ => {
                return Err(format!(
                    "gate {} of rollout {id} is a webhook's to open (`confirm:`), not a person's",
                    record.name
                ));
            }
        }
        if !open && text.trim().is_empty() {
            return Err("say why: --reason TEXT".into());
        }
        self.decided(id, at, open, by.to_owned(), text.trim().to_owned(), now_ms);
        Ok(())
    }

    /// A webhook gate's task answered: the gate it asks, if rollout `id`
    /// still waits at it, opens or is refused.
    pub fn gate_answered(&mut self, id: u64, answer: Answer, now_ms: u64) {
        let Some(rec) = self.records.get(&id).filter(|r| !r.is_finished()) else { return };
        let Some(at) = rec
            .gates
            .iter()
            .rposition(|g| g.state == GateState::Waiting && g.name == answer.name && g.step == answer.step)
        else {
            return;
        };
        let url = match rec.deploy.gates.iter().find(|g| g.name == answer.name).map(|g| &g.kind) {
            Some(GateKind::Confirm { url, .. }) => url.clone(),
            _ => return,
        };
        self.decided(id, at, answer.opened, format!("webhook {url}"), answer.said, now_ms);
    }

    /// Gate record `at` of rollout `id` is decided: the rollout goes on
    /// (through the point's next gate) or the refusal fails where it
    /// stands.
    fn decided(&mut self, id: u64, at: usize, open: bool, by: String, comment: String, now_ms: u64) {
        let rec = self.records.get_mut(&id).expect("exists");
        let g = &mut rec.gates[at];
        g.state = if open { GateState::Opened } else { GateState::Refused };
        g.by = by;
        g.comment = comment;
        g.decided_ms = now_ms;
        let g = g.clone();
        tracing::info!(rollout = id, gate = %g.name, state = g.state.as_str(), by = %g.by, "gate decided");
        self.stage(id);
        let said = match g.comment.as_str() {
            "" => format!("gate {} {} by {}", g.name, g.state.as_str(), g.by),
            comment => format!("gate {} {} by {}: {comment}", g.name, g.state.as_str(), g.by),
        };
        self.notify(id, crate::notifications::Kind::GateDecided, said, now_ms);
        match (open, g.step) {
            (true, None) => self.queue_or_start(id),
            (true, Some(step)) => self.through_gates(id, step, now_ms),
            (false, step) => {
                let why = match g.comment.as_str() {
                    "" => format!("gate {} was refused by {}", g.name, g.by),
                    said => format!("gate {} was refused by {}: {said}", g.name, g.by),
                };
                match step {
                    None => self.end_unstarted(id, why, now_ms),
                    Some(step) => {
                        self.apply(id, Input::Verdict { step, verdict: Verdict::Fail { reason: why } }, now_ms);
                    }
                }
            }
        }
    }
}

/// Drops the oldest decided records past [`MAX_GATE_RECORDS`].
fn trim(gates: &mut Vec<GateRecord>) {
    while gates.len() > MAX_GATE_RECORDS {
        match gates.iter().position(|g| g.state != GateState::Waiting) {
            Some(i) => drop(gates.remove(i)),
            None => break,
        }
    }
}

/// What a webhook gate is sent: the rollout and the gate, as JSON.
#[derive(Debug, Serialize)]
pub struct Call {
    pub rollout: u64,
    pub environment: String,
    pub service: String,
    pub version: String,
    pub sha256: String,
    pub commit: String,
    pub gate: String,
    pub at: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

/// Calls webhook gate `name` (`url`) of rollout `id` every `interval`
/// until it answers 2xx, or `deadline_ms` passes; sends the outcome to
/// `tx`. The controller aborts it once the gate is decided otherwise.
pub async fn confirm(
    id: u64,
    call: Call,
    url: String,
    interval: Duration,
    deadline_ms: u64,
    caller: super::measure::Caller,
    tx: mpsc::UnboundedSender<(u64, Answer)>,
) {
    let client = &caller.client;
    let (name, step) = (call.gate.clone(), call.step);
    if let Some(why) = caller.refused(&url) {
        let _ = tx.send((id, Answer { name, step, opened: false, said: why }));
        return;
    }
    let mut said = "not called yet".to_owned();
    loop {
        let now = drover_telemetry::trace::now_ms();
        if now >= deadline_ms {
            let said = format!("no 2xx answer from {url} in time; the last: {said}");
            let _ = tx.send((id, Answer { name, step, opened: false, said }));
            return;
        }
        let left = Duration::from_millis(deadline_ms - now);
        let body = serde_json::to_vec(&call).expect("a call serialises");
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(CALL_TIMEOUT.min(left))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                let said = format!("HTTP {}", resp.status().as_u16());
                let _ = tx.send((id, Answer { name, step, opened: true, said }));
                return;
            }
            Ok(resp) => said = format!("HTTP {}", resp.status()),
            Err(e) => said = format!("{e}"),
        }
        let now = drover_telemetry::trace::now_ms();
        let left = deadline_ms.saturating_sub(now);
        tokio::time::sleep(interval.min(Duration::from_millis(left))).await;
    }
}
