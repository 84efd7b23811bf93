//! A session's heartbeats: their sequence numbers, when each was sent and
//! what it listed, until the coordinator acknowledges it. An
//! acknowledgement tells which heartbeat's sending the fences of the
//! attempts it listed now count from; the oldest one unacknowledged tells
//! when the coordinator is to be taken for frozen.

use std::collections::VecDeque;

/// A session's heartbeats: when each was sent and what it listed, until
/// the coordinator has acknowledged it and renewed (or passed over) it.
#[derive(Debug, Default)]
pub(super) struct Heartbeats {
    /// The last sequence number used; the first heartbeat is 1.
    seq: u64,
    /// (seq, sent at, the attempts it listed), oldest first.
    sent: VecDeque<(u64, tokio::time::Instant, Vec<String>)>,
    /// The highest sequence number acknowledged.
    acked: u64,
}

/// The most heartbeats remembered: with a coordinator that acknowledges
/// none of them the agent gives up on it long before this many.
const MAX_REMEMBERED_BEATS: usize = 256;

impl Heartbeats {
    /// Records a heartbeat about to be sent; returns its sequence number.
    pub(super) fn sent(&mut self, running: Vec<String>, now: tokio::time::Instant) -> u64 {
        self.seq += 1;
        self.sent.push_back((self.seq, now, running));
        while self.sent.len() > MAX_REMEMBERED_BEATS {
            self.sent.pop_front();
        }
        self.seq
    }

    /// Takes an acknowledgement of `seq`, saying the leases listed by
    /// `renewed_seq` were renewed: returns when that one was sent and what
    /// it listed, if it is still remembered and no later one has been.
    pub(super) fn acked(&mut self, seq: u64, renewed_seq: u64) -> Option<(tokio::time::Instant, Vec<String>)> {
        self.acked = self.acked.max(seq.min(self.seq));
        // Heartbeats before the renewed one can no longer renew anything.
        while self.sent.front().is_some_and(|(s, _, _)| *s < renewed_seq) {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some((s, at, ids)) if *s == renewed_seq => Some((*at, ids.clone())),
            _ => None,
        }
    }

    /// When the oldest heartbeat not yet acknowledged was sent.
    pub(super) fn unacked_since(&self) -> Option<tokio::time::Instant> {
        self.sent.iter().find(|(s, _, _)| *s > self.acked).map(|(_, at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn acknowledgements_renew_what_the_renewed_heartbeat_listed_and_tell_a_frozen_coordinator() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut beats = Heartbeats::default();
        assert_eq!(beats.unacked_since(), None, "nothing sent, nothing to wait for");
        assert_eq!(beats.sent(ids(&["a"]), t0), 1);
        assert_eq!(beats.sent(ids(&["a", "b"]), t0 + ms(1000)), 2);
        assert_eq!(beats.unacked_since(), Some(t0), "the oldest unacknowledged");
        // Heartbeat 1 acknowledged and renewed.
        assert_eq!(beats.acked(1, 1), Some((t0, ids(&["a"]))));
        assert_eq!(beats.unacked_since(), Some(t0 + ms(1000)));
        // Heartbeat 2 acknowledged, but the coordinator renewed only up to 1
        // (2 said nothing new): the fence still counts from heartbeat 1.
        assert_eq!(beats.acked(2, 1), Some((t0, ids(&["a"]))));
        assert_eq!(beats.unacked_since(), None);
        assert_eq!(beats.sent(ids(&["a", "b"]), t0 + ms(2000)), 3);
        assert_eq!(beats.acked(3, 3), Some((t0 + ms(2000), ids(&["a", "b"]))));
        // An acknowledgement of something never sent renews nothing.
        assert_eq!(beats.acked(9, 9), None);
        assert_eq!(beats.acked, 3, "never beyond what was sent");
        // A coordinator that acknowledges nothing: memory stays bounded.
        for i in 0..1000 {
            beats.sent(ids(&["a"]), t0 + ms(3000 + i));
        }
        assert_eq!(beats.sent.len(), MAX_REMEMBERED_BEATS);
        assert_eq!(beats.unacked_since(), Some(t0 + ms(3000 + 1000 - MAX_REMEMBERED_BEATS as u64)));
    }
}
