//! Which coordinator a client tries next, and how it reads a follower's
//! refusal. Every coordinator but the leader answers leader-only calls (and
//! agent sessions) with `Unavailable` and `drover-not-leader` metadata,
//! naming the leader in `drover-leader` when it knows it ([`follower`]):
//! a client goes there at once; without a name an election is under way,
//! and it tries again shortly.
//!
//! [`Targets`] is the choice itself: the leader a follower named, else the
//! configured URLs in turn, passing over one that seemed frozen a moment
//! ago (a suspect: followers keep naming a frozen leader until its election
//! lease lapses, and following them there would only hang). [`Backoff`]
//! spaces the tries, jittered so that many clients do not all come back at
//! the same instant.
//!
//! Pure but for [`jitter`]'s reading of the clock: `now` is an argument.

use std::time::Duration;

use drover_proto::metadata;
use tokio::time::Instant;

/// What a follower's refusal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follower {
    /// The leader's URL: go there at once.
    Leader(String),
    /// Nobody leads at the moment: an election is under way.
    Election,
}

/// Whether `status` is a follower's refusal, and what it says; None for any
/// other failure.
pub fn follower(status: &tonic::Status) -> Option<Follower> {
    let meta = status.metadata();
    if let Some(leader) = meta.get(metadata::LEADER).and_then(|v| v.to_str().ok()) {
        return Some(Follower::Leader(leader.to_string()));
    }
    meta.contains_key(metadata::NOT_LEADER).then_some(Follower::Election)
}

/// What a refusal from the coordinator at `url` (an agent's session)
/// says: as [`follower`], but a follower that carried the session and asks
/// the agent back (`drover-come-back`) names `url` itself, whatever URL it
/// goes by, so the agent reopens the session over the connection it has.
pub fn follower_at(url: &str, status: &tonic::Status) -> Option<Follower> {
    match status.metadata().contains_key(metadata::COME_BACK) {
        true => Some(Follower::Leader(url.to_string())),
        false => follower(status),
    }
}

/// Where among `n` places `key` falls (FNV-1a of its bytes, modulo `n`):
/// the same key always lands at the same place, and many keys spread
/// evenly. 0 when `n` is 0.
pub fn spread_index(key: &str, n: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash.checked_rem(n as u64).unwrap_or(0) as usize
}

/// The coordinators a client knows and which one it tries next.
#[derive(Debug, Clone)]
pub struct Targets {
    urls: Vec<String>,
    /// Index into `urls` of the next one to try.
    next: usize,
    /// The leader's URL, when a follower named it: tried next, once.
    leader: Option<String>,
    /// A coordinator that seemed frozen, and until when it is passed over.
    suspect: Option<(String, Instant)>,
}

impl Targets {
    /// None when `urls` is empty.
    pub fn new(urls: Vec<String>) -> Option<Targets> {
        (!urls.is_empty()).then_some(Targets { urls, next: 0, leader: None, suspect: None })
    }

    /// As [`Targets::new`], but starting at a place in `urls` that `key`
    /// picks (FNV-1a), so that agents, each by its name, spread over the
    /// coordinators and stay there: a follower carries its agents'
    /// sessions to the leader.
    pub fn spread(urls: Vec<String>, key: &str) -> Option<Targets> {
        let mut targets = Targets::new(urls)?;
        targets.next = spread_index(key, targets.urls.len());
        Some(targets)
    }

    /// The coordinators, as configured.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A follower named the leader: it is the next target.
    pub fn redirect(&mut self, leader: String) {
        self.leader = Some(leader);
    }

    /// Whether the next target is a leader a follower named.
    pub fn redirected(&self) -> bool {
        self.leader.is_some()
    }

    /// Passes over `url` until `until` (it acknowledged nothing in time).
    pub fn suspect(&mut self, url: String, until: Instant) {
        self.suspect = Some((url, until));
    }

    /// Whether `url` is passed over at `now`.
    pub fn is_suspect(&self, url: &str, now: Instant) -> bool {
        self.suspect.as_ref().is_some_and(|(s, until)| s == url && *until > now)
    }

    /// The URL to try next: the leader a follower named, else the next
    /// configured one in turn, skipping a suspect while another is left.
    pub fn next(&mut self, now: Instant) -> String {
        if let Some(url) = self.leader.take() {
            return url;
        }
        for _ in 1..self.urls.len() {
            if !self.is_suspect(&self.urls[self.next % self.urls.len()], now) {
                break;
            }
            self.next += 1;
        }
        self.next_in_turn()
    }

    /// The configured URL whose turn it is, without moving on: for calls
    /// that any coordinator answers, which stay where they succeed.
    pub fn in_turn(&self) -> &str {
        &self.urls[self.next % self.urls.len()]
    }

    /// The next configured URL in turn, whoever leads, and moves on.
    pub fn next_in_turn(&mut self) -> String {
        let url = self.urls[self.next % self.urls.len()].clone();
        self.next += 1;
        url
    }
}

/// Waits between tries that double from a floor up to a ceiling, jittered.
#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    wait: Duration,
}

impl Backoff {
    pub fn new(floor: Duration) -> Backoff {
        Backoff { floor, wait: floor }
    }

    /// Back to the floor: the next wait is short.
    pub fn reset(&mut self) {
        self.wait = self.floor;
    }

    /// The wait before the next try (at most `ceiling`, jittered); the one
    /// after is twice as long, up to `ceiling`.
    pub fn next(&mut self, ceiling: Duration) -> Duration {
        self.wait = self.wait.min(ceiling);
        let wait = jitter(self.wait);
        self.wait = (self.wait * 2).min(ceiling);
        wait
    }
}

