//! An untyped YAML tree in which every node knows its line and column.
//!
//! Deserializing straight into typed structs would stop at the first problem
//! and forget where values came from. The checker wants more: the position of
//! every key and value, the original spelling of numbers (so `VERSION: 1.10`
//! stays `1.10`), and every entry of a mapping including repeated keys, so it
//! can name both places. So we let serde-saphyr deserialize the document into
//! this small tree, with each node wrapped in [`serde_saphyr::Spanned`], and
//! check the tree by hand. A scalar also records how it is written (plain or
//! quoted on one line, a literal block, or otherwise), so that a problem
//! inside a string, such as a cache key's unknown function or a bad
//! `${{ }}` in a `run: |` script, can be pointed at exactly
//! (`Node::pos_at`).
//!
//! Tags other than YAML's own (`!!str`) are refused: Drover gives none a
//! meaning, and an unquoted expression that starts with `!` would otherwise
//! vanish into one (`if: !cancelled() && x` read as `x`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Spanned};

/// A 1-based line and column (in characters) in the pipeline file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_location(location: serde_saphyr::Location) -> Pos {
        if location == serde_saphyr::Location::UNKNOWN {
            return Pos::START;
        }
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(1);
        Pos { line: to_usize(location.line()), column: to_usize(location.column()) }
    }
}

/// A YAML node and where it starts.
#[derive(Debug)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    /// `null`, `~`, or nothing at all (as in `key:` with no value).
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in file order, including any repeated keys.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Scalar {
    /// A string's value, or the source spelling of a number or boolean.
    pub text: String,
    pub ty: ScalarType,
    /// How the value is written in the file, so that a problem at a
    /// character of it can be pointed at ([`Node::pos_at`]).
    pub written: Written,
}

/// How a scalar's value is written in the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Written {
    /// Without quotes, character for character, on one line.
    Plain,
    /// In single or double quotes, character for character between them, on
    /// one line.
    Quoted,
    /// Over several lines, each line of the value at the same column of
    /// consecutive lines of the file, character for character: a literal
    /// block (`|`). `lead` is the number of empty lines the value starts
    /// with, which are before where the scalar is said to start.
    Lines { lead: usize },
    /// Any other way: with escapes (`\"`, `''`), folded over several lines
    /// (plain, quoted or `>`). Its characters cannot be told apart in the
    /// file, only where it starts.
    Other,
}

impl Written {
    /// How `text` is written, given its `source`: the file's text of the
    /// scalar's span, when known.
    fn of(text: &str, source: Option<&str>, column: usize) -> Written {
        let Some(source) = source else {
            return Written::Other;
        };
        if source.contains(['\n', '\r']) {
            return Written::lines(text, source, column);
        }
        let quoted = |q: char| source.len() >= 2 && source.starts_with(q) && source.ends_with(q);
        if source == text {
            Written::Plain
        } else if (quoted('"') || quoted('\'')) && &source[1..source.len() - 1] == text {
            Written::Quoted
        } else {
            Written::Other
        }
    }
}

impl Written {
    /// How a value over several lines is written, given its `source` from
    /// where it starts (its first character, at `column`): [`Written::Lines`]
    /// when every line of it is in the file as it is, each after the same
    /// indentation, else [`Written::Other`].
    fn lines(text: &str, source: &str, column: usize) -> Written {
        let indent = column.saturating_sub(1);
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            // The line break that ends the value; nothing there to point at.
            lines.pop();
        }
        let lead = lines.iter().take_while(|line| line.is_empty()).count();
        let mut source_lines = source.split('\n');
        for (i, line) in lines.iter().enumerate().skip(lead) {
            let Some(written) = source_lines.next() else {
                return Written::Other;
            };
            let matches = if i == lead {
                written == *line
            } else if line.is_empty() {
                written.trim().is_empty()
            } else {
                written.len() == indent + line.len()
                    && written.bytes().take(indent).all(|b| b == b' ')
                    && &written[indent..] == *line
            };
            if !matches {
                return Written::Other;
            }
        }
        Written::Lines { lead }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarType {
    Str,
    Int(i128),
    Float,
    Bool,
}

impl Node {
    /// The text of a scalar of any type: numbers and booleans in their
    /// source spelling.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(scalar) => Some(&scalar.text),
            _ => None,
        }
    }

    /// Where the character at `offset` (counted in characters) of this
    /// scalar's value is in the file: exact when the value is written there
    /// character for character (on one line, or as a literal block), else
    /// where the scalar starts.
    pub fn pos_at(&self, offset: usize) -> Pos {
        let (skip, text, lead) = match &self.kind {
            Kind::Scalar(Scalar { written: Written::Plain, .. }) => (0, None, 0),
            Kind::Scalar(Scalar { written: Written::Quoted, .. }) => (1, None, 0),
            Kind::Scalar(Scalar { written: Written::Lines { lead }, text, .. }) => (0, Some(text), *lead),
            _ => return self.pos,
        };
        let Some(text) = text else {
            return Pos { line: self.pos.line, column: self.pos.column.saturating_add(skip).saturating_add(offset) };
        };
        // Each line of a literal block starts at the scalar's column.
        let (mut line, mut column) = (0, 0);
        for c in text.chars().take(offset) {
            if c == '\n' {
                (line, column) = (line + 1, 0);
            } else {
                column += 1;
            }
        }
        if line < lead {
            return self.pos;
        }
        Pos { line: self.pos.line + (line - lead), column: self.pos.column + column }
    }

    /// A short description of what this node is, for "found ..." messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".to_owned(),
            Kind::Scalar(Scalar { text, ty, .. }) => {
                let what = match ty {
                    ScalarType::Str => "string",
                    ScalarType::Int(_) => "integer",
                    ScalarType::Float => "number",
                    ScalarType::Bool => "boolean",
                };
                format!("{what} `{}`", abbreviate(text))
            }
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// Shortens `text` to one line of reasonable length for quoting in a message.
pub fn abbreviate(text: &str) -> String {
    const MAX: usize = 40;
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > MAX || line.len() < text.trim_end().len() {
        let short: String = line.chars().take(MAX).collect();
        format!("{short}...")
    } else {
        line.to_owned()
    }
}

