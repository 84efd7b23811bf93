//! An attempt's log on the agent side: assigns byte offsets, applies the
//! cap, and keeps every chunk until the coordinator acknowledges it, so a
//! reconnect can resend exactly what was not stored. Chunks are resent
//! unchanged (same offset, same bytes), and the coordinator stores a chunk
//! under its offset, so a resend never duplicates a line.

use std::collections::VecDeque;

/// Appended once when a log reaches its cap.
pub fn truncation_marker(cap: u64) -> Vec<u8> {
    format!("\n[drover: log truncated at {cap} bytes; the rest of this job's output was discarded]\n").into_bytes()
}

#[derive(Debug)]
pub struct LogBuf {
    cap: u64,
    /// Bytes of output taken into the log so far (not counting the marker).
    taken: u64,
    /// Offset of the next chunk.
    next: u64,
    truncated: bool,
    unacked: VecDeque<(u64, Vec<u8>)>,
}

impl LogBuf {
    pub fn new(cap: u64) -> LogBuf {
        LogBuf { cap, taken: 0, next: 0, truncated: false, unacked: VecDeque::new() }
    }

    /// Takes output into the log and returns the chunk to send, if any.
    pub fn append(&mut self, data: &[u8]) -> Option<(u64, Vec<u8>)> {
        if self.truncated || data.is_empty() {
            return None;
        }
        let room = self.cap - self.taken;
        let mut chunk = if (data.len() as u64) <= room {
            data.to_vec()
        } else {
            self.truncated = true;
            let mut c = data[..room as usize].to_vec();
            c.extend_from_slice(&truncation_marker(self.cap));
            c
        };
        self.taken += (data.len() as u64).min(room);
        if chunk.is_empty() {
            return None;
        }
        let offset = self.next;
        self.next += chunk.len() as u64;
        self.unacked.push_back((offset, std::mem::take(&mut chunk)));
        self.unacked.back().cloned()
    }

    /// The coordinator stored everything before `upto`.
    pub fn ack(&mut self, upto: u64) {
        while self.unacked.front().is_some_and(|(off, c)| off + c.len() as u64 <= upto) {
            self.unacked.pop_front();
        }
    }

    pub fn unacked(&self) -> impl Iterator<Item = &(u64, Vec<u8>)> {
        self.unacked.iter()
    }

    /// Total length of the log so far.
    pub fn len(&self) -> u64 {
        self.next
    }

    pub fn is_empty(&self) -> bool {
        self.next == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_acks_and_resend() {
        let mut log = LogBuf::new(1 << 20);
        assert_eq!(log.append(b"abc"), Some((0, b"abc".to_vec())));
        assert_eq!(log.append(b"de"), Some((3, b"de".to_vec())));
        assert_eq!(log.append(b""), None);
        log.ack(3);
        assert_eq!(log.unacked().cloned().collect::<Vec<_>>(), vec![(3, b"de".to_vec())]);
        // A partial ack keeps the chunk: it is resent whole.
        log.ack(4);
        assert_eq!(log.unacked().count(), 1);
        log.ack(5);
        assert_eq!(log.unacked().count(), 0);
        assert_eq!(log.len(), 5);
    }

    #[test]
    fn cap_truncates_once_with_a_marker() {
        let mut log = LogBuf::new(4);
        assert_eq!(log.append(b"ab"), Some((0, b"ab".to_vec())));
        let (off, chunk) = log.append(b"cdef").unwrap();
        assert_eq!(off, 2);
        let mut expect = b"cd".to_vec();
        expect.extend_from_slice(&truncation_marker(4));
        assert_eq!(chunk, expect);
        assert_eq!(log.append(b"more"), None);
        assert_eq!(log.len(), 4 + truncation_marker(4).len() as u64);
    }

    #[test]
    fn cap_exactly_reached_then_overflow() {
        let mut log = LogBuf::new(2);
        assert_eq!(log.append(b"ab"), Some((0, b"ab".to_vec())));
        let (off, chunk) = log.append(b"c").unwrap();
        assert_eq!((off, chunk), (2, truncation_marker(2)));
        assert_eq!(log.append(b"d"), None);
    }
}
