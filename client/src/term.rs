//! Job output made safe for a terminal.
//!
//! A job's log is whatever its steps printed, and a terminal obeys escape
//! sequences in it: a step could clear the user's screen, set the window
//! title, or write the clipboard with OSC 52. [`Sanitizer`] lets colours
//! through and shows everything else the way `cat -v` does, so the bytes
//! stay readable but the terminal no longer acts on them:
//!
//! | in the log | shown as |
//! |---|---|
//! | printable text, UTF-8 | itself |
//! | `\n` `\r` `\t` backspace | themselves (line endings, progress bars, overstrike) |
//! | SGR: `ESC [` digits `;` `:` `m` (colours, bold) | itself |
//! | ESC | `^[`, then the rest of the sequence as text: OSC 52 is `^[]52;c;...^G`, clear screen `^[[2J` |
//! | other C0 controls (BEL, SO, ...) | caret form: `^G`, `^N`; DEL is `^?` |
//! | C1 controls (U+0080 to U+009F) | `<U+009B>` |
//! | bytes that are not UTF-8 | U+FFFD |
//!
//! Neutralising the ESC is enough: the printable bytes of an OSC, DCS, APC,
//! PM or SOS string do nothing once their introducer is gone, so they are
//! shown as they are. Only SGR sequences are held back until their final
//! byte, to decide whether they may pass.
//!
//! Log chunks arrive cut at arbitrary bytes, so the sanitiser is a
//! streaming state machine: a sequence or a UTF-8 character cut in two is
//! finished with the next chunk. `drover logs --raw` (and `run --follow
//! --raw`) skip it and print the bytes as stored. The rule is the same
//! whether stdout is a terminal or not, so what a user sees and what lands
//! in a file (which will be `cat` to a terminal later) agree.
//!
//! [`field`] is the stricter rule for one line of text the coordinator
//! sent (a name, an audit entry's detail): every control character is shown,
//! colours and line breaks too.
//!
//! Two places apply the rule, so it lives here, in the crate both link:
//! the CLI (`drover logs`, `run --follow`, every table cell it prints, through
//! `drover-ctl`'s `term`, a re-export of this module) and the coordinator's
//! web UI, which runs a job's log through [`Sanitizer`] before turning its
//! colours into styled lines for the browser, so that a log shows the same
//! text in a terminal and in a browser.

/// The longest SGR sequence let through; a longer "SGR" is shown as text,
/// which bounds what the sanitiser holds back.
const MAX_SGR: usize = 64;

/// See the module docs. Feed chunks with [`Sanitizer::push`]; call
/// [`Sanitizer::finish`] at the end of a stream (or before starting an
/// unrelated one) to flush what was held back.
#[derive(Debug, Default)]
pub struct Sanitizer {
    /// Bytes held back: an escape sequence that may turn out to be SGR
    /// (starting with ESC), or an unfinished UTF-8 character.
    held: Vec<u8>,
    /// How many bytes the UTF-8 character in `held` needs in all; 0 when
    /// `held` is an escape sequence or empty.
    utf8_len: usize,
}

impl Sanitizer {
    pub fn new() -> Sanitizer {
        Sanitizer::default()
    }

