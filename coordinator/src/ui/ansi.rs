//! A job's log turned into styled lines for the browser.
//!
//! A log is whatever a job's steps printed: text, colours, progress bars
//! redrawn with `\r`, and possibly escape sequences meant to act on a
//! terminal (clear the screen, set the title, write the clipboard with
//! OSC 52). The web UI shows it as numbered lines of plain text with style
//! runs ([`Line`]), which the page renders as text nodes and class names,
//! never as HTML, so nothing in a log can act on the browser either.
//!
//! [`Lines`] is a streaming converter: chunks arrive cut at arbitrary bytes
//! (inside a UTF-8 character or an escape sequence) and give the same lines
//! however they are cut. The rules, in order:
//!
//! 1. The bytes go through [`drover_client::term::Sanitizer`], the rule the
//!    CLI applies before a terminal sees a log, so both show the same text:
//!    SGR sequences (`ESC [` params `m`) pass, every other control is shown
//!    `cat -v` style (`^[]52;c;...^G`, `^[[2J`, `^G`, `<U+009B>`) and is from
//!    then on ordinary text.
//! 2. SGR sequences set the current style, which carries across lines and
//!    chunks: `0` (or none) resets; `1` bold (class `b`), `2` dim (`d`), `3`
//!    italic (`i`), `4` underline (`u`, and `4:0` off, `4:N` on); `22`, `23`,
//!    `24`, `39`, `49` turn them off; `30`–`37` and `90`–`97` are foreground
//!    `fg0`–`fg7` and `fg8`–`fg15`, `40`–`47` and `100`–`107` background `bg0`–`bg15`;
//!    `38;5;N` and `48;5;N` are `fgN`/`bgN` below 16 and the xterm 256-colour
//!    palette's colour as `fg-#rrggbb`/`bg-#rrggbb` above; `38;2;R;G;B` and
//!    `48;2;R;G;B` are `fg-#rrggbb`/`bg-#rrggbb`; the colon forms
//!    (`38:5:N`, `38:2::R:G:B`, `38:2:R:G:B`) too. Inverse (`7`) and every
//!    other parameter are ignored, and a malformed or out-of-range one
//!    (`38;5;999`, `38;2;1`) is ignored without disturbing the rest.
//! 3. `\n` ends a line, and so does `\r\n`. A lone `\r` (a progress bar
//!    redrawing itself) restarts the line: when text follows it, the line's
//!    text and runs so far are dropped (the style stays). A line that ends
//!    in `\r` keeps its text, as a terminal keeps showing it.
//! 4. `\t` becomes spaces to the next multiple of 8 columns (a column is a
//!    character); like a terminal's cursor movement, they carry no style.
//!    Backspace deletes the character before it, if the line has one.
//! 5. A line longer than [`MAX_LINE_CHARS`] is cut there into several
//!    lines, so a log without newlines does not become one giant line.
//!
//! A [`Run`]'s offsets are UTF-16 code units (JavaScript's string indices),
//! runs are in order and do not overlap, text without style has no run, and
//! adjacent runs with the same classes are one.
//!
//! Pure: no IO; the caller feeds the stored or streamed chunks of one
//! attempt's log and sends the lines on.

use drover_client::term::Sanitizer;

/// The most characters in a line: a longer line is cut into several at this
/// length, each with its own number. It bounds what [`Lines`] holds for the
/// unfinished line and what one [`Line`] sends to the browser. (At the end of
/// a stream, an escape sequence that was held back and never finished is
/// shown on the last line even past the limit: at most a few dozen more
/// characters.)
pub const MAX_LINE_CHARS: usize = 16 * 1024;

/// Tab stops are every this many columns.
const TAB_WIDTH: usize = 8;

/// One line for the browser: its 1-based number, its text (free of control
/// characters) and style runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    /// The line's number in the attempt's log, from 1 (a line cut at
    /// [`MAX_LINE_CHARS`] counts as several).
    pub n: u64,
    /// The text, without its line ending and free of control characters.
    pub t: String,
    /// The style runs, in order, not overlapping; unstyled text has none.
    pub s: Vec<Run>,
}

