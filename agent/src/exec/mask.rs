//! Masking secrets in step output before it leaves the agent.
//!
//! A job may receive secret values as environment variables. Every occurrence
//! of a secret in a step's output, and of its common encodings, is replaced by
//! [`MASK`] (`***`) before the output is sent to the coordinator.
//!
//! # Design
//!
//! [`Patterns`] compiles, once per attempt, every [`forms`] of every secret into
//! one Aho-Corasick automaton (leftmost-longest, so when two forms start at the
//! same byte the longer one wins). The forms are the value itself, each line of
//! a multi-line value, and for each of those bases: base64 and base64url at the
//! three byte alignments (so an encoding inside a larger base64 stream is
//! caught), double base64 (CVE-2025-30066, the tj-actions attack), lower- and
//! upper-case hex, URL encoding and JSON string escaping.
//!
//! No pattern contains `\n` or `\r`, which keeps streaming simple: a
//! [`Masker`] (one per output stream) sends out at once everything up to the
//! last line break of what it has, and holds back at most `longest - 1` bytes of
//! an unfinished line, the only bytes that could still be the start of a match.
//! Line-oriented output is therefore never delayed, and the result does not
//! depend on how the output was chunked.
//!
//! # Limits
//!
//! This is a backstop, not a guarantee. A step can always leak a secret it can
//! read. Not masked: forms shorter than [`MIN_MASK_LEN`] bytes (masking them
//! would garble ordinary output), a secret whose bytes are split by a line
//! break or interleaved with other bytes (printed character by character with
//! separators, reversed, ...), encodings other than the ones above
//! (compression, encryption, base32, ...), and base64 that is wrapped into lines
//! (`base64` wraps at 76 columns) where the encoding of a secret crosses a
//! wrap. A secret split between stdout and stderr is not seen either: each
//! stream is masked on its own. Short secrets mask short encodings, which may
//! now and then hide an innocent run of base64 or hex as well.

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind, Span};
use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// Forms shorter than this are not masked: they would garble ordinary output.
pub const MIN_MASK_LEN: usize = 4;

/// What every occurrence of a form is replaced with.
pub const MASK: &[u8] = b"***";

/// Bytes that URL encoding leaves alone: ASCII alphanumerics and `-._~`.
const URL_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The strings to hide, compiled once per attempt and shared by its output readers.
pub struct Patterns {
    /// Every form of every value, leftmost-longest.
    automaton: AhoCorasick,
    /// How many distinct forms there are.
    count: usize,
    /// Length of the longest form: a masker holds back at most this minus one bytes.
    longest: usize,
}

impl Patterns {
    /// Compiles every form of every value. None when there is nothing to mask
    /// (no values, or all values too short).
    ///
    /// # Panics
    ///
    /// If the automaton cannot be built, which takes patterns of gigabytes.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Arc<Patterns>> {
        let mut all = Vec::new();
        for value in values {
            for form in forms(value) {
                add(&mut all, form);
            }
        }
        let longest = all.iter().map(Vec::len).max()?;
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&all)
            .expect("an automaton of secret values is far below aho-corasick's size limits");
        Some(Arc::new(Patterns { automaton, count: all.len(), longest }))
    }

    /// The matches in `haystack`, in order, none overlapping.
    fn find(&self, haystack: &[u8]) -> impl Iterator<Item = Span> {
        self.automaton.find_iter(haystack).map(|m| m.span())
    }
}

impl fmt::Debug for Patterns {
    /// Never prints the patterns: they are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patterns").field("count", &self.count).field("longest", &self.longest).finish()
    }
}

/// One output stream's masker (stdout and stderr each get one).
pub struct Masker {
    /// The attempt's patterns.
    patterns: Arc<Patterns>,
    /// The end of an unfinished line that may still be the start of a match, raw.
    pending: Vec<u8>,
}

impl Masker {
    /// A masker with nothing held back.
    pub fn new(patterns: Arc<Patterns>) -> Masker {
        Masker { patterns, pending: Vec::new() }
    }

