//! [`set_artifact`]: a desired-state file given a new `artifact`, the rest
//! of its text kept byte for byte, as image update automation commits it.
//!
//! The file is read twice: checked as a whole ([`parse_service_file`]),
//! then as a tree with positions ([`crate::yaml`]) to find where the
//! artifact's value is written. Its end is found from the text: the
//! closing `}` of a flow mapping, or the last line of a block mapping
//! before the next top-level key (or the end of the document). The
//! rewritten file is checked again and must read as the same file but for
//! the artifact, so a shape this module does not foresee is refused
//! rather than written wrong.

use crate::app::{AppArtifact, ServiceFile, parse_service_file};
use crate::yaml::{self, Kind, Node, Pos, ScalarType};
use crate::{Diagnostic, PipelineError};

/// The key whose value is replaced.
const KEY: &str = "artifact";
const FLOW_HINT: &str = "write the artifact as a mapping, `artifact: {run: 42, job: build, path: dist/app.tar.gz}` or as a block \
     under `artifact:`, without anchors, aliases or tags";

/// `text`, the desired-state file `file`, with the value of its top-level
/// `artifact` replaced by `{run: RUN, job: JOB, path: PATH, sha256: SHA}`
/// (each value in single quotes only when YAML would read it otherwise),
/// and every other byte as it was: comments, the other keys, their order,
/// line endings (`\n` or `\r\n`) and the trailing newline.
///
/// - A flow mapping (`artifact: {...}`, on one line or several) is
///   replaced between its braces, so what is around it stays, such as a
///   comment after it.
/// - A block mapping (`artifact:` and its keys on the lines below) becomes
///   the flow mapping on the `artifact:` line; a comment on that line is
///   kept after it. The block's lines go, with the comments among them
///   and at the end of its last line; comment and blank lines after its
///   last line are kept, as they may be about what follows.
///
/// The file must be a good desired-state file ([`parse_service_file`]'s
/// diagnostics when it is not, which covers a file without `artifact`),
/// written with `\n` or `\r\n` line endings (a lone `\r` is refused), its
/// artifact written plainly: not through an alias, nor with an anchor or
/// tag. The result is checked in turn: a new artifact that is wrong (run
/// 0, a bad job name or path, a sha256 that is not 64 lower-case hex
/// digits) gets the checker's diagnostics, which point into the rewritten
/// text, at the `artifact:` line (on the same line as in `text`). An
/// update's `job` that is not written follows the artifact's
/// ([`crate::app::UpdateSpec::job`]).
pub fn set_artifact(
    file: &str,
    text: &str,
    run: u64,
    job: &str,
    path: &str,
    sha256: &str,
) -> Result<String, PipelineError> {
    let old = parse_service_file(file, text)?;
    let refuse = |pos: Pos, message: String, hint: &str| PipelineError {
        diagnostics: vec![Diagnostic {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            message,
            hint: Some(hint.to_owned()),
        }],
    };
    if let Some(at) = text.match_indices('\r').map(|(at, _)| at).find(|at| text.as_bytes().get(at + 1) != Some(&b'\n'))
    {
        return Err(refuse(
            pos_of(text, at),
            "the file ends a line with a carriage return alone".to_owned(),
            "end lines with `\\n` or `\\r\\n`",
        ));
    }
    let root = yaml::load(text).map_err(|err| refuse(err.pos, err.message, "the file read as YAML before"))?;
    let Kind::Map(top) = &root.kind else {
        return Err(refuse(root.pos, "the file is not a mapping".to_owned(), FLOW_HINT));
    };
    let Some(at) = top.iter().position(|(key, _)| key.scalar_text() == Some(KEY)) else {
        return Err(refuse(root.pos, format!("the file has no `{KEY}`"), FLOW_HINT));
    };
    let (key, value) = &top[at];
    let next = top.get(at + 1).map(|(key, _)| key.pos);
    let new_value = format!(
        "{{run: {run}, job: {}, path: {}, sha256: {}}}",
        flow_scalar(job),
        flow_scalar(path),
        flow_scalar(sha256)
    );
    let written = replace(text, key, value, next, &new_value).map_err(|message| {
        refuse(value.pos, format!("cannot rewrite the artifact of the file: {message}"), FLOW_HINT)
    })?;
    let new = parse_service_file(file, &written)?;
    let asked = matches!(&new.artifact, AppArtifact::Run { run: r, job: j, sha256: Some(s), .. }
        if *r == run && j == job && s == sha256);
    if !asked || but_artifact(&new) != but_artifact(&old) {
        return Err(refuse(
            key.pos,
            "rewriting the artifact of the file would change more than its artifact".to_owned(),
            FLOW_HINT,
        ));
    }
    Ok(written)
}

/// `file` without what a new artifact changes: its artifact, and the job
/// of its update, which follows the artifact's when not written.
fn but_artifact(file: &ServiceFile) -> ServiceFile {
    let mut file = file.clone();
    file.artifact = AppArtifact::Url { url: String::new(), sha256: String::new() };
    if let Some(update) = &mut file.update {
        update.job.clear();
    }
    file
}