/// A YAML syntax error, or anything else that made serde-saphyr give up.
#[derive(Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

/// Parses `text` as a single YAML document.
pub fn load(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        // Hand repeated keys to our visitor instead of failing on the first
        // one, so the checker can report each with the line of the original.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // Only `true` and `false` are booleans, as in YAML 1.2. Otherwise
        // `MODE: on` would silently become `MODE=true`.
        strict_booleans: true,
        // `.inf` and `.nan` are not numbers any pipeline needs; keeping them
        // as text lets an env value say `.inf` without an error.
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        // We report the position ourselves and never render snippets.
        with_snippet: false,
        // See the module's header: `if: !cancelled()` must not become a tag.
        reject_unsupported_tags: true,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(lower(raw, text)),
        Err(err) => Err(syntax_error(&err)),
    }
}

fn syntax_error(err: &serde_saphyr::Error) -> SyntaxError {
    // Wrappers only add context that we show differently (or not at all); the
    // message and location of the error inside are what the user needs.
    let mut inner = err;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    // The formatter's text may quote the input, which could hold control
    // characters; keep the diagnostic on one line.
    let message: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let hint = if message.contains("unsupported tag") {
        Some(
            "`!` starts a YAML tag, and Drover uses none; quote an expression that starts with `!`, as in \
             `if: \"!cancelled()\"`, or write it in `${{ }}`: `if: ${{ !cancelled() }}`"
                .to_owned(),
        )
    } else if message.contains("tabs") {
        Some("indent YAML with spaces; tabs are not allowed for indentation".to_owned())
    } else if message.contains("mapping values are not allowed") {
        Some(
            "a value that contains `: ` must be quoted, as in `run: \"echo a: b\"`, or written as a block: \
             `run: |` with the command on the next line, indented"
                .to_owned(),
        )
    } else {
        None
    };
    SyntaxError { pos: inner.location().or(err.location()).map_or(Pos::START, Pos::from_location), message, hint }
}

/// What serde-saphyr gives us, before we attach source text to scalars.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        // Only the spelling of such a number can matter to a pipeline.
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

/// Turns serde-saphyr's output into our tree.
///
/// Positions come from `defined`, not `referenced`: for a value reached
/// through an alias (`*anchor`) or a merge (`<<: *anchor`), that is where its
/// text is written, which is what a user has to edit. serde-saphyr's depth
/// budget bounds the recursion.
fn lower(raw: Spanned<Raw>, source: &str) -> Node {
    let location = raw.defined;
    // The file's text of the scalar, from its byte span: for a quoted
    // string, with its quotes.
    let span = location.span();
    let spanned = span
        .byte_offset()
        .zip(span.byte_len())
        .and_then(|(start, len)| {
            let start = usize::try_from(start).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            source.get(start..end)
        })
        .filter(|text| !text.is_empty());
    // The source spelling of a plain scalar.
    let spelling =
        |fallback: String| spanned.filter(|text| !text.starts_with(['*', '!', '&'])).map_or(fallback, str::to_owned);
    let scalar = |text: String, ty| {
        let column = Pos::from_location(location).column;
        let written = Written::of(&text, spanned, column);
        Kind::Scalar(Scalar { text, ty, written })
    };
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Str(text) => scalar(text, ScalarType::Str),
        Raw::Bool(b) => scalar(spelling(b.to_string()), ScalarType::Bool),
        Raw::Int(n) => scalar(spelling(n.to_string()), ScalarType::Int(n)),
        Raw::Float(x) => scalar(spelling(x.to_string()), ScalarType::Float),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|item| lower(item, source)).collect()),
        Raw::Map(entries) => {
            Kind::Map(entries.into_iter().map(|(k, v)| (lower(k, source), lower(v, source))).collect())
        }
    };
    Node { pos: Pos::from_location(location), kind }
}
