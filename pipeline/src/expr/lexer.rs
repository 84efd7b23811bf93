//! Characters into tokens, each with the offset (in characters) it starts
//! at. Mistakes that show in one character or two (`=` for `==`, a string
//! in double quotes, a quote never closed) are refused here, with a hint.

use super::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Str(String),
    Num(f64),
    /// A name, a keyword (`true`, `false`, `null`), or a segment after `.`.
    Word(String),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    /// Where it starts, in characters.
    pub offset: usize,
}

impl Tok {
    /// The token as a message names it: "found ...".
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Str(s) => format!("the string '{}'", crate::yaml::abbreviate(s)),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Word(w) => format!("`{}`", crate::yaml::abbreviate(w)),
            Tok::Dot => "`.`".to_owned(),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::LBracket => "`[`".to_owned(),
            Tok::RBracket => "`]`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Eq => "`==`".to_owned(),
            Tok::Ne => "`!=`".to_owned(),
            Tok::Lt => "`<`".to_owned(),
            Tok::Le => "`<=`".to_owned(),
            Tok::Gt => "`>`".to_owned(),
            Tok::Ge => "`>=`".to_owned(),
            Tok::And => "`&&`".to_owned(),
            Tok::Or => "`||`".to_owned(),
            Tok::Not => "`!`".to_owned(),
            Tok::End => "the end of the expression".to_owned(),
        }
    }
}

const QUOTE_HINT: &str = "strings are written in single quotes, e.g. 'main'; write '' for a quote inside one";

/// The tokens of `chars`, ending with [`Tok::End`] at `chars.len()`.
pub(super) fn tokens(chars: &[char]) -> Result<Vec<Token>, ExprError> {
    let mut out: Vec<Token> = Vec::new();
    let mut at = 0;
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        let next = chars.get(at + 1).copied();
        let after_dot = out.last().is_some_and(|t| t.tok == Tok::Dot);
        let (tok, length) = match c {
            // After `.` comes a segment, which may start with a digit
            // (`needs.2nd-stage.result`).
            _ if after_dot && is_word(c) => {
                let length = chars[at..].iter().take_while(|&&c| is_word(c)).count();
                (Tok::Word(chars[at..at + length].iter().collect()), length)
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                let length = chars[at..].iter().take_while(|&&c| is_word(c)).count();
                (Tok::Word(chars[at..at + length].iter().collect()), length)
            }
            '0'..='9' => number(chars, at)?,
            '-' if next.is_some_and(|c| c.is_ascii_digit()) => number(chars, at)?,
            '\'' => string(chars, at)?,
            '"' => {
                return Err(ExprError::new(at, "strings are written in single quotes", Some(QUOTE_HINT.to_owned())));
            }
            '.' => (Tok::Dot, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            ',' => (Tok::Comma, 1),
            '=' if next == Some('=') => (Tok::Eq, 2),
            '!' if next == Some('=') => (Tok::Ne, 2),
            '!' => (Tok::Not, 1),
            '<' if next == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '&' if next == Some('&') => (Tok::And, 2),
            '|' if next == Some('|') => (Tok::Or, 2),
            // `=<` and `=>` for `<=` and `>=`.
            '=' if matches!(next, Some('<' | '>')) => {
                let op = next.unwrap_or('<');
                return Err(ExprError::new(at, "`=` is not an operator", Some(format!("write `{op}=`"))));
            }
            '=' => return Err(ExprError::new(at, "`=` is not an operator", Some("compare with `==`".to_owned()))),
            '&' | '|' => {
                return Err(ExprError::new(
                    at,
                    format!("`{c}` is not an operator"),
                    Some(format!("write `{c}{c}` for {}", if c == '&' { "and" } else { "or" })),
                ));
            }
            '$' if next == Some('{') => {
                return Err(ExprError::new(
                    at,
                    "`${{` inside an expression",
                    Some("`${{ }}` goes around a whole expression, once".to_owned()),
                ));
            }
            _ => {
                let shown = if c.is_whitespace() || c.is_control() { format!("{c:?}") } else { format!("`{c}`") };
                return Err(ExprError::new(
                    at,
                    format!("unexpected character {shown}"),
                    Some(
                        "an expression is made of names, 'strings', numbers, `(`, `)` and the operators \
                          `==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`, `!`"
                            .to_owned(),
                    ),
                ));
            }
        };
        out.push(Token { tok, offset: start });
        at += length;
    }
    out.push(Token { tok: Tok::End, offset: chars.len() });
    Ok(out)
}

/// `-?[0-9]+(\.[0-9]+)?` at `at`, and its length.
fn number(chars: &[char], at: usize) -> Result<(Tok, usize), ExprError> {
    let digits = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut end = at + usize::from(chars[at] == '-');
    end += digits(end);
    if chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
        end += 1 + digits(end + 1);
    }
    let text: String = chars[at..end].iter().collect();
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((Tok::Num(n), end - at)),
        _ => Err(ExprError::new(at, format!("the number {} is too large", crate::yaml::abbreviate(&text)), None)),
    }
}

/// A string in single quotes at `at` (`''` stands for a quote), and its
/// length with the quotes.
fn string(chars: &[char], at: usize) -> Result<(Tok, usize), ExprError> {
    let mut text = String::new();
    let mut i = at + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(ExprError::new(at, "this string is never closed", Some(QUOTE_HINT.to_owned())));
            }
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                text.push('\'');
                i += 2;
            }
            Some('\'') => return Ok((Tok::Str(text), i + 1 - at)),
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}