/// A style run: start and end as UTF-16 code unit offsets into `t`
/// (JavaScript's string indices), and space-separated class tokens
/// (`b d i u`, `fgN`/`bgN` for N in 0..16, `fg-#rrggbb`/`bg-#rrggbb`).
/// Serialises as `[start, end, "classes"]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run(pub u32, pub u32, pub String);

/// The streaming converter from a log's bytes to [`Line`]s (see the module
/// docs for the rules). One per attempt's log; [`Lines::reset`] starts over.
#[derive(Debug, Default)]
pub struct Lines {
    /// The CLI's rule, applied first.
    clean: Sanitizer,
    /// The sanitised bytes of the chunk being fed (kept for its capacity).
    buf: Vec<u8>,
    /// The current style and its classes (empty: no style).
    style: Style,
    classes: String,
    /// How many lines were finished: the unfinished line is number `done + 1`.
    done: u64,
    /// The unfinished line: its text, runs, length in UTF-16 units and in
    /// characters.
    text: String,
    runs: Vec<Run>,
    len16: u32,
    chars: usize,
    /// A `\r` was the last thing seen: the line restarts if text follows,
    /// and ends as it is if `\n` follows.
    cr: bool,
}

impl Lines {
    /// A converter at line 1 with no style.
    pub fn new() -> Lines {
        Lines::default()
    }

    /// Feeds a chunk; returns the lines it finished (complete lines, in
    /// order). What is left of the last line stays for the next chunk (see
    /// [`Lines::partial`]).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.clean.push(bytes, &mut buf);
        let mut out = Vec::new();
        self.feed(&String::from_utf8_lossy(&buf), MAX_LINE_CHARS, &mut out);
        self.buf = buf;
        out
    }

    /// The unfinished last line as it stands now, if it has any text (for a
    /// live view; its `n` is the next line's number). Does not consume it.
    pub fn partial(&self) -> Option<Line> {
        if self.text.is_empty() {
            return None;
        }
        Some(Line { n: self.done + 1, t: self.text.clone(), s: self.runs.clone() })
    }

    /// Ends the stream: the unfinished line, if any, as a finished line.
    /// Bytes the sanitiser held back (an escape sequence or a UTF-8
    /// character cut short by the end) are shown as text on it first. The
    /// converter may go on with the next line, in the same style; call
    /// [`Lines::reset`] for another log.
    pub fn finish(&mut self) -> Option<Line> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.clean.finish(&mut buf);
        let mut out = Vec::new();
        // The flushed bytes never hold a line break, and may pass the limit.
        self.feed(&String::from_utf8_lossy(&buf), usize::MAX, &mut out);
        debug_assert!(out.is_empty(), "the sanitiser's flush ended a line");
        self.buf = buf;
        self.cr = false;
        if self.text.is_empty() { None } else { Some(self.take_line()) }
    }

    /// Starts over at line 1 with a fresh style (a new attempt's log),
    /// dropping the unfinished line and whatever the sanitiser held back.
    pub fn reset(&mut self) {
        *self = Lines { buf: std::mem::take(&mut self.buf), ..Lines::default() };
    }

    /// Sanitised text, which holds only whole characters and whole SGR
    /// sequences, into lines, cutting them at `limit` characters.
    fn feed(&mut self, text: &str, limit: usize, out: &mut Vec<Line>) {
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => {
                    self.cr = false;
                    out.push(self.take_line());
                }
                '\r' => self.cr = true,
                '\t' => {
                    self.restart_after_cr();
                    for _ in 0..TAB_WIDTH - self.chars % TAB_WIDTH {
                        self.put(' ', false, limit, out);
                    }
                }
                // Backspace; just after a `\r` the cursor is at the start.
                '\x08' if !self.cr => self.backspace(),
                '\x1b' => {
                    // The sanitiser passes ESC only as the start of a whole
                    // SGR sequence, all ASCII: `[`, parameters, `m`.
                    let rest = &text[i + 1..];
                    let end = rest.find('m').filter(|&end| {
                        rest.starts_with('[')
                            && rest[1..end].bytes().all(|b| b.is_ascii_digit() || b == b';' || b == b':')
                    });
                    if let Some(end) = end {
                        self.sgr(&rest[1..end]);
                        for _ in 0..=end {
                            chars.next();
                        }
                    }
                }
                // Nothing else is left by the sanitiser; never let a control
                // character into the text.
                c if c.is_control() => {}
                c => {
                    self.restart_after_cr();
                    self.put(c, true, limit, out);
                }
            }
        }
    }

    /// Text after a lone `\r` replaces the line.
    fn restart_after_cr(&mut self) {
        if self.cr {
            self.cr = false;
            self.text.clear();
            self.runs.clear();
            self.len16 = 0;
            self.chars = 0;
        }
    }

    /// Appends a character, in the current style if `styled`, first ending
    /// the line if it already has `limit` characters.
    fn put(&mut self, c: char, styled: bool, limit: usize, out: &mut Vec<Line>) {
        if self.chars >= limit {
            out.push(self.take_line());
        }
        let start = self.len16;
        self.text.push(c);
        self.len16 += c.len_utf16() as u32;
        self.chars += 1;
        if styled && !self.classes.is_empty() {
            match self.runs.last_mut() {
                Some(Run(_, end, classes)) if *end == start && *classes == self.classes => *end = self.len16,
                _ => self.runs.push(Run(start, self.len16, self.classes.clone())),
            }
        }
    }

    /// Deletes the line's last character, and its share of the last run.
    fn backspace(&mut self) {
        let Some(c) = self.text.pop() else { return };
        self.len16 -= c.len_utf16() as u32;
        self.chars -= 1;
        if let Some(run) = self.runs.last_mut() {
            run.1 = run.1.min(self.len16);
            if run.0 >= run.1 {
                self.runs.pop();
            }
        }
    }

    /// The unfinished line, finished.
    fn take_line(&mut self) -> Line {
        self.done += 1;
        self.len16 = 0;
        self.chars = 0;
        Line { n: self.done, t: std::mem::take(&mut self.text), s: std::mem::take(&mut self.runs) }
    }

    /// Applies an SGR sequence's parameters (between `ESC [` and `m`).
    fn sgr(&mut self, params: &str) {
        let before = self.style;
        self.style.apply(params);
        if self.style != before {
            self.classes = self.style.classes();
        }
    }
}

