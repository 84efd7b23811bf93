//! Cache keys: the template a job's `cache: key:` is written in, read into a
//! [`KeyTemplate`] at submit, and rendered into a key by the agent.
//!
//! ```text
//! cargo-{{ hashFiles('Cargo.lock') }}
//! deps-{{ hashFiles("package-lock.json", '**/yarn.lock') }}-v2
//! ```
//!
//! A template is literal text with `{{ expr }}` expressions in it
//! (whitespace inside the braces is allowed). The one expression is
//! `hashFiles('glob', ...)`: one or more globs, in single or double quotes
//! and without escapes, relative to the workspace. The agent replaces each
//! with a hash of the files its globs match ([`KeyTemplate::render`]).
//!
//! Keys go into store keys and file names, so a key is 1 to
//! [`MAX_CACHE_KEY_LEN`] characters of `[A-Za-z0-9._-]` ([`key_problem`]).
//! The literal text of a template and every `restore-keys` prefix are held
//! to that here, so that a bad key is refused when the run is submitted, not
//! on an agent when the job is half done. What `hashFiles` gives can only
//! be checked once rendered.
//!
//! Everything is bounded: a template has at most [`MAX_CACHE_KEY_LEN`]
//! characters, [`MAX_CACHE_KEY_EXPRESSIONS`] expressions, and
//! [`MAX_HASH_FILES_GLOBS`] globs in one `hashFiles`. This module does no IO.

use crate::check::suggest::closest;
use crate::yaml::abbreviate;
use crate::{KeyPart, KeyTemplate, MAX_CACHE_KEY_EXPRESSIONS, MAX_CACHE_KEY_LEN, MAX_HASH_FILES_GLOBS};

/// The one function a template may call.
const HASH_FILES: &str = "hashFiles";

const EXAMPLE: &str = "e.g. `cargo-{{ hashFiles('Cargo.lock') }}`";
const KEY_CHARS: &str = "letters, digits, `.`, `_` and `-`";

/// Why a cache key template cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Where the problem is: an offset into the template, in characters.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when we can say more than the message does.
    pub hint: Option<String>,
}

impl TemplateError {
    fn new(offset: usize, message: impl Into<String>, hint: Option<String>) -> TemplateError {
        TemplateError { offset, message: message.into(), hint }
    }
}

