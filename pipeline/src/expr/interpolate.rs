//! `${{ }}` in strings: a string split into its literal text and the
//! expressions in it, each read and checked like a condition's (without the
//! status functions). Offsets are into the whole string, so the checker can
//! point at the very character in the file.

use super::{Expr, ExprError, SUGGESTION_BUDGET, Scope, parser};

/// One part of a string with `${{ }}` in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text that stands for itself, starting at `offset` (in characters).
    Literal { offset: usize, text: String },
    /// A `${{ expression }}` whose `${{` is at `offset`.
    Expr { offset: usize, expr: Expr },
}

/// Splits `text` into literal text and `${{ }}` expressions, reading each
/// expression against `scope` (in which the status functions are never
/// allowed). The first problem is the error, with its offset into `text`.
pub fn interpolations(text: &str, scope: &Scope<'_>) -> Result<Vec<Piece>, ExprError> {
    interpolations_with_budget(text, scope, &mut { SUGGESTION_BUDGET })
}

/// `text` with each `${{ }}` replaced by its value in `ctx`, as a step or
/// an `env` value gets it. The names were checked at submit, so they are
/// not checked again; text without `${{` comes back as it is.
pub fn expand(text: &str, ctx: &dyn super::Context) -> Result<String, ExprError> {
    if !text.contains("${{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for piece in split(text, None, &mut 0)? {
        match piece {
            Piece::Literal { text, .. } => out.push_str(&text),
            Piece::Expr { expr, .. } => out.push_str(&expr.eval(ctx).to_string()),
        }
    }
    Ok(out)
}

/// [`interpolations`], spending `budget` on suggestions.
pub(crate) fn interpolations_with_budget(
    text: &str,
    scope: &Scope<'_>,
    budget: &mut usize,
) -> Result<Vec<Piece>, ExprError> {
    let scope = Scope { allow_status: false, ..*scope };
    split(text, Some(&scope), budget)
}

/// Splits `text`, reading expressions against `scope` as it is.
pub(super) fn split(text: &str, scope: Option<&Scope<'_>>, budget: &mut usize) -> Result<Vec<Piece>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut literal_start = 0;
    let mut at = 0;
    while at < chars.len() {
        if !(chars[at] == '$' && chars.get(at + 1) == Some(&'{') && chars.get(at + 2) == Some(&'{')) {
            if literal.is_empty() {
                literal_start = at;
            }
            literal.push(chars[at]);
            at += 1;
            continue;
        }
        let open = at;
        let start = at + 3;
        let end = closing(&chars, start).ok_or_else(|| {
            ExprError::new(
                open,
                "`${{` is never closed",
                Some(
                    "close the expression with `}}`; a `'` in it starts a string, which must be closed too".to_owned(),
                ),
            )
        })?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal { offset: literal_start, text: std::mem::take(&mut literal) });
        }
        let inner: String = chars[start..end].iter().collect();
        if inner.trim().is_empty() {
            return Err(ExprError::new(
                open,
                "empty `${{ }}`",
                Some("put an expression in it, e.g. `${{ drover.branch }}`, or remove it".to_owned()),
            ));
        }
        let expr =
            parser::parse(&inner, scope, budget).map_err(|err| ExprError { offset: start + err.offset, ..err })?;
        pieces.push(Piece::Expr { offset: open, expr });
        at = end + 2;
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal { offset: literal_start, text: literal });
    }
    Ok(pieces)
}

/// The offset of the first `}}` at or after `from` that is outside a
/// string in single quotes (`''` in one closes and reopens it, which comes
/// to the same).
fn closing(chars: &[char], from: usize) -> Option<usize> {
    let mut quoted = false;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\'' => quoted = !quoted,
            '}' if !quoted && chars.get(i + 1) == Some(&'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}