    /// Sanitises `input`, appending to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    /// Flushes what is held back: an unfinished escape sequence is shown as
    /// text, an unfinished UTF-8 character as U+FFFD.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.utf8_len > 0 {
            out.extend_from_slice("\u{fffd}".as_bytes());
        } else {
            show(&self.held, out);
        }
        self.held.clear();
        self.utf8_len = 0;
    }

    /// Sanitises a whole text at once (a rollout's hook log, tests).
    pub fn all(input: &[u8]) -> Vec<u8> {
        let mut s = Sanitizer::new();
        let mut out = Vec::new();
        s.push(input, &mut out);
        s.finish(&mut out);
        out
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.utf8_len > 0 {
            if b & 0xc0 == 0x80 {
                self.held.push(b);
                if self.held.len() == self.utf8_len {
                    self.utf8_len = 0;
                    let held = std::mem::take(&mut self.held);
                    char_bytes(&held, out);
                }
                return;
            }
            // Cut short: the lead byte and what followed are not UTF-8.
            out.extend_from_slice("\u{fffd}".as_bytes());
            self.held.clear();
            self.utf8_len = 0;
        } else if !self.held.is_empty() {
            // Inside ESC ...: held is ESC, or ESC [ and SGR parameters.
            let in_csi = self.held.len() >= 2;
            match b {
                b'[' if !in_csi => {
                    self.held.push(b);
                    return;
                }
                b'0'..=b'9' | b';' | b':' if in_csi && self.held.len() < MAX_SGR => {
                    self.held.push(b);
                    return;
                }
                b'm' if in_csi => {
                    out.extend_from_slice(&self.held);
                    out.push(b);
                    self.held.clear();
                    return;
                }
                _ => {
                    // Not SGR: show what was held as text, and this byte
                    // as any other (it may start something new).
                    show(&self.held, out);
                    self.held.clear();
                }
            }
        }
        match b {
            0x1b => self.held.push(b),
            b'\n' | b'\r' | b'\t' | 0x08 => out.push(b),
            0x00..=0x1f | 0x7f => show(&[b], out),
            0x20..=0x7e => out.push(b),
            0xc2..=0xdf => self.start_utf8(b, 2),
            0xe0..=0xef => self.start_utf8(b, 3),
            0xf0..=0xf4 => self.start_utf8(b, 4),
            // A continuation byte with no lead, or a byte UTF-8 never uses.
            _ => out.extend_from_slice("\u{fffd}".as_bytes()),
        }
    }

    fn start_utf8(&mut self, lead: u8, len: usize) {
        self.held.push(lead);
        self.utf8_len = len;
    }
}

/// One line of text the coordinator sent (a name, an address, an audit
/// entry's detail), for a table cell or a message: stricter than
/// [`Sanitizer`], since nothing in it may act on the terminal or break the
/// line, not even a colour or a line break. Every control character is
/// shown as text: C0 and DEL in caret form (`^[`, `^J`, `^?`), C1 as
/// `<U+009B>`.
pub fn field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("<U+{:04X}>", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A complete multi-byte sequence: the character itself, `<U+00XX>` for a
/// C1 control, U+FFFD when it is not valid UTF-8 (overlong, a surrogate,
/// past U+10FFFF).
fn char_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let c = s.chars().next().expect("one character");
            if ('\u{80}'..='\u{9f}').contains(&c) {
                out.extend_from_slice(format!("<U+{:04X}>", c as u32).as_bytes());
            } else {
                out.extend_from_slice(bytes);
            }
        }
        Err(_) => out.extend_from_slice("\u{fffd}".as_bytes()),
    }
}

