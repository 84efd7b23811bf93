//! Table and property tests of the masker: every form, every chunking.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::*;

fn patterns(values: &[&str]) -> Arc<Patterns> {
    Patterns::new(values.iter().map(|v| v.as_bytes())).expect("something to mask")
}

/// Pushes `chunks` one by one, then finishes; returns everything that went out.
fn run<'a>(patterns: &Arc<Patterns>, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut masker = Masker::new(Arc::clone(patterns));
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(masker.push(chunk));
        assert!(masker.pending.len() < patterns.longest, "held back more than longest - 1 bytes");
    }
    out.extend(masker.finish());
    assert!(masker.pending.is_empty());
    out
}

fn mask(patterns: &Arc<Patterns>, text: &[u8]) -> Vec<u8> {
    run(patterns, [text])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn masks_plain_values() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["s3cr3t-token"], "s3cr3t-token", "***"),
        (&["s3cr3t-token"], "s3cr3t-token is at the start\n", "*** is at the start\n"),
        (&["s3cr3t-token"], "token=s3cr3t-token; more\n", "token=***; more\n"),
        (&["s3cr3t-token"], "at the end: s3cr3t-token", "at the end: ***"),
        (&["s3cr3t-token"], "s3cr3t-tokens3cr3t-token\n", "******\n"),
        (&["s3cr3t-token"], "nothing secret here\n", "nothing secret here\n"),
        (&["alpha-secret", "bravo-secret"], "alpha-secret and bravo-secret\n", "*** and ***\n"),
        (&["secret", "secret-long"], "x secret-long y secret z\n", "x *** y *** z\n"),
        (&["secret-long", "secret"], "x secret-long y secret z\n", "x *** y *** z\n"),
        (&["abcdef", "defghi"], "abcdefghi\n", "***ghi\n"),
        (&["abcd"], "abc abcd\r\n", "abc ***\r\n"),
    ];
    for (values, text, expected) in cases {
        let p = patterns(values);
        assert_eq!(String::from_utf8(mask(&p, text.as_bytes())).unwrap(), *expected, "{values:?} in {text:?}");
    }
}

#[test]
fn split_at_every_point() {
    let secret = b"s3cr3t-token-0123456789";
    let p = patterns(&["s3cr3t-token-0123456789"]);
    for text in [&b"before s3cr3t-token-0123456789 after"[..], b"line\nx s3cr3t-token-0123456789 y\nz", secret] {
        let expected = mask(&p, text);
        assert!(!contains(&expected, secret));
        for i in 0..=text.len() {
            let out = run(&p, [&text[..i], &text[i..]]);
            assert_eq!(out, expected, "split at {i}");
        }
    }
}

#[test]
fn byte_by_byte() {
    let p = patterns(&["s3cr3t-token"]);
    let text = b"one s3cr3t-token\ntwo s3cr3t-token three s3cr3t-tok";
    let out = run(&p, text.chunks(1));
    assert_eq!(out, b"one ***\ntwo *** three s3cr3t-tok");
}

#[test]
fn complete_lines_go_out_at_once() {
    let p = patterns(&["s3cr3t-token"]);
    let mut masker = Masker::new(Arc::clone(&p));
    assert_eq!(masker.push(b"a plain line\n"), b"a plain line\n");
    assert_eq!(masker.push(b"progress 10%\r"), b"progress 10%\r");
    assert_eq!(masker.push(b"got s3cr3t-token\n"), b"got ***\n");
    assert_eq!(masker.finish(), b"");
}

#[test]
fn partial_line_is_held_until_finish() {
    let p = patterns(&["s3cr3t-token"]);
    let mut masker = Masker::new(Arc::clone(&p));
    assert_eq!(masker.push(b"Password: "), b"");
    assert_eq!(masker.finish(), b"Password: ");

    // Of a long unfinished line, all but longest - 1 bytes go out.
    let line = [b'x'; 100];
    let out = masker.push(&line);
    assert_eq!(out.len(), 100 - (p.longest - 1));
    assert_eq!(masker.finish().len(), p.longest - 1);
}

