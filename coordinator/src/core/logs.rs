//! The rules for an attempt's log chunks as they arrive from an agent: what
//! is stored, what is a harmless resend, and what is refused.
//!
//! An agent is untrusted. Its chunks must be at most
//! [`drover_proto::MAX_LOG_CHUNK_BYTES`], contiguous (each starts where the
//! stored log ends, or repeats a chunk already stored, as a reconnect does),
//! and the bytes stored are capped by the log cap plus room for the agent's
//! truncation marker, counted in bytes stored rather than by offset. A chunk
//! that breaks a rule ends its own attempt (as lost, with the reason) and
//! nothing else: the leader's term and every other event go on.
//!
//! Pure: the scheduler keeps each running attempt's stored length and asks
//! [`judge`] what to do with each chunk.

use drover_proto::MAX_LOG_CHUNK_BYTES;

/// Room past the log cap for the truncation marker the agent appends once
/// the cap is reached (about 100 bytes).
pub const MARKER_ROOM: u64 = 1024;

/// What to do with one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New bytes at the end of the log: store the first `keep` bytes (fewer
    /// than the chunk past the cap, possibly none), and the log now ends at
    /// `end`. Acknowledge up to `end`.
    Append { keep: usize, end: u64 },
    /// Bytes already taken (a resend after a reconnect): acknowledge up to
    /// `ack`, store nothing.
    Resent { ack: u64 },
    /// A protocol violation: end the attempt with this reason.
    Refuse(String),
}

/// Judges a chunk of `len` bytes at `offset` for a log that so far ends at
/// `end` (every byte before it taken), where at most `limit` bytes may be
/// stored (the cap plus [`MARKER_ROOM`]).
pub fn judge(offset: u64, len: usize, end: u64, limit: u64) -> Verdict {
    if len > MAX_LOG_CHUNK_BYTES {
        return Verdict::Refuse(format!(
            "sent a log chunk of {len} bytes, over the limit of {MAX_LOG_CHUNK_BYTES} bytes per chunk"
        ));
    }
    let Some(chunk_end) = offset.checked_add(len as u64) else {
        return Verdict::Refuse(format!("sent a log chunk at offset {offset}, past the largest possible log"));
    };
    if chunk_end <= end {
        return Verdict::Resent { ack: chunk_end };
    }
    if offset < end {
        return Verdict::Refuse(format!(
            "sent a log chunk at offset {offset} that overlaps the {end} bytes already taken and differs from them \
             in length; chunks must be resent unchanged"
        ));
    }
    if offset > end {
        return Verdict::Refuse(format!(
            "sent a log chunk at offset {offset}, but the log so far ends at byte {end}; chunks must be contiguous"
        ));
    }
    let keep = limit.saturating_sub(offset).min(len as u64) as usize;
    Verdict::Append { keep, end: chunk_end }
}

/// Where a log whose stored chunks are `(offset, length)` ends: the end of
/// the furthest chunk. A new leader works this out once for each attempt it
/// inherited, from the chunks in the store.
pub fn end_of(chunks: impl IntoIterator<Item = (u64, usize)>) -> u64 {
    chunks.into_iter().map(|(offset, len)| offset.saturating_add(len as u64)).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = MAX_LOG_CHUNK_BYTES;

    #[test]
    fn chunks_are_judged_by_size_position_and_cap() {
        let refuse = |s: &str| Verdict::Refuse(s.to_string());
        // (what, offset, len, end, limit, verdict or the start of the refusal)
        let cases: &[(&str, u64, usize, u64, u64, Verdict)] = &[
            ("first chunk", 0, 10, 0, 100, Verdict::Append { keep: 10, end: 10 }),
            ("next chunk", 10, 5, 10, 100, Verdict::Append { keep: 5, end: 15 }),
            ("the largest chunk", 0, MAX, 0, u64::MAX, Verdict::Append { keep: MAX, end: MAX as u64 }),
            ("resent, whole", 0, 10, 15, 100, Verdict::Resent { ack: 10 }),
            ("resent, the last one", 10, 5, 15, 100, Verdict::Resent { ack: 15 }),
            ("empty chunk at the end", 15, 0, 15, 100, Verdict::Resent { ack: 15 }),
            ("straddles the cap: the rest is dropped", 95, 10, 95, 100, Verdict::Append { keep: 5, end: 105 }),
            ("past the cap: nothing kept", 105, 10, 105, 100, Verdict::Append { keep: 0, end: 115 }),
            ("too big", 0, MAX + 1, 0, u64::MAX, refuse("sent a log chunk of 131073 bytes, over the limit")),
            ("2 MB", 0, 2_000_000, 0, u64::MAX, refuse("sent a log chunk of 2000000 bytes")),
            ("gap", 20, 5, 15, 100, refuse("sent a log chunk at offset 20, but the log so far ends at byte 15")),
            ("overlap", 12, 5, 15, 100, refuse("sent a log chunk at offset 12 that overlaps")),
            ("offset overflow", u64::MAX, 1, 0, 100, refuse("sent a log chunk at offset 18446744073709551615, past")),
        ];
        for (what, offset, len, end, limit, want) in cases {
            let got = judge(*offset, *len, *end, *limit);
            match (&got, want) {
                (Verdict::Refuse(got), Verdict::Refuse(want)) => assert!(got.starts_with(want), "{what}: {got}"),
                _ => assert_eq!(&got, want, "{what}"),
            }
        }
    }

    #[test]
    fn sixty_overlapping_megabytes_store_nothing_past_the_first_refusal() {
        // The attack that stored 58 MB against a 16 MiB cap: 1 MB chunks at
        // offsets 0..59. Every one is refused for its size; with legal sizes
        // the second is refused as overlapping.
        assert!(matches!(judge(0, 1_000_000, 0, 16 << 20), Verdict::Refuse(_)));
        assert_eq!(judge(0, 100_000, 0, 16 << 20), Verdict::Append { keep: 100_000, end: 100_000 });
        assert!(matches!(judge(1, 100_000, 100_000, 16 << 20), Verdict::Refuse(_)));
    }

    #[test]
    fn the_end_is_the_furthest_chunk() {
        assert_eq!(end_of([]), 0);
        assert_eq!(end_of([(0, 10), (10, 5)]), 15);
        assert_eq!(end_of([(10, 5), (0, 10)]), 15);
    }
}