/// Spreads the retries of many clients over ±25% of the wait, so a
/// restarted coordinator is not hit by all of them at the same instant.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    jitter_by(d, nanos)
}

/// `d` scaled by 0.75 to 1.25, by `noise`.
fn jitter_by(d: Duration, noise: u32) -> Duration {
    d.mul_f64(0.75 + f64::from(noise % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn followers_are_read_from_the_metadata() {
        let refusal = |leader: Option<&str>, not_leader: bool| {
            let mut s = tonic::Status::unavailable("not the leader");
            if let Some(l) = leader {
                s.metadata_mut().insert(metadata::LEADER, l.parse().unwrap());
            }
            if not_leader {
                s.metadata_mut().insert(metadata::NOT_LEADER, "1".parse().unwrap());
            }
            s
        };
        let cases = [
            (refusal(Some("https://l:1"), true), Some(Follower::Leader("https://l:1".into()))),
            (refusal(Some("https://l:1"), false), Some(Follower::Leader("https://l:1".into()))),
            (refusal(None, true), Some(Follower::Election)),
            (refusal(None, false), None),
            (tonic::Status::internal("boom"), None),
        ];
        for (status, want) in cases {
            assert_eq!(follower_at("https://here:1", &status), want, "{status:?}");
            assert_eq!(follower(&status), want, "{status:?}");
        }
        // A come-back names the coordinator dialled, not the URL it gives.
        let mut back = refusal(Some("https://f:1"), true);
        back.metadata_mut().insert(metadata::COME_BACK, "1".parse().unwrap());
        assert_eq!(follower_at("https://here:1", &back), Some(Follower::Leader("https://here:1".into())));
    }

    #[test]
    fn the_next_target_is_the_named_leader_then_the_urls_in_turn_passing_over_a_suspect() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        struct Case {
            what: &'static str,
            urls: &'static [&'static str],
            leader: Option<&'static str>,
            suspect: Option<(&'static str, Duration)>,
            /// When the tries are made, after t0.
            at: Duration,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                what: "in turn",
                urls: &["a", "b", "c"],
                leader: None,
                suspect: None,
                at: s(0),
                want: &["a", "b", "c", "a"],
            },
            Case {
                what: "the named leader once, then in turn",
                urls: &["a", "b"],
                leader: Some("l"),
                suspect: None,
                at: s(0),
                want: &["l", "a", "b"],
            },
            Case {
                what: "a suspect is passed over",
                urls: &["a", "b", "c"],
                leader: None,
                suspect: Some(("a", s(5))),
                at: s(0),
                want: &["b", "c", "b"],
            },
            Case {
                what: "once its time is up it is tried again",
                urls: &["a", "b"],
                leader: None,
                suspect: Some(("a", s(5))),
                at: s(5),
                want: &["a", "b", "a"],
            },
            Case {
                what: "a lone suspect is still tried",
                urls: &["a"],
                leader: None,
                suspect: Some(("a", s(5))),
                at: s(0),
                want: &["a", "a"],
            },
            Case {
                what: "a named leader is followed even if suspect",
                urls: &["a", "b"],
                leader: Some("a"),
                suspect: Some(("a", s(5))),
                at: s(0),
                want: &["a", "b", "b"],
            },
        ];
        for case in cases {
            let mut targets = Targets::new(urls(case.urls)).unwrap();
            if let Some(l) = case.leader {
                targets.redirect(l.to_string());
                assert!(targets.redirected());
            }
            if let Some((url, until)) = case.suspect {
                targets.suspect(url.to_string(), t0 + until);
            }
            let got: Vec<String> = case.want.iter().map(|_| targets.next(t0 + case.at)).collect();
            assert_eq!(targets.in_turn(), targets.clone().next_in_turn(), "{}", case.what);
            assert_eq!(got, urls(case.want), "{}", case.what);
            assert!(!targets.redirected(), "{}", case.what);
        }
        assert!(Targets::new(Vec::new()).is_none());
    }

    #[test]
    fn agents_spread_over_the_coordinators_by_name_and_go_on_in_turn() {
        let three = urls(&["a", "b", "c"]);
        let first = |name: &str| Targets::spread(three.clone(), name).unwrap().next(Instant::now());
        // The same name starts at the same place every time.
        assert_eq!(first("agent-7"), first("agent-7"));
        // Three hundred names start at every coordinator, about evenly.
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..300 {
            *counts.entry(first(&format!("agent-{i}"))).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|n| (70..=130).contains(n)), "{counts:?}");
        // From there, in turn.
        let mut t = Targets::spread(three.clone(), "agent-7").unwrap();
        let start = three.iter().position(|u| *u == t.in_turn()).unwrap();
        let got: Vec<String> = (0..4).map(|_| t.next(Instant::now())).collect();
        let want: Vec<String> = (0..4).map(|i| three[(start + i) % 3].clone()).collect();
        assert_eq!(got, want);
        assert!(Targets::spread(Vec::new(), "a").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_within_the_jitter() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100));
        let ceilings = [ms(1000), ms(1000), ms(1000), ms(1000), ms(1000), ms(5000), ms(1000)];
        let bases = [100, 200, 400, 800, 1000, 1000, 1000];
        for (ceiling, base) in ceilings.iter().zip(bases) {
            let wait = b.next(*ceiling);
            assert!(wait >= ms(base * 3 / 4) && wait <= ms(base * 5 / 4), "{wait:?} for {base}ms");
        }
        b.reset();
        assert!(b.next(ms(1000)) <= ms(125));
        assert_eq!(jitter_by(ms(1000), 0), ms(750));
        assert_eq!(jitter_by(ms(1000), 999), ms(1249) + Duration::from_micros(500));
        assert_eq!(jitter_by(ms(1000), 1500), ms(1000));
    }
}