/// Reads the cache key template `text`: literal text and
/// `{{ hashFiles('glob', ...) }}` expressions. The first problem is the
/// error, with its offset into `text`.
pub fn parse_template(text: &str) -> Result<KeyTemplate, TemplateError> {
    let length = text.chars().count();
    if length > MAX_CACHE_KEY_LEN {
        return Err(TemplateError::new(
            0,
            format!("it has {length} characters, over the limit of {MAX_CACHE_KEY_LEN}"),
            Some("hash long lists of files with one `hashFiles('a', 'b', ...)` rather than naming them".to_owned()),
        ));
    }
    if text.is_empty() {
        return Err(TemplateError::new(0, "it is empty", Some(EXAMPLE.to_owned())));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Reader { chars: &chars, at: 0 };
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut expressions = 0;
    while let Some(c) = reader.peek() {
        if reader.looking_at("{{") {
            expressions += 1;
            if expressions > MAX_CACHE_KEY_EXPRESSIONS {
                return Err(TemplateError::new(
                    reader.at,
                    format!("it has more than {MAX_CACHE_KEY_EXPRESSIONS} `{{{{ }}}}` expressions"),
                    Some("one `hashFiles` takes several globs: `hashFiles('a', 'b')`".to_owned()),
                ));
            }
            if !literal.is_empty() {
                parts.push(KeyPart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(reader.expression()?);
        } else if reader.looking_at("}}") {
            return Err(TemplateError::new(
                reader.at,
                "`}}` closes no `{{`",
                Some(format!("an expression is written in double braces, {EXAMPLE}")),
            ));
        } else if is_key_char(c) {
            literal.push(c);
            reader.at += 1;
        } else {
            return Err(TemplateError::new(reader.at, bad_char(c), Some(literal_hint(c))));
        }
    }
    if !literal.is_empty() {
        parts.push(KeyPart::Literal(literal));
    }
    Ok(KeyTemplate { text: text.to_owned(), parts })
}

/// Why `key` cannot be a cache key (a rendered one, or a `restore-keys`
/// prefix), if it cannot: it must be 1 to [`MAX_CACHE_KEY_LEN`] characters
/// of `[A-Za-z0-9._-]`, because keys go into store keys and file names.
pub fn key_problem(key: &str) -> Option<String> {
    key_problem_at(key).map(|(_, problem)| problem)
}

/// [`key_problem`], with the offset (in characters) of the problem.
pub(crate) fn key_problem_at(key: &str) -> Option<(usize, String)> {
    if key.is_empty() {
        return Some((0, "a cache key may not be empty".to_owned()));
    }
    let length = key.chars().count();
    if length > MAX_CACHE_KEY_LEN {
        return Some((0, format!("a cache key has at most {MAX_CACHE_KEY_LEN} characters, this one has {length}")));
    }
    let (offset, c) = key.chars().enumerate().find(|(_, c)| !is_key_char(*c))?;
    Some((offset, format!("{} in a cache key (at character {})", bad_char(c), offset + 1)))
}

impl KeyTemplate {
    /// The key this template stands for: its literal text, and for each
    /// `hashFiles` what `hash_files` says for its globs (the agent hashes
    /// the workspace files they match). The result is checked with
    /// [`key_problem`]; an error says which template and why.
    pub fn render(&self, hash_files: &mut dyn FnMut(&[String]) -> Result<String, String>) -> Result<String, String> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                KeyPart::Literal(text) => key.push_str(text),
                KeyPart::HashFiles(globs) => {
                    let hash = hash_files(globs).map_err(|err| {
                        let globs: Vec<String> = globs.iter().map(|g| format!("'{}'", abbreviate(g))).collect();
                        format!("cache key `{}`: {HASH_FILES}({}): {err}", abbreviate(&self.text), globs.join(", "))
                    })?;
                    key.push_str(&hash);
                }
            }
            if key.len() > 4 * MAX_CACHE_KEY_LEN {
                // Over the limit already, however it is counted; stop
                // before a runaway hash makes it any longer.
                break;
            }
        }
        match key_problem(&key) {
            Some(problem) => Err(format!(
                "cache key `{}` renders to `{}`, which is not a valid key: {problem}",
                abbreviate(&self.text),
                abbreviate(&key)
            )),
            None => Ok(key),
        }
    }
}

/// Whether a key may hold `c`.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn bad_char(c: char) -> String {
    format!("the character {} is not allowed", show(c))
}

/// `c` quoted for a message: in backticks, or escaped when it would not show.
fn show(c: char) -> String {
    if c.is_whitespace() || c.is_control() { format!("{c:?}") } else { format!("`{c}`") }
}

/// The hint for `c` found in a template's literal text.
fn literal_hint(c: char) -> String {
    match c {
        '$' => format!("write expressions as `{{{{ ... }}}}`, without `$`: {EXAMPLE}"),
        '{' | '}' => format!("an expression is written in double braces, {EXAMPLE}"),
        _ => format!("keys go into store keys and file names: use {KEY_CHARS}"),
    }
}

