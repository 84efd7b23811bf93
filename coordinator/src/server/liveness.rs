//! How the coordinator and its agents tell each other alive: the heartbeat
//! periods (busy and idle), how long an agent waits for an acknowledgement,
//! and the gRPC server's HTTP/2 keepalive, all worked out from the lease
//! and election TTLs ([`liveness`]).

use std::time::Duration;

use crate::core::fleet::MAX_SCALED_IDLE;

/// How often agents heartbeat, and how long they wait for an
/// acknowledgement before taking this coordinator for frozen: every quarter
/// of the lease TTL (to renew leases) or of the election TTL, whichever is
/// shorter, and half the election TTL (at least 500 ms). An agent then
/// notices a frozen leader (SIGSTOP, a hung host) within three quarters of
/// an election TTL, before a follower can have taken over, instead of
/// waiting for TCP or HTTP/2 keepalives. The edge answers heartbeats
/// without the scheduler, so a busy or stalled scheduler is not taken for
/// frozen.
///
/// An agent that holds no attempt has no lease to renew: it heartbeats
/// once per lease TTL (never more often than every fourth heartbeat), or
/// more rarely in a big fleet (`core::fleet::idle_period`: the fleet's idle
/// heartbeats stay near 100 a second, each session's period at most
/// `core::fleet::MAX_SCALED_IDLE`, 30 s), and notices a frozen leader when
/// one of those goes unacknowledged. (One a follower carries is told to
/// heartbeat three times rarer still, `core::fleet::CARRIED_IDLE_FACTOR`:
/// its follower watches the leader.) Every message costs the coordinator
/// about the same (tens of µs here, most of it TCP and TLS), be it a
/// heartbeat or an HTTP/2 PING, so an idle agent sends only the one: the
/// agents' keepalives (`drover_client::Transport::AGENT`) and the
/// coordinator's (`keepalive`, half as long again as the longest idle
/// period a direct session may be told, at most [`MAX_KEEPALIVE`]) are
/// longer than the idle period, and a connection that carries heartbeats
/// is never pinged. The coordinator's keepalives close connections to
/// agents that froze or vanished (within 50 s at the default lease TTL).
pub(super) fn liveness(lease_ttl: Duration, election_ttl: Duration) -> Liveness {
    let heartbeat = (lease_ttl / 4).min(election_ttl / 4).max(Duration::from_millis(100));
    let idle_heartbeat = lease_ttl.max(heartbeat * 4);
    let longest_idle = idle_heartbeat.max(MAX_SCALED_IDLE);
    Liveness {
        heartbeat,
        idle_heartbeat,
        ack_timeout: (election_ttl / 2).max(Duration::from_millis(500)),
        keepalive: (longest_idle * 3 / 2).min(MAX_KEEPALIVE),
    }
}

/// The longest the coordinator waits on a silent agent connection before it
/// pings it (see [`liveness`]).
const MAX_KEEPALIVE: Duration = Duration::from_secs(90);

/// What [`liveness`] works out: the scheduler's `heartbeat`,
/// `idle_heartbeat` and `ack_timeout`, and the gRPC server's HTTP/2
/// keepalive interval.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Liveness {
    pub(super) heartbeat: Duration,
    pub(super) idle_heartbeat: Duration,
    pub(super) ack_timeout: Duration,
    pub(super) keepalive: Duration,
}

#[cfg(test)]
mod tests {
    use super::{Liveness, liveness};
    use std::time::Duration;

    #[test]
    fn agents_heartbeat_often_enough_to_notice_a_frozen_leader_within_the_election() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (lease TTL, election TTL, heartbeat, idle heartbeat, ack timeout,
        // the coordinator's keepalive)
        // The keepalive waits for the longest idle period a big fleet's
        // sessions are told (30 s), and half as long again.
        let cases = [
            (s(10), s(2), ms(500), s(10), s(1), s(45)),
            (s(3), s(2), ms(500), s(3), s(1), s(45)),
            (s(10), s(10), ms(2500), s(10), s(5), s(45)),
            (s(1), s(5), ms(250), s(1), ms(2500), s(45)),
            (s(1), ms(100), ms(100), s(1), ms(500), s(45)),
            // Never more often than every fourth heartbeat.
            (ms(200), s(2), ms(100), ms(400), s(1), s(45)),
            // A lease TTL over the scaled ceiling is the idle period.
            (s(40), s(2), ms(500), s(40), s(1), s(60)),
            // Long leases: the keepalive has a ceiling.
            (s(80), s(2), ms(500), s(80), s(1), s(90)),
        ];
        for (lease, election, heartbeat, idle_heartbeat, ack_timeout, keepalive) in cases {
            let want = Liveness { heartbeat, idle_heartbeat, ack_timeout, keepalive };
            assert_eq!(liveness(lease, election), want, "lease {lease:?}, election {election:?}");
        }
    }
}