/// A colour: one of the 256 indexed colours, or a true colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Color {
    Index(u8),
    Rgb(u8, u8, u8),
}

impl Color {
    /// Its class with `prefix` (`fg` or `bg`): `fg3` for the 16 colours a
    /// theme sets, `fg-#rrggbb` for the others.
    fn class(self, prefix: &str) -> String {
        let (r, g, b) = match self {
            Color::Index(n) if n < 16 => return format!("{prefix}{n}"),
            Color::Index(n) => xterm_rgb(n),
            Color::Rgb(r, g, b) => (r, g, b),
        };
        format!("{prefix}-#{r:02x}{g:02x}{b:02x}")
    }
}

/// The xterm palette's colour for an index from 16: a 6×6×6 cube, then 24
/// greys.
fn xterm_rgb(n: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    if n >= 232 {
        let grey = 8 + 10 * (n - 232);
        return (grey, grey, grey);
    }
    let i = usize::from(n.saturating_sub(16));
    (LEVELS[i / 36], LEVELS[i / 6 % 6], LEVELS[i % 6])
}

/// The current style, as SGR sequences set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    fg: Option<Color>,
    bg: Option<Color>,
}

impl Style {
    /// Applies an SGR sequence's parameters: `;`-separated, each possibly
    /// with `:`-separated sub-parameters; an empty one is 0.
    fn apply(&mut self, params: &str) {
        let groups: Vec<&str> = params.split(';').collect();
        let mut i = 0;
        while i < groups.len() {
            let group = groups[i];
            i += 1;
            if group.contains(':') {
                let subs: Vec<&str> = group.split(':').collect();
                match number(subs[0]) {
                    Some(38) => self.fg = colon_color(&subs[1..]).or(self.fg),
                    Some(48) => self.bg = colon_color(&subs[1..]).or(self.bg),
                    // 4:0 is no underline, 4:1 to 4:5 its kinds (curly, ...).
                    Some(4) => self.underline = number(subs[1]) != Some(0),
                    _ => {}
                }
                continue;
            }
            match number(group) {
                Some(code @ (38 | 48)) => {
                    let (color, used) = semicolon_color(&groups[i..]);
                    i += used;
                    if let Some(color) = color {
                        if code == 38 { self.fg = Some(color) } else { self.bg = Some(color) }
                    }
                }
                Some(code) => self.simple(code),
                None => {}
            }
        }
    }