#[test]
fn base64_of_echo_output() {
    // `echo "$S" | base64`: the value, a newline, padding.
    let secret = b"hunter2-is-my-password";
    let p = Patterns::new([&secret[..]]).unwrap();
    let encoded = STANDARD.encode(cat(&[secret, b"\n"]));
    let out = mask(&p, encoded.as_bytes());
    assert!(out.starts_with(MASK) && out.len() <= MASK.len() + 6, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn base64_at_every_alignment() {
    // '?' and '>' make the two alphabets differ.
    let secret = b"tok??>>en-s3cr3t";
    let p = Patterns::new([&secret[..]]).unwrap();
    for engine in [STANDARD, URL_SAFE] {
        for prefix in [&b""[..], b"p", b"pr", b"pre", b"pref"] {
            let encoded = engine.encode(cat(&[prefix, secret, b"suffix"]));
            let out = mask(&p, encoded.as_bytes());
            assert!(contains(&out, MASK), "{encoded}");
            // All but at most two characters on each side of the secret's part are gone.
            let secret_chars = secret.len() * 8 / 6;
            assert!(out.len() + secret_chars <= encoded.len() + MASK.len() + 2, "{encoded}");
        }
    }
}

#[test]
fn double_base64() {
    let secret = b"ghp_0123456789abcdefABCDEF";
    let p = Patterns::new([&secret[..]]).unwrap();
    let once = STANDARD.encode(secret);
    for prefix in [&b""[..], b"a", b"ab"] {
        let twice = STANDARD.encode(cat(&[prefix, once.as_bytes()]));
        let out = mask(&p, twice.as_bytes());
        assert!(contains(&out, MASK), "{twice}");
        assert!(out.len() <= MASK.len() + 8, "{twice} -> {}", String::from_utf8_lossy(&out));
    }
}

#[test]
fn hex_url_and_json() {
    let cases: &[(&str, String, &str)] = &[
        ("z?s3cr3t", "lower 7a3f733363723374 7a3f73336372337\n".into(), "lower *** 7a3f73336372337\n"),
        ("z?s3cr3t", "upper 7A3F733363723374\n".into(), "upper ***\n"),
        ("my secret/pa ss", "?q=my%20secret%2Fpa%20ss&x=my+secret%2Fpa+ss\n".into(), "?q=***&x=***\n"),
        (r#"pa"ss\word"#, r#"{"token":"pa\"ss\\word"}"#.into(), r#"{"token":"***"}"#),
    ];
    for (secret, text, expected) in cases {
        let p = patterns(&[secret]);
        assert_eq!(String::from_utf8(mask(&p, text.as_bytes())).unwrap(), *expected, "{secret:?}");
    }
}

#[test]
fn multi_line_value() {
    let key = "-----BEGIN FAKE KEY-----\nMIIBfakeKeyMaterial0123456789\n-----END FAKE KEY-----\n";
    let p = patterns(&[key]);
    let cases = [
        (format!("before\n{key}after\n"), "before\n***\n***\n***\nafter\n".to_string()),
        (
            format!("before\r\n{}after\r\n", key.replace('\n', "\r\n")),
            "before\r\n***\r\n***\r\n***\r\nafter\r\n".into(),
        ),
        ("inline MIIBfakeKeyMaterial0123456789 here\n".into(), "inline *** here\n".into()),
        (format!("{{\"key\":{}}}\n", serde_json::to_string(key).unwrap()), "{\"key\":\"***\"}\n".into()),
    ];
    for (text, expected) in cases {
        assert_eq!(String::from_utf8(mask(&p, text.as_bytes())).unwrap(), expected, "{text:?}");
        for i in 0..=text.len() {
            assert_eq!(String::from_utf8(run(&p, [&text.as_bytes()[..i], &text.as_bytes()[i..]])).unwrap(), expected);
        }
    }
    assert!(!forms(key.as_bytes()).iter().any(|f| f == key.as_bytes()));
}

#[test]
fn too_short_values_mask_nothing() {
    assert!(Patterns::new([]).is_none());
    assert!(Patterns::new([&b""[..], b"ab", b"abc", b"a\nb"]).is_none());
    assert!(forms(b"abc").is_empty());
    assert!(Patterns::new([&b"abcd"[..]]).is_some());
}

#[test]
fn forms_are_unique_long_enough_and_single_line() {
    for value in [&b"s3cr3t-token"[..], b"my secret/pa ss", b"line one\r\nline two\n", b"\xff\xfe\x00\x01binary"] {
        let all = forms(value);
        assert!(all.iter().all(|f| f.len() >= MIN_MASK_LEN && !f.contains(&b'\n') && !f.contains(&b'\r')));
        for (i, f) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(f), "duplicate form");
        }
    }
    let all = forms(b"s3cr3t-token");
    for expected in
        [&b"s3cr3t-token"[..], b"czNjcjN0LXRva2Vu", b"7333637233742d746f6b656e", b"7333637233742D746F6B656E"]
    {
        assert!(all.iter().any(|f| f == expected), "{}", String::from_utf8_lossy(expected));
    }
}

#[test]
fn debug_hides_the_secrets() {
    let p = patterns(&["s3cr3t-token", "other-secret"]);
    let debug = format!("{p:?}");
    assert!(debug.starts_with("Patterns { count: ") && !debug.contains("s3cr3t") && !debug.contains("other"));
    let mut masker = Masker::new(p);
    assert!(masker.push(b"s3cr3t-tok").is_empty());
    let debug = format!("{masker:?}");
    assert!(debug.starts_with("Masker { patterns: Patterns { count: ") && !debug.contains("s3cr3t"), "{debug}");
}

/// A small deterministic PRNG (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_chunkings_match_one_shot_masking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let fillers: &[&[u8]] = &[b"compiling ", b"\n", b"\r\n", b"ok ", b"s3cr", b"\r", b"x", b"==", b"token: "];
    for secret in [&b"s3cr3t-token"[..], b"abcd", b"ghp_0123456789abcdefABCDEF+/==", b"two words"] {
        let p = Patterns::new([secret]).unwrap();
        for _ in 0..50 {
            let mut text = Vec::new();
            for _ in 0..20 {
                match rng.below(4) {
                    0 => text.extend_from_slice(secret),
                    1 => text.extend_from_slice(STANDARD.encode(secret).as_bytes()),
                    _ => text.extend_from_slice(fillers[rng.below(fillers.len())]),
                }
            }
            let spans: Vec<Span> = p.find(&text).collect();
            let expected = replace(&text, &spans);
            assert!(!contains(&expected, secret));
            for _ in 0..20 {
                let mut chunks = Vec::new();
                let mut rest = &text[..];
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at(rng.below(rest.len().min(40)) + 1);
                    chunks.push(chunk);
                    rest = tail;
                }
                assert_eq!(run(&p, chunks), expected);
            }
        }
    }
}
