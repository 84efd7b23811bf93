//! The table tests of `ui::ansi`: every case fed whole, at every cut and a
//! byte at a time.

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
    let sample =
        "a\x1b[1;38;2;10;20;30mé\r\nb🚀\x1b[38:5:208m✓\x1b]52;c;x\x07\n\tc\x08d\r\np\rq\x1b[0m\nf\x1b[2J".as_bytes();
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
        let b =
            if seed.is_multiple_of(5) { (seed >> 8) as u8 } else { alphabet[(seed >> 8) as usize % alphabet.len()] };
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