    /// One parameter that stands alone.
    fn simple(&mut self, code: u32) {
        match code {
            0 => *self = Style::default(),
            1 => self.bold = true,
            2 => self.dim = true,
            3 => self.italic = true,
            4 => self.underline = true,
            22 => (self.bold, self.dim) = (false, false),
            23 => self.italic = false,
            24 => self.underline = false,
            30..=37 => self.fg = Some(Color::Index((code - 30) as u8)),
            39 => self.fg = None,
            40..=47 => self.bg = Some(Color::Index((code - 40) as u8)),
            49 => self.bg = None,
            90..=97 => self.fg = Some(Color::Index((code - 90 + 8) as u8)),
            100..=107 => self.bg = Some(Color::Index((code - 100 + 8) as u8)),
            _ => {}
        }
    }

    /// Its class tokens, space-separated; empty for no style.
    fn classes(&self) -> String {
        let mut tokens: Vec<String> = Vec::new();
        for (on, token) in [(self.bold, "b"), (self.dim, "d"), (self.italic, "i"), (self.underline, "u")] {
            if on {
                tokens.push(token.to_string());
            }
        }
        tokens.extend(self.fg.map(|c| c.class("fg")));
        tokens.extend(self.bg.map(|c| c.class("bg")));
        tokens.join(" ")
    }
}

/// A parameter's value: empty is 0; None when it does not fit.
fn number(param: &str) -> Option<u32> {
    if param.is_empty() { Some(0) } else { param.parse().ok() }
}

/// A parameter that must be a byte (a colour index or component).
fn byte(param: Option<&&str>) -> Option<u8> {
    param.and_then(|p| number(p)).and_then(|n| u8::try_from(n).ok())
}

/// The colour after `38;` or `48;` in the semicolon form (`5;N` or
/// `2;R;G;B`), and how many parameters it took. An unknown kind takes
/// none, so what follows is read as parameters of its own.
fn semicolon_color(rest: &[&str]) -> (Option<Color>, usize) {
    match rest.first().and_then(|kind| number(kind)) {
        Some(5) => (byte(rest.get(1)).map(Color::Index), rest.len().min(2)),
        Some(2) => {
            let rgb = (byte(rest.get(1)), byte(rest.get(2)), byte(rest.get(3)));
            let color = match rgb {
                (Some(r), Some(g), Some(b)) => Some(Color::Rgb(r, g, b)),
                _ => None,
            };
            (color, rest.len().min(4))
        }
        _ => (None, 0),
    }
}

