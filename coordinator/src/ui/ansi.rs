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
mod tests;