/// `text` with the value of `key` (a top-level key, followed by the key at
/// `next` if any) replaced by `new_value`, or why it cannot be.
fn replace(text: &str, key: &Node, value: &Node, next: Option<Pos>, new_value: &str) -> Result<String, String> {
    let lost = || "its position is not in the file".to_owned();
    let key_at = offset(text, key.pos).ok_or_else(lost)?;
    let value_at = offset(text, value.pos).ok_or_else(lost)?;
    // Where the next top-level key's line starts: a block mapping ends
    // before it.
    let limit = match next {
        Some(pos) => line_start(text, offset(text, pos).ok_or_else(lost)?),
        None => text.len(),
    };
    let colon = after_colon(text, key_at).ok_or_else(|| format!("`{KEY}` is not followed by `:`"))?;
    if value_at < colon || value_at >= limit {
        return Err("it is written through an alias (`*name`)".to_owned());
    }
    let flow = text[value_at..].starts_with('{');
    let end = if flow {
        flow_end(text, value_at).ok_or("its closing `}` was not found")?
    } else {
        block_end(text, value_at, limit)
    };
    if value.pos.line == key.pos.line {
        if !flow {
            return Err("its value does not start with `{`".to_owned());
        }
        // Anything between the colon and the brace (spaces, an anchor)
        // stays, as does what follows the brace.
        return Ok([&text[..value_at], new_value, &text[end..]].concat());
    }
    // The value starts on a later line: it moves up to the key's line,
    // ahead of that line's comment, if any.
    let key_line_rest = &text[colon..line_end(text, colon)];
    let rest = key_line_rest.trim_start_matches([' ', '\t']);
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(format!("`{KEY}:` is followed by `{}` on its line", yaml::abbreviate(rest)));
    }
    Ok([&text[..colon], " ", new_value, key_line_rest, &text[end..]].concat())
}

/// Where the line break of the line holding `at` starts (its `\r\n` or
/// `\n`), or the end of `text`.
fn line_end(text: &str, at: usize) -> usize {
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    if text[..end].ends_with('\r') { end - 1 } else { end }
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// The byte offset of `pos` (a line and a column in characters, as
/// [`crate::yaml`] counts them: without a byte order mark) in `text`.
fn offset(text: &str, pos: Pos) -> Option<usize> {
    let mut start = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    for _ in 1..pos.line {
        start += text[start..].find('\n')? + 1;
    }
    let line = &text[start..line_end(text, start)];
    let column = line.char_indices().map(|(i, _)| i).chain([line.len()]).nth(pos.column.checked_sub(1)?)?;
    Some(start + column)
}

/// The position of the byte `at` of `text`, counting lines by `\n`.
fn pos_of(text: &str, at: usize) -> Pos {
    let start = line_start(text, at);
    Pos { line: text[..at].matches('\n').count() + 1, column: text[start..at].chars().count() + 1 }
}

/// Just after the `:` that follows the key written at `at`: the key
/// plain, or in single or double quotes.
fn after_colon(text: &str, at: usize) -> Option<usize> {
    let rest = &text[at..];
    let key_len = [KEY.to_owned(), format!("'{KEY}'"), format!("\"{KEY}\"")]
        .into_iter()
        .find(|written| rest.starts_with(written.as_str()))?
        .len();
    let after_key = &rest[key_len..];
    let spaces = after_key.len() - after_key.trim_start_matches([' ', '\t']).len();
    after_key[spaces..].starts_with(':').then_some(at + key_len + spaces + 1)
}

/// Just after the flow collection that starts at `start` (its `{`): past
/// its closing bracket, reading quoted scalars and comments as YAML does.
fn flow_end(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // The last character before this one outside quotes and whitespace: a
    // quote opens a scalar only where a scalar may start.
    let mut last = ' ';
    let mut blank_before = true;
    let mut chars = text[start..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => {
                if chars.next_if(|&(_, c)| c == '\'').is_none() {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' if matches!(last, '{' | '[' | ',' | ':' | '?') => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(start + i + 1);
                    }
                }
                '#' if blank_before => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
                _ => {}
            },
        }
        blank_before = c.is_whitespace();
        if quote.is_none() && !c.is_whitespace() {
            last = c;
        }
    }
    None
}

/// The end of a block mapping that starts at `start` and ends before
/// `limit`: the end of its last line that is not blank or a comment (nor a
/// document marker), before that line's break.
fn block_end(text: &str, start: usize, limit: usize) -> usize {
    let mut end = line_end(text, start);
    let mut at = end;
    while at < limit {
        let line_at = text[at..limit].find('\n').map_or(limit, |i| at + i + 1);
        let line = text[at..line_at].trim();
        if !(line.is_empty() || line.starts_with('#') || line == "...") {
            end = line_end(text, at);
        }
        at = line_at;
    }
    end
}

/// `value` as a scalar of a flow mapping: as it is when YAML reads it back
/// as the same string, else in single quotes.
fn flow_scalar(value: &str) -> String {
    let reads_back = yaml::load(&format!("{{v: {value}}}")).is_ok_and(|root| match &root.kind {
        Kind::Map(map) => match map.as_slice() {
            [(_, v)] => matches!(&v.kind, Kind::Scalar(s) if s.ty == ScalarType::Str && s.text == value),
            _ => false,
        },
        _ => false,
    });
    if reads_back { value.to_owned() } else { format!("'{}'", value.replace('\'', "''")) }
}