/// A cursor over a template's characters.
struct Reader<'t> {
    chars: &'t [char],
    /// The offset of the next character.
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Whether the next characters are `text`.
    fn looking_at(&self, text: &str) -> bool {
        text.chars().enumerate().all(|(i, c)| self.chars.get(self.at + i) == Some(&c))
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// An error at the next character: `expected` and what is there instead.
    fn unexpected(&self, open: usize, expected: &str, hint: String) -> TemplateError {
        match self.peek() {
            Some(c) => TemplateError::new(self.at, format!("expected {expected}, found {}", show(c)), Some(hint)),
            None => unclosed(open),
        }
    }

    /// Reads `{{ hashFiles('glob', ...) }}`, the reader at its `{{`.
    fn expression(&mut self) -> Result<KeyPart, TemplateError> {
        let open = self.at;
        self.at += 2;
        self.skip_whitespace();
        if self.looking_at("}}") {
            return Err(TemplateError::new(
                open,
                "empty `{{ }}`",
                Some(format!("put a `{HASH_FILES}` call in it, {EXAMPLE}, or remove it")),
            ));
        }
        let name_start = self.at;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.')) {
            self.at += 1;
        }
        let call_hint = || format!("a `{{{{ }}}}` holds one `{HASH_FILES}('glob', ...)` call, {EXAMPLE}");
        if self.at == name_start {
            return Err(self.unexpected(open, "a function call in `{{ }}`", call_hint()));
        }
        let name: String = self.chars[name_start..self.at].iter().collect();
        if name != HASH_FILES {
            let allowed = format!("the one function a cache key can use is `{HASH_FILES}('glob', ...)`, {EXAMPLE}");
            // One candidate and a bounded name: the work is small enough
            // to need no share of a file's suggestion budget.
            let hint = match closest(&name, &[HASH_FILES], &mut 10_000) {
                Some(close) => format!("did you mean `{close}`? {allowed}"),
                None => allowed,
            };
            let shown = abbreviate(&name);
            return Err(TemplateError::new(name_start, format!("unknown function `{shown}`"), Some(hint)));
        }
        self.skip_whitespace();
        if self.peek() != Some('(') {
            return Err(self.unexpected(open, "`(` after `hashFiles`", call_hint()));
        }
        self.at += 1;
        self.skip_whitespace();
        if self.peek() == Some(')') {
            return Err(TemplateError::new(
                self.at,
                format!("`{HASH_FILES}()` needs at least one glob"),
                Some(format!("name the files whose contents the key depends on, {EXAMPLE}")),
            ));
        }
        let mut globs = Vec::new();
        loop {
            self.skip_whitespace();
            let glob = self.glob(open)?;
            if globs.len() == MAX_HASH_FILES_GLOBS {
                return Err(TemplateError::new(
                    glob.0,
                    format!("`{HASH_FILES}` takes at most {MAX_HASH_FILES_GLOBS} globs"),
                    Some("one glob can match many files, e.g. '**/Cargo.lock'".to_owned()),
                ));
            }
            globs.push(glob.1);
            self.skip_whitespace();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(')') => break,
                _ => {
                    let hint = "separate globs with `,` and close the list with `)`".to_owned();
                    return Err(self.unexpected(open, "`,` or `)` after a glob", hint));
                }
            }
        }
        self.at += 1;
        self.skip_whitespace();
        if !self.looking_at("}}") {
            return Err(self.unexpected(open, "`}}` after `hashFiles(...)`", call_hint()));
        }
        self.at += 2;
        Ok(KeyPart::HashFiles(globs))
    }

    /// Reads one quoted glob and checks it: its offset (at its opening
    /// quote) and text.
    fn glob(&mut self, open: usize) -> Result<(usize, String), TemplateError> {
        let quote_hint = || format!("quote each glob, as in `{HASH_FILES}('Cargo.lock', \"src/**/*.rs\")`");
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.unexpected(open, "a quoted glob", quote_hint())),
        };
        let quote_at = self.at;
        let start = quote_at + 1;
        let Some(length) = self.chars[start..].iter().position(|&c| c == quote) else {
            return Err(TemplateError::new(
                quote_at,
                format!("the quote {} is never closed", show(quote)),
                Some(quote_hint()),
            ));
        };
        self.at = start + length + 1;
        let glob: String = self.chars[start..start + length].iter().collect();
        let shown = abbreviate(&glob);
        let inside = "hashFiles reads files in the workspace: write globs relative to it, e.g. 'Cargo.lock' or \
             '**/package-lock.json'";
        if glob.trim().is_empty() {
            let hint = "name the files the key depends on, e.g. 'Cargo.lock' or '**/*.lock'".to_owned();
            return Err(TemplateError::new(quote_at, "empty glob in `hashFiles`", Some(hint)));
        }
        if glob.starts_with(['/', '~', '\\']) {
            return Err(TemplateError::new(
                start,
                format!("the glob `{shown}` is not inside the workspace"),
                Some(inside.to_owned()),
            ));
        }
        if glob.split(['/', '\\']).any(|part| part == "..") {
            return Err(TemplateError::new(
                start,
                format!("the glob `{shown}` leaves the workspace with `..`"),
                Some(inside.to_owned()),
            ));
        }
        Ok((quote_at, glob))
    }
}