/// ASCII bytes shown as text: controls in caret form (`^[`, `^G`, `^?`).
fn show(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            0x00..=0x1f => out.extend_from_slice(&[b'^', b + 0x40]),
            0x7f => out.extend_from_slice(b"^?"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(input: &[u8]) -> String {
        String::from_utf8(Sanitizer::all(input)).expect("the output is UTF-8")
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain text\n", "plain text\n"),
            (b"tab\there\r\nback\x08space", "tab\there\r\nback\x08space"),
            // SGR passes: reset, colours, 256 and true colour, colons.
            (b"\x1b[31mred\x1b[0m", "\x1b[31mred\x1b[0m"),
            (b"\x1b[m\x1b[1;38;5;208mx\x1b[38:2::1:2:3m", "\x1b[m\x1b[1;38;5;208mx\x1b[38:2::1:2:3m"),
            // Screen and cursor control is shown.
            (b"\x1b[2J\x1b[H", "^[[2J^[[H"),
            (b"\x1b[?25l\x1b[?1049h", "^[[?25l^[[?1049h"),
            (b"\x1b[6n", "^[[6n"),
            (b"\x1b[3 q", "^[[3 q"),
            // OSC 52 (clipboard), OSC 0 (title), BEL and ST terminated.
            (b"\x1b]52;c;aGk=\x07", "^[]52;c;aGk=^G"),
            (b"\x1b]0;pwned\x1b\\after", "^[]0;pwned^[\\after"),
            (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "^[]8;;http://x^[\\link^[]8;;^[\\"),
            // DCS, APC, PM, SOS, and two-byte escapes.
            (b"\x1bPq#0\x1b\\", "^[Pq#0^[\\"),
            (b"\x1b_G;x\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\", "^[_G;x^[\\^[^pm^[\\^[Xsos^[\\"),
            (b"\x1bc\x1b7\x1b8\x1b(0", "^[c^[7^[8^[(0"),
            // A lone ESC, at the end or before a newline; ESC ESC.
            (b"a\x1b", "a^["),
            (b"\x1b\n", "^[\n"),
            (b"\x1b\x1b[1m", "^[\x1b[1m"),
            // An SGR cut by a control is shown up to it.
            (b"\x1b[31\nx", "^[[31\nx"),
            (b"\x1b[31\x1b[32m", "^[[31\x1b[32m"),
            // Other C0 controls and DEL.
            (b"\x07\x00\x0e\x0f\x7f", "^G^@^N^O^?"),
            // C1 controls written as UTF-8 (CSI, OSC, ST, NEL).
            ("\u{9b}2J\u{9d}0;t\u{9c}\u{85}".as_bytes(), "<U+009B>2J<U+009D>0;t<U+009C><U+0085>"),
            // Raw 8-bit C1 bytes and other non-UTF-8.
            (b"\x9b2J\x9d\xff\xc0\x80", "\u{fffd}2J\u{fffd}\u{fffd}\u{fffd}\u{fffd}"),
            // UTF-8 text passes, including non-ASCII controls' neighbours.
            ("héllo wörld ✓ 🚀 \u{a0}".as_bytes(), "héllo wörld ✓ 🚀 \u{a0}"),
            // A character cut short by another byte or by the end.
            (b"\xe2\x9cx", "\u{fffd}x"),
            (b"\xe2\x9c", "\u{fffd}"),
            // Surrogates and overlong forms are not UTF-8.
            (b"\xed\xa0\x80|\xe0\x80\xaf", "\u{fffd}|\u{fffd}"),
        ];
        for (input, want) in cases {
            assert_eq!(s(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn a_field_keeps_to_its_line_and_acts_on_nothing() {
        let cases = [
            ("builder-1", "builder-1"),
            ("héllo ✓", "héllo ✓"),
            ("a\nb\r\tc", "a^Jb^M^Ic"),
            ("\x1b[31mred\x1b[0m", "^[[31mred^[[0m"),
            ("\x1b]52;c;aGk=\x07", "^[]52;c;aGk=^G"),
            ("\x7f\u{9b}2J", "^?<U+009B>2J"),
        ];
        for (text, want) in cases {
            assert_eq!(field(text), want, "{text:?}");
        }
    }

    #[test]
    fn an_overlong_sgr_is_shown() {
        let mut input = b"\x1b[".to_vec();
        input.extend(std::iter::repeat_n(b'1', 100));
        input.push(b'm');
        let out = s(&input);
        assert!(out.starts_with("^[["), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn every_cut_of_the_input_gives_the_same_output() {
        let input = "a\x1b[1;31mb\x1b]52;c;aGk=\x07c\u{9b}é✓🚀\x1b[2J\x1bP1\x1b\\d\x1b".as_bytes();
        let whole = Sanitizer::all(input);
        for cut in 0..=input.len() {
            for cut2 in cut..=input.len() {
                let mut s = Sanitizer::new();
                let mut out = Vec::new();
                s.push(&input[..cut], &mut out);
                s.push(&input[cut..cut2], &mut out);
                s.push(&input[cut2..], &mut out);
                s.finish(&mut out);
                assert_eq!(out, whole, "cut at {cut} and {cut2}");
            }
        }
        // One byte at a time, too.
        let mut s = Sanitizer::new();
        let mut out = Vec::new();
        for b in input {
            s.push(std::slice::from_ref(b), &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, whole);
    }

    #[test]
    fn nothing_but_sgr_escapes_survive_any_input() {
        // Every byte value after ESC and after ESC [, and every pair of
        // bytes: no ESC in the output starts anything but an SGR.
        let mut input = Vec::new();
        for a in 0..=255u8 {
            input.extend_from_slice(&[0x1b, a, b'x', 0x1b, b'[', a, b'x']);
            for b in [0x1b, 0x07, 0x9b, b'm', b'[', b']', 0xc2] {
                input.extend_from_slice(&[a, b]);
            }
        }
        let out = Sanitizer::all(&input);
        let text = String::from_utf8(out).expect("UTF-8");
        for (i, _) in text.match_indices('\x1b') {
            let rest = &text[i + 1..];
            assert!(rest.starts_with('['), "ESC not followed by [ at {i}");
            let end = rest.find('m').expect("an SGR ends with m");
            assert!(rest[1..end].bytes().all(|b| b.is_ascii_digit() || b == b';' || b == b':'), "{:?}", &rest[..end]);
        }
        for c in text.chars() {
            assert!(!c.is_control() || "\n\r\t\x08\x1b".contains(c), "control {c:?} survived");
        }
    }
}