/// The colour after `38:` or `48:` in the colon form: `5:N`, `2:ID:R:G:B`
/// (ITU T.416, the colour space ID usually empty) or `2:R:G:B`.
fn colon_color(subs: &[&str]) -> Option<Color> {
    match subs.first().and_then(|kind| number(kind))? {
        5 => byte(subs.get(1)).map(Color::Index),
        2 => {
            let at = if subs.len() >= 5 { 2 } else { 1 };
            Some(Color::Rgb(byte(subs.get(at))?, byte(subs.get(at + 1))?, byte(subs.get(at + 2))?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as `n|text|start-end:classes,...`.
    fn show(line: &Line) -> String {
        let runs: Vec<String> = line.s.iter().map(|Run(a, b, c)| format!("{a}-{b}:{c}")).collect();
        format!("{}|{}|{}", line.n, line.t, runs.join(","))
    }

    /// The lines of `chunks` fed in turn, then finished.
    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::new();
        let mut out: Vec<Line> = Vec::new();
        for chunk in chunks {
            out.extend(lines.push(chunk));
        }
        out.extend(lines.finish());
        out.iter().map(show).collect()
    }

    const CASES: &[(&str, &[u8], &[&str])] = &[
        ("plain lines", b"hello\nworld\n", &["1|hello|", "2|world|"]),
        ("no newline at the end", b"a\nb", &["1|a|", "2|b|"]),
        ("empty lines", b"\n\n", &["1||", "2||"]),
        ("nothing", b"", &[]),
        ("crlf", b"a\r\nb\r\n", &["1|a|", "2|b|"]),
        ("utf-8 and utf-16 offsets", "é🚀\x1b[1mx✓\n".as_bytes(), &["1|é🚀x✓|3-5:b"]),
        ("basic colour and reset", b"\x1b[31mred\x1b[0m plain\n", &["1|red plain|0-3:fg1"]),
        ("bright colours", b"\x1b[91;104mx\x1b[97;40my", &["1|xy|0-1:fg9 bg12,1-2:fg15 bg0"]),
        ("bold dim italic underline", b"\x1b[1;2;3;4mx\x1b[22my\x1b[23;24mz", &["1|xyz|0-1:b d i u,1-2:i u"]),
        (
            "256 colours",
            b"\x1b[38;5;9ma\x1b[38;5;208mb\x1b[48;5;232mc\x1b[38;5;255;48;5;16md\x1b[38;5;21me",
            &["1|abcde|0-1:fg9,1-2:fg-#ff8700,2-3:fg-#ff8700 bg-#080808,3-4:fg-#eeeeee bg-#000000,4-5:fg-#0000ff bg-#000000"],
        ),
        (
            "true colour",
            b"\x1b[38;2;255;0;128mx\x1b[48;2;1;2;3my",
            &["1|xy|0-1:fg-#ff0080,1-2:fg-#ff0080 bg-#010203"],
        ),
        (
            "colon forms",
            b"\x1b[38:5:208mx\x1b[38:2::1:2:3my\x1b[48:2:4:5:6mz\x1b[4:3mu\x1b[4:0;39;49mv\x1b[48:5:3mw",
            &["1|xyzuvw|0-1:fg-#ff8700,1-2:fg-#010203,2-3:fg-#010203 bg-#040506,3-4:u fg-#010203 bg-#040506,5-6:bg3"],
        ),
        ("resets: 39, 49, bare m", b"\x1b[1;31;42ma\x1b[39mb\x1b[49mc\x1b[md", &["1|abcd|0-1:b fg1 bg2,1-2:b bg2,2-3:b"]),
        ("empty parameters are 0", b"\x1b[1;;31mx\x1b[;mY", &["1|xY|0-1:fg1"]),
        ("inverse is ignored", b"\x1b[7mx\x1b[27;5;9;53my", &["1|xy|"]),
        (
            "bad parameters are ignored",
            b"\x1b[38;5m\x1b[38;2;1ma\x1b[38;5;999mb\x1b[99999999999999999999mc\x1b[38;9;1md\x1b[38:2:1me\x1b[38:5:300;48:7mf",
            &["1|abcdef|3-6:b"],
        ),
        ("the same classes merge", b"\x1b[31ma\x1b[31mb\x1b[1m\x1b[22mc\x1b[0;31md", &["1|abcd|0-4:fg1"]),
        ("style carried across lines", b"\x1b[32mone\ntwo\x1b[0m\nthree\n", &["1|one|0-3:fg2", "2|two|0-3:fg2", "3|three|"]),
        ("progress with \\r", b"10%\r20%\r100%\ndone\n", &["1|100%|", "2|done|"]),
        ("progress keeps the style", b"\x1b[33m10%\r\x1b[32m100%\n", &["1|100%|0-4:fg2"]),
        ("a line ending in \\r keeps its text", b"50%\r", &["1|50%|"]),
        ("\\r then a reset then \\n", b"50%\r\x1b[0m\n", &["1|50%|"]),
        ("\\r\\r\\n", b"a\r\r\nb", &["1|a|", "2|b|"]),
        ("tabs", b"a\tb\n\tc\n12345678\td\n", &["1|a       b|", "2|        c|", "3|12345678        d|"]),
        ("tabs carry no style", b"\x1b[41ma\tb", &["1|a       b|0-1:bg1,8-9:bg1"]),
        ("backspace", b"abc\x08\x08d\n\x08x\n", &["1|ad|", "2|x|"]),
        ("backspace shrinks runs", b"a\x1b[31mbc\x08\x08\x08\x1b[0mx\x1b[31my\x08z", &["1|xz|1-2:fg1"]),
        ("backspace after \\r", b"ab\r\x08c", &["1|c|"]),
        ("bell and other controls as carets", b"done\x07\x00\x7f\n", &["1|done^G^@^?|"]),
        ("OSC 52 neutralised", b"\x1b]52;c;aGk=\x07ok\n", &["1|^[]52;c;aGk=^Gok|"]),
        ("clear screen neutralised", b"\x1b[2J\x1b[Hx\x1b[?25l\n", &["1|^[[2J^[[Hx^[[?25l|"]),
        ("C1 controls", "\u{9b}2J\n".as_bytes(), &["1|<U+009B>2J|"]),
        ("not UTF-8", b"\xffa\xe2\x9c", &["1|\u{fffd}a\u{fffd}|"]),
        ("an unfinished escape at the end", b"a\x1b[31", &["1|a^[[31|"]),
        ("an unfinished escape alone", b"\x1b", &["1|^[|"]),
    ];

    #[test]
    fn table() {
        for (name, input, want) in CASES {
            assert_eq!(lines_of(&[input]), *want, "{name}");
        }
    }

    #[test]
    fn every_cut_gives_the_same_lines() {
        for (name, input, want) in CASES {
            for cut in 0..=input.len() {
                assert_eq!(lines_of(&[&input[..cut], &input[cut..]]), *want, "{name}, cut at {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(lines_of(&bytes), *want, "{name}, byte by byte");
        }
        // Two cuts of a sample with every kind of thing in it.
        let sample = "a\x1b[1;38;2;10;20;30mé\r\nb🚀\x1b[38:5:208m✓\x1b]52;c;x\x07\n\tc\x08d\r\np\rq\x1b[0m\nf\x1b[2J"
            .as_bytes();
        let whole = lines_of(&[sample]);
        assert_eq!(
            whole,
            [
                "1|aé|1-2:b fg-#0a141e",
                "2|b🚀✓^[]52;c;x^G|0-3:b fg-#0a141e,3-15:b fg-#ff8700",
                "3|        d|8-9:b fg-#ff8700",
                "4|q|0-1:b fg-#ff8700",
                "5|f^[[2J|",
            ]
        );
        for cut in 0..=sample.len() {
            for cut2 in cut..=sample.len() {
                let got = lines_of(&[&sample[..cut], &sample[cut..cut2], &sample[cut2..]]);
                assert_eq!(got, whole, "cut at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit() {
        let mut lines = Lines::new();
        let mut input = b"\x1b[31m".to_vec();
        input.extend(std::iter::repeat_n(b'x', 40 * 1024));
        let out = lines.push(&input);
        assert_eq!(out.len(), 2);
        for (i, line) in out.iter().enumerate() {
            assert_eq!(line.n, i as u64 + 1);
            assert_eq!(line.t.len(), MAX_LINE_CHARS);
            assert_eq!(line.s, [Run(0, MAX_LINE_CHARS as u32, "fg1".into())]);
        }
        let rest = lines.partial().expect("the rest");
        assert_eq!((rest.n, rest.t.len()), (3, 40 * 1024 - 2 * MAX_LINE_CHARS));
        assert_eq!(lines.finish(), Some(rest));

        // Exactly the limit, then a newline: one line.
        let mut lines = Lines::new();
        let mut input = vec![b'y'; MAX_LINE_CHARS];
        input.push(b'\n');
        let out = lines.push(&input);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].t.len(), MAX_LINE_CHARS);
        assert_eq!(lines.finish(), None);

        // The limit counts characters, and offsets count UTF-16 units.
        let mut lines = Lines::new();
        let out = lines.push("\x1b[1m🚀".repeat(MAX_LINE_CHARS + 1).as_bytes());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].t.chars().count(), MAX_LINE_CHARS);
        assert_eq!(out[0].s, [Run(0, 2 * MAX_LINE_CHARS as u32, "b".into())]);
        assert_eq!(lines.finish().map(|l| (l.n, l.t)), Some((2, "🚀".to_string())));

        // The flush at the end may pass the limit rather than lose text.
        let mut lines = Lines::new();
        let mut input = vec![b'z'; MAX_LINE_CHARS];
        input.extend_from_slice(b"\x1b[3");
        assert!(lines.push(&input).is_empty());
        let last = lines.finish().expect("the line");
        assert!(last.t.ends_with("z^[[3"), "{}", &last.t[last.t.len() - 10..]);
    }

    #[test]
    fn partial_and_finish() {
        let mut lines = Lines::new();
        assert_eq!(lines.partial(), None);
        assert_eq!(lines.push(b"ab\ncd").iter().map(show).collect::<Vec<_>>(), ["1|ab|"]);
        assert_eq!(lines.partial().as_ref().map(show), Some("2|cd|".into()));
        assert_eq!(lines.partial().as_ref().map(show), Some("2|cd|".into()), "partial does not consume");
        assert_eq!(lines.push(b"e\n").iter().map(show).collect::<Vec<_>>(), ["2|cde|"]);
        assert_eq!(lines.partial(), None);
        assert!(lines.push(b"\x1b[31m").is_empty());
        assert_eq!(lines.partial(), None, "a style alone is no text");
        assert!(lines.push(b"x\x1b[").is_empty());
        assert_eq!(lines.partial().as_ref().map(show), Some("3|x|0-1:fg1".into()), "a held escape is not shown yet");
        assert_eq!(lines.finish().as_ref().map(show), Some("3|x^[[|0-4:fg1".into()));
        assert_eq!(lines.finish(), None);
        // Past the end, the next line and the same style.
        assert_eq!(lines.push(b"y\n").iter().map(show).collect::<Vec<_>>(), ["4|y|0-1:fg1"]);
        // A progress bar shows its latest state.
        lines.push(b"\r 10%\r 20%");
        assert_eq!(lines.partial().as_ref().map(show), Some("5| 20%|0-4:fg1".into()));
        lines.push(b"\r");
        assert_eq!(lines.partial().as_ref().map(show), Some("5| 20%|0-4:fg1".into()));
    }

    #[test]
    fn reset_starts_over() {
        let mut lines = Lines::new();
        lines.push(b"\x1b[31ma\nb\x1b[3");
        lines.reset();
        assert_eq!(lines.partial(), None);
        assert_eq!(lines.push(b"1mc\n").iter().map(show).collect::<Vec<_>>(), ["1|1mc|"]);
    }

    #[test]
    fn lines_serialise_for_the_browser() {
        let line = Line { n: 7, t: "ok".into(), s: vec![Run(0, 2, "b fg1".into())] };
        assert_eq!(serde_json::to_string(&line).expect("json"), r#"{"n":7,"t":"ok","s":[[0,2,"b fg1"]]}"#);
    }

    #[test]
    fn any_input_gives_well_formed_lines() {
        // Pseudo-random bytes weighted towards escapes, digits and controls.
        let alphabet = b"\x1b[];:0123456789m\r\n\t\x08\x07xy\xc3\xa9\xf0\x9f\x9a\x80";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut input = Vec::new();
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = if seed.is_multiple_of(5) {
                (seed >> 8) as u8
            } else {
                alphabet[(seed >> 8) as usize % alphabet.len()]
            };
            input.push(b);
        }
        let mut lines = Lines::new();
        let mut out = Vec::new();
        for chunk in input.chunks(1000) {
            out.extend(lines.push(chunk));
            out.extend(lines.partial());
        }
        out.extend(lines.finish());
        for line in &out {
            assert!(!line.t.chars().any(char::is_control), "{line:?}");
            let len16 = line.t.encode_utf16().count() as u32;
            let mut at = 0;
            for (i, Run(start, end, classes)) in line.s.iter().enumerate() {
                assert!(at <= *start && start < end && *end <= len16, "{line:?}");
                assert!(!classes.is_empty(), "{line:?}");
                if i > 0 && line.s[i - 1].1 == *start {
                    assert_ne!(&line.s[i - 1].2, classes, "unmerged runs in {line:?}");
                }
                at = *end;
            }
        }
    }
}