    /// Takes a chunk of output; returns the masked bytes that may go out now
    /// (possibly empty). Everything up to the last line break goes out, and of
    /// an unfinished line all but its last `longest - 1` bytes.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let len = self.pending.len();
        // No pattern crosses a line break, and a match starting before
        // `len - (longest - 1)` ends inside what we have: the matches starting
        // before `bound` are the ones the whole stream would have.
        let after_break = self.pending.iter().rposition(|&c| c == b'\n' || c == b'\r').map_or(0, |i| i + 1);
        let mut bound = after_break.max(len.saturating_sub(self.patterns.longest - 1));
        if bound == 0 {
            return Vec::new();
        }
        let spans: Vec<Span> = self.patterns.find(&self.pending).take_while(|s| s.start < bound).collect();
        if let Some(last) = spans.last()
            && last.end > bound
        {
            bound = last.end;
        }
        let out = replace(&self.pending[..bound], &spans);
        self.pending.drain(..bound);
        out
    }

    /// The stream ended: returns whatever was held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let spans: Vec<Span> = self.patterns.find(&self.pending).collect();
        let out = replace(&self.pending, &spans);
        self.pending.clear();
        out
    }
}

impl fmt::Debug for Masker {
    /// Never prints the patterns nor what is held back (it may be the start of a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker").field("patterns", &self.patterns).field("pending", &self.pending.len()).finish()
    }
}

/// `haystack` with each span (in order, inside it, not overlapping) replaced by [`MASK`].
fn replace(haystack: &[u8], spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(&haystack[at..span.start]);
        out.extend_from_slice(MASK);
        at = span.end;
    }
    out.extend_from_slice(&haystack[at..]);
    out
}

/// Every form of `value` that is masked (for tests and docs), without duplicates.
///
/// The bases are the value and, when it spans lines, each of its lines
/// (split at `\n` and `\r`); bases shorter than [`MIN_MASK_LEN`] are skipped.
/// Each base gives itself, its base64 and base64url at the three alignments,
/// the three alignments of its double base64, its hex in both cases, its URL
/// encoding (and, with spaces, the `+` variant) and its JSON escaping. Forms
/// that are too short, or contain a line break, are dropped.
pub fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut bases = vec![value];
    if value.iter().any(|&c| c == b'\n' || c == b'\r') {
        bases.extend(value.split(|&c| c == b'\n' || c == b'\r'));
    }
    let mut out = Vec::new();
    for base in bases.into_iter().filter(|b| b.len() >= MIN_MASK_LEN) {
        add(&mut out, base.to_vec());
        aligned_base64(&mut out, &STANDARD_NO_PAD, base);
        aligned_base64(&mut out, &URL_SAFE_NO_PAD, base);
        aligned_base64(&mut out, &STANDARD_NO_PAD, STANDARD.encode(base).as_bytes());
        add(&mut out, hex(base, b"0123456789abcdef"));
        add(&mut out, hex(base, b"0123456789ABCDEF"));
        let url = percent_encode(base, URL_UNRESERVED).to_string();
        if base.contains(&b' ') {
            add(&mut out, url.replace("%20", "+").into_bytes());
        }
        add(&mut out, url.into_bytes());
        if let Ok(text) = std::str::from_utf8(base) {
            let json = serde_json::to_string(text).expect("a string always serializes");
            add(&mut out, json.as_bytes()[1..json.len() - 1].to_vec());
        }
    }
    out
}

/// Adds `form` to `forms` unless it is too short, has a line break or is there already.
fn add(forms: &mut Vec<Vec<u8>>, form: Vec<u8>) {
    if form.len() >= MIN_MASK_LEN && !form.iter().any(|&c| c == b'\n' || c == b'\r') && !forms.contains(&form) {
        forms.push(form);
    }
}

/// Adds the encodings of `base` by `engine` (unpadded) at the three byte
/// alignments: for `k` leading bytes, only the characters that depend on
/// `base` alone, so that `base` is found at any offset of a larger encoding.
fn aligned_base64(forms: &mut Vec<Vec<u8>>, engine: &GeneralPurpose, base: &[u8]) {
    for k in 0..3 {
        let mut input = vec![0u8; k];
        input.extend_from_slice(base);
        let encoded = engine.encode(&input);
        let (start, end) = ((8 * k).div_ceil(6), 8 * (k + base.len()) / 6);
        if start < end {
            add(forms, encoded.as_bytes()[start..end].to_vec());
        }
    }
}

/// `bytes` in hex, with the given digits.
fn hex(bytes: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    bytes.iter().flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]]).collect()
}

#[cfg(test)]
mod tests;