/// The error for a `{{` at `open` that is never closed.
fn unclosed(open: usize) -> TemplateError {
    TemplateError::new(open, "`{{` is never closed", Some(format!("close the expression with `}}}}`, {EXAMPLE}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(text: &str) -> KeyPart {
        KeyPart::Literal(text.to_owned())
    }

    fn hash(globs: &[&str]) -> KeyPart {
        KeyPart::HashFiles(globs.iter().map(|g| (*g).to_owned()).collect())
    }

    #[test]
    fn templates_read_into_parts() {
        let cases: Vec<(&str, Vec<KeyPart>)> = vec![
            ("v1", vec![lit("v1")]),
            ("cargo-{{ hashFiles('Cargo.lock') }}", vec![lit("cargo-"), hash(&["Cargo.lock"])]),
            ("{{hashFiles(\"a\")}}", vec![hash(&["a"])]),
            (
                "deps-{{  hashFiles ( 'a/**/*.lock' ,\"b\",'c d' )  }}-v2",
                vec![lit("deps-"), hash(&["a/**/*.lock", "b", "c d"]), lit("-v2")],
            ),
            ("{{ hashFiles('x') }}{{ hashFiles('y}}') }}", vec![hash(&["x"]), hash(&["y}}"])]),
            ("a.b_c-D9", vec![lit("a.b_c-D9")]),
            ("{{ hashFiles(\"it's\", 'say \"hi\"') }}", vec![hash(&["it's", "say \"hi\""])]),
        ];
        for (text, parts) in cases {
            let template = parse_template(text).unwrap_or_else(|err| panic!("{text}: {err:?}"));
            assert_eq!(template, KeyTemplate { text: text.to_owned(), parts }, "{text}");
        }
    }

    #[test]
    fn bad_templates_say_where_and_why() {
        let many_parts = "{{ hashFiles('a') }}".repeat(MAX_CACHE_KEY_EXPRESSIONS + 1);
        let many_globs = format!("{{{{ hashFiles({}'q') }}}}", "'g', ".repeat(MAX_HASH_FILES_GLOBS));
        let too_long = "k".repeat(MAX_CACHE_KEY_LEN + 1);
        // (template, offset, message, hint)
        let cases: Vec<(&str, usize, &str, &str)> = vec![
            ("", 0, "it is empty", "e.g."),
            (&too_long, 0, "it has 513 characters, over the limit of 512", "hashFiles('a', 'b', ...)"),
            ("cargo-{{ hashFile('Cargo.lock') }}", 9, "unknown function `hashFile`", "did you mean `hashFiles`?"),
            ("{{ hashfiles('a') }}", 3, "unknown function `hashfiles`", "did you mean `hashFiles`?"),
            ("os-{{ runner.os }}", 6, "unknown function `runner.os`", "the one function a cache key can use"),
            ("k-{{ hashFiles('a')", 2, "`{{` is never closed", "close the expression with `}}`"),
            ("k-{{ hashFiles(", 2, "never closed", "`}}`"),
            ("k-{{", 2, "never closed", "`}}`"),
            ("k-}}", 2, "`}}` closes no `{{`", "double braces"),
            ("k-{{ }}", 2, "empty `{{ }}`", "put a `hashFiles` call in it"),
            ("k-{{ hashFiles() }}", 15, "`hashFiles()` needs at least one glob", "e.g."),
            ("k-{{ hashFiles }}", 15, "expected `(` after `hashFiles`, found `}`", "one `hashFiles('glob', ...)`"),
            ("k-{{ hashFiles(a) }}", 15, "expected a quoted glob, found `a`", "quote each glob"),
            ("k-{{ hashFiles('a',) }}", 19, "expected a quoted glob, found `)`", "quote each glob"),
            ("k-{{ hashFiles('a' 'b') }}", 19, "expected `,` or `)` after a glob, found `'`", "separate globs"),
            ("k-{{ hashFiles('a') x }}", 20, "expected `}}` after `hashFiles(...)`, found `x`", "one `hashFiles"),
            ("k-{{ hashFiles('a) }}", 15, "the quote `'` is never closed", "quote each glob"),
            ("k-{{ hashFiles('') }}", 15, "empty glob in `hashFiles`", "name the files"),
            ("k-{{ hashFiles('/etc/passwd') }}", 16, "the glob `/etc/passwd` is not inside the workspace", "relative"),
            ("k-{{ hashFiles('~/x') }}", 16, "the glob `~/x` is not inside the workspace", "relative"),
            ("k-{{ hashFiles('a', 'b/../../c') }}", 21, "the glob `b/../../c` leaves the workspace", "relative"),
            ("k-{{ 'a' }}", 5, "expected a function call in `{{ }}`, found `'`", "one `hashFiles"),
            ("cargo {{ hashFiles('a') }}", 5, "the character ' ' is not allowed", "letters, digits"),
            ("cargo-${{ hashFiles('a') }}", 6, "the character `$` is not allowed", "without `$`"),
            ("cargo-{ hashFiles('a') }", 6, "the character `{` is not allowed", "double braces"),
            ("cache/ü", 5, "the character `/` is not allowed", "store keys and file names"),
            (&many_parts, 160, "it has more than 8 `{{ }}` expressions", "several globs"),
            (&many_globs, 93, "`hashFiles` takes at most 16 globs", "**/Cargo.lock"),
        ];
        for (text, offset, message, hint) in cases {
            let err = parse_template(text).expect_err(text);
            assert_eq!(err.offset, offset, "{text}: {err:?}");
            assert!(err.message.contains(message), "{text}: {err:?}");
            assert!(err.hint.as_deref().is_some_and(|h| h.contains(hint)), "{text}: {err:?}");
            assert_eq!(err.to_string(), err.message);
        }
    }

    #[test]
    fn keys_are_checked() {
        let longest = "k".repeat(MAX_CACHE_KEY_LEN);
        for key in ["a", "cargo-", "Cargo.lock_v2-0123456789", &longest] {
            assert_eq!(key_problem(key), None, "{key}");
        }
        let too_long = "k".repeat(MAX_CACHE_KEY_LEN + 1);
        let cases = [
            ("", "may not be empty"),
            (&too_long, "at most 512 characters, this one has 513"),
            ("cargo key", "the character ' ' is not allowed in a cache key (at character 6)"),
            ("a/b", "the character `/` is not allowed"),
            ("über", "the character `ü` is not allowed in a cache key (at character 1)"),
            ("a\nb", "the character '\\n' is not allowed"),
        ];
        for (key, problem) in cases {
            let got = key_problem(key).unwrap_or_else(|| panic!("{key:?} passed"));
            assert!(got.contains(problem), "{key:?}: {got}");
        }
    }

    #[test]
    fn templates_render_with_the_callers_hashes() {
        let template = parse_template("cargo-{{ hashFiles('Cargo.lock', 'x/*') }}-{{ hashFiles('y') }}").unwrap();
        let mut calls = Vec::new();
        let key = template.render(&mut |globs| {
            calls.push(globs.to_vec());
            Ok(format!("h{}", globs.len()))
        });
        assert_eq!(key.as_deref(), Ok("cargo-h2-h1"));
        assert_eq!(calls, [vec!["Cargo.lock".to_owned(), "x/*".to_owned()], vec!["y".to_owned()]]);

        let failed = template.render(&mut |_| Err("no files match".to_owned())).unwrap_err();
        assert_eq!(
            failed,
            "cache key `cargo-{{ hashFiles('Cargo.lock', 'x/*') ...`: hashFiles('Cargo.lock', 'x/*'): no files match"
        );

        let bad = template.render(&mut |_| Ok("a b".to_owned())).unwrap_err();
        assert!(bad.contains("renders to `cargo-a b-a b`, which is not a valid key: the character ' '"), "{bad}");
        let long = template.render(&mut |_| Ok("h".repeat(10 * MAX_CACHE_KEY_LEN))).unwrap_err();
        assert!(long.contains("at most 512 characters"), "{long}");
        let empty = parse_template("{{ hashFiles('a') }}").unwrap().render(&mut |_| Ok(String::new())).unwrap_err();
        assert!(empty.contains("may not be empty"), "{empty}");

        let literal = parse_template("v1").unwrap();
        assert_eq!(literal.render(&mut |_| unreachable!()), Ok("v1".to_owned()));
    }
}
