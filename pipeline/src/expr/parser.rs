//! Tokens into a checked tree, by recursive descent, one function per
//! level of the grammar (see the module's header). Every context is checked
//! against the [`Scope`] as it is read (`names`), every function call,
//! comparison and argument against the types, and the nesting and the
//! number of nodes against their limits, so that the recursion here and in
//! evaluation stays bounded.

use super::lexer::{self, Tok, Token};
use super::names::Names;
use super::tree::{CompareOp, ContextRef, Function, Node};
use super::{Expr, ExprError, JobResult, Scope, Value};
use crate::check::suggest::closest;
use crate::yaml::abbreviate;
use crate::{MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES};

const EXAMPLE: &str = "e.g. `drover.branch == 'main'`";

/// Reads `text`. With no `scope`, names are not checked (an expression
/// read back from a stored pipeline was checked when it was submitted).
pub(super) fn parse(text: &str, scope: Option<&Scope<'_>>, budget: &mut usize) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ExprError::new(
            0,
            format!("it has {} bytes, over the limit of {MAX_EXPRESSION_BYTES} (1 KiB)", text.len()),
            Some("split it over several jobs or steps, or move the logic into a script".to_owned()),
        ));
    }
    let chars: Vec<char> = text.chars().collect();
    let tokens = lexer::tokens(&chars)?;
    if tokens.len() == 1 {
        return Err(ExprError::new(0, "the expression is empty", Some(EXAMPLE.to_owned())));
    }
    let mut parser = Parser { tokens, at: 0, scope, depth: 0, nodes: 0, budget };
    let root = parser.or()?;
    let token = parser.peek();
    match token.tok {
        Tok::End => {}
        Tok::RParen => return Err(ExprError::new(token.offset, "`)` closes no `(`", None)),
        ref other => {
            return Err(ExprError::new(
                token.offset,
                format!(
                    "expected an operator (`==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`) or the end, found {}",
                    other.describe()
                ),
                Some("text is written in single quotes, e.g. 'main'; join conditions with `&&` or `||`".to_owned()),
            ));
        }
    }
    let uses_status = root.node.uses_status();
    Ok(Expr { text: text.to_owned(), root: root.node, uses_status })
}

/// The type a part of an expression has, known before evaluating it:
/// contexts are strings (or null, which compares with anything), but for
/// `result`, whose type is known only once it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Null,
    Bool,
    Number,
    String,
    /// Any of them: `result`.
    Measured,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Bool => "a boolean",
            Ty::Number => "a number",
            Ty::String => "a string",
            Ty::Measured => "the measured value",
        }
    }
}

/// A part read: its tree, its type, and where it starts.
struct Parsed {
    node: Node,
    ty: Ty,
    offset: usize,
}

struct Parser<'s, 'b> {
    tokens: Vec<Token>,
    at: usize,
    scope: Option<&'s Scope<'s>>,
    /// How many `(`, `!` and calls enclose the part being read.
    depth: usize,
    nodes: usize,
    budget: &'b mut usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> &Token {
        // The last token is `End`, which is never consumed.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.at += 1;
        }
        token
    }

    /// Counts one more node, which starts at `offset`.
    fn count(&mut self, offset: usize) -> Result<(), ExprError> {
        self.nodes += 1;
        if self.nodes > MAX_EXPRESSION_NODES {
            return Err(ExprError::new(
                offset,
                format!("the expression has more than {MAX_EXPRESSION_NODES} parts"),
                Some("split it over several jobs or steps, or move the logic into a script".to_owned()),
            ));
        }
        Ok(())
    }

    /// Opens a level of nesting at `offset`.
    fn enter(&mut self, offset: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return Err(ExprError::new(
                offset,
                format!("the expression nests more than {MAX_EXPRESSION_DEPTH} deep"),
                Some("write it with fewer parentheses and `!`".to_owned()),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn or(&mut self) -> Result<Parsed, ExprError> {
        self.chain(Tok::Or, Parser::and, Node::Or)
    }

    fn and(&mut self) -> Result<Parsed, ExprError> {
        self.chain(Tok::And, Parser::comparison, Node::And)
    }

    /// `operand { op operand }`, as one node when there are several.
    fn chain(
        &mut self,
        op: Tok,
        operand: fn(&mut Self) -> Result<Parsed, ExprError>,
        node: fn(Vec<Node>) -> Node,
    ) -> Result<Parsed, ExprError> {
        let first = operand(self)?;
        if self.peek().tok != op {
            return Ok(first);
        }
        let offset = first.offset;
        let mut operands = vec![first.node];
        while self.peek().tok == op {
            self.advance();
            operands.push(operand(self)?.node);
        }
        self.count(offset)?;
        Ok(Parsed { node: node(operands), ty: Ty::Bool, offset })
    }

    fn comparison(&mut self) -> Result<Parsed, ExprError> {
        let left = self.unary()?;
        let Some(op) = compare_op(&self.peek().tok) else {
            return Ok(left);
        };
        let op_offset = self.advance().offset;
        let right = self.unary()?;
        if compare_op(&self.peek().tok).is_some() {
            let hint = if op.orders() {
                "join comparisons with `&&`, as in `result >= 5 && result <= 10`"
            } else {
                "join comparisons with `&&`, as in `a == 'x' && b == 'y'`"
            };
            return Err(ExprError::new(self.peek().offset, "comparisons do not chain", Some(hint.to_owned())));
        }
        if op.orders() {
            check_order(&left, &right, op, op_offset)?;
        } else {
            check_comparison(&left, &right, op_offset, op == CompareOp::Ne, self.budget)?;
        }
        self.count(left.offset)?;
        let node = Node::Compare { op, left: Box::new(left.node), right: Box::new(right.node) };
        Ok(Parsed { node, ty: Ty::Bool, offset: left.offset })
    }

    fn unary(&mut self) -> Result<Parsed, ExprError> {
        if self.peek().tok != Tok::Not {
            return self.primary();
        }
        let offset = self.advance().offset;
        self.enter(offset)?;
        let inner = self.unary()?;
        self.leave();
        self.count(offset)?;
        Ok(Parsed { node: Node::Not(Box::new(inner.node)), ty: Ty::Bool, offset })
    }

    fn primary(&mut self) -> Result<Parsed, ExprError> {
        let token = self.advance();
        let offset = token.offset;
        let (value, ty) = match token.tok {
            Tok::Str(s) => (Value::String(s), Ty::String),
            Tok::Num(n) => (Value::Number(n), Ty::Number),
            Tok::Word(word) => match word.as_str() {
                "true" => (Value::Bool(true), Ty::Bool),
                "false" => (Value::Bool(false), Ty::Bool),
                "null" => (Value::Null, Ty::Null),
                _ if self.peek().tok == Tok::LParen => return self.call(&word, offset),
                _ => return self.context(&word, offset),
            },
            Tok::LParen => {
                self.enter(offset)?;
                let inner = self.or()?;
                self.close(offset, "`)`", "`(` is never closed")?;
                self.leave();
                return Ok(Parsed { offset, ..inner });
            }
            other => {
                return Err(ExprError::new(
                    offset,
                    format!("expected a value, found {}", other.describe()),
                    Some(format!("a value is a context, a 'string', a number, a function call or `( )`, {EXAMPLE}")),
                ));
            }
        };
        self.count(offset)?;
        Ok(Parsed { node: Node::Literal(value), ty, offset })
    }

    /// Reads the `)` that closes the `(` at `open`; `expected` names what
    /// may come instead of what is there, `unclosed` says it is missing.
    fn close(&mut self, open: usize, expected: &str, unclosed: &str) -> Result<(), ExprError> {
        let token = self.advance();
        match token.tok {
            Tok::RParen => Ok(()),
            Tok::End => Err(ExprError::new(open, unclosed, Some("close it with `)`".to_owned()))),
            other => Err(ExprError::new(
                token.offset,
                format!("expected {expected}, found {}", other.describe()),
                Some("text is written in single quotes, e.g. 'main'; join conditions with `&&` or `||`".to_owned()),
            )),
        }
    }

    /// A call of `name` (at `offset`), the next token its `(`.
    fn call(&mut self, name: &str, offset: usize) -> Result<Parsed, ExprError> {
        let names: Vec<&str> = Function::ALL.iter().map(|(name, _, _)| *name).collect();
        let Some(&(_, function, arity)) = Function::ALL.iter().find(|(n, _, _)| *n == name) else {
            let list = "the functions are startsWith(a, b), contains(a, b), success(), failure(), always() and \
                        cancelled()";
            let hint = match closest(name, &names, self.budget) {
                Some(close) => format!("did you mean `{close}`? {list}"),
                None => list.to_owned(),
            };
            return Err(ExprError::new(offset, format!("unknown function `{}`", abbreviate(name)), Some(hint)));
        };
        if function.is_status() && self.scope.is_some_and(|scope| !scope.allow_status) {
            return Err(ExprError::new(
                offset,
                format!("`{name}()` is allowed only in `if:`"),
                Some("the status functions decide whether a job or step runs; in `${{ }}` they have no use".to_owned()),
            ));
        }
        let open = self.advance().offset;
        self.enter(open)?;
        let mut args = Vec::new();
        if self.peek().tok == Tok::RParen {
            self.advance();
        } else {
            loop {
                args.push(self.or()?);
                if self.peek().tok == Tok::Comma {
                    self.advance();
                    continue;
                }
                self.close(open, "`,` or `)`", &format!("the `(` of `{name}(` is never closed"))?;
                break;
            }
        }
        self.leave();
        let example = if function == Function::Contains {
            "e.g. `contains(drover.branch, 'hotfix')`".to_owned()
        } else if arity == 2 {
            "e.g. `startsWith(drover.branch, 'release/')`".to_owned()
        } else {
            format!("write `{name}()`")
        };
        if args.len() != arity {
            return Err(if arity == 0 {
                ExprError::new(args[0].offset, format!("`{name}()` takes no arguments"), Some(example))
            } else {
                let found = args.len();
                ExprError::new(offset, format!("`{name}` takes {arity} arguments, found {found}"), Some(example))
            });
        }
        for (i, arg) in args.iter().enumerate() {
            // `result` may be a string; another value reads as its text.
            if !matches!(arg.ty, Ty::String | Ty::Measured) {
                let which = if i == 0 { "first" } else { "second" };
                return Err(ExprError::new(
                    arg.offset,
                    format!("the {which} argument of `{name}` must be a string, found {}", arg.ty.describe()),
                    Some(example),
                ));
            }
        }
        self.count(offset)?;
        let node = Node::Call(function, args.into_iter().map(|arg| arg.node).collect());
        Ok(Parsed { node, ty: Ty::Bool, offset })
    }

    /// A context: `root` (at `offset`) and its keys, `.name` or `['name']`.
    fn context(&mut self, root: &str, offset: usize) -> Result<Parsed, ExprError> {
        let mut keys: Vec<(String, usize)> = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Dot => {
                    self.advance();
                    let token = self.advance();
                    match token.tok {
                        Tok::Word(name) => keys.push((name, token.offset)),
                        other => {
                            return Err(ExprError::new(
                                token.offset,
                                format!("expected a name after `.`, found {}", other.describe()),
                                None,
                            ));
                        }
                    }
                }
                Tok::LBracket => {
                    self.advance();
                    let token = self.advance();
                    let Tok::Str(name) = token.tok else {
                        return Err(ExprError::new(
                            token.offset,
                            format!("expected a name in quotes after `[`, found {}", token.tok.describe()),
                            Some("e.g. `needs['build.linux'].result`".to_owned()),
                        ));
                    };
                    keys.push((name, token.offset));
                    let close = self.advance();
                    if close.tok != Tok::RBracket {
                        return Err(ExprError::new(
                            close.offset,
                            format!("expected `]`, found {}", close.tok.describe()),
                            None,
                        ));
                    }
                }
                _ => break,
            }
        }
        let reference = Names { scope: self.scope, budget: self.budget }.resolve(root, offset, &keys)?;
        self.count(offset)?;
        let ty = if reference == ContextRef::Result { Ty::Measured } else { Ty::String };
        Ok(Parsed { node: Node::Context(reference), ty, offset })
    }
}

/// Refuses comparing values of types that are never equal, and a job's
/// result with a string no result is.
fn check_comparison(
    left: &Parsed,
    right: &Parsed,
    op_offset: usize,
    negated: bool,
    budget: &mut usize,
) -> Result<(), ExprError> {
    for (a, b) in [(left, right), (right, left)] {
        if let (Node::Context(ContextRef::NeedResult(job)), Node::Literal(Value::String(s))) = (&a.node, &b.node)
            && !JobResult::ALL.iter().any(|result| result.as_str() == s)
        {
            let names: Vec<&str> = JobResult::ALL.iter().map(|result| result.as_str()).collect();
            let list = "a result is 'success', 'failure', 'cancelled' or 'skipped'";
            let hint = match closest(s, &names, budget) {
                Some(close) => format!("did you mean '{close}'? {list}"),
                None => list.to_owned(),
            };
            let message = format!("`needs.{}.result` is never '{}'", abbreviate(job), abbreviate(s));
            return Err(ExprError::new(b.offset, message, Some(hint)));
        }
    }
    let (l, r) = (left.ty, right.ty);
    if l == r || [l, r].iter().any(|ty| matches!(ty, Ty::Null | Ty::Measured)) {
        return Ok(());
    }
    let hint = match (l, r) {
        // `!a == 'x'` reads as `(!a) == 'x'`.
        (Ty::Bool, _) if matches!(left.node, Node::Not(_)) => {
            "`!` applies before `==` and `!=`: write `a != 'x'`, or `!(a == 'x')`"
        }
        (Ty::String, Ty::Number) | (Ty::Number, Ty::String) => "context values are strings: quote the number, e.g. '1'",
        (Ty::String, Ty::Bool) | (Ty::Bool, Ty::String) => {
            "context values are strings: compare with a quoted one, e.g. 'true', or use the value alone, which is \
             true when it is not empty"
        }
        _ => "a number and a boolean are never equal",
    };
    let (op, outcome) = if negated { ("!=", "always differ") } else { ("==", "are never equal") };
    Err(ExprError::new(
        op_offset,
        format!("`{op}` compares {} with {}, which {outcome}", l.describe(), r.describe()),
        Some(hint.to_owned()),
    ))
}

/// The comparison operator `tok` is, if it is one.
fn compare_op(tok: &Tok) -> Option<CompareOp> {
    Some(match tok {
        Tok::Eq => CompareOp::Eq,
        Tok::Ne => CompareOp::Ne,
        Tok::Lt => CompareOp::Lt,
        Tok::Le => CompareOp::Le,
        Tok::Gt => CompareOp::Gt,
        Tok::Ge => CompareOp::Ge,
        _ => return None,
    })
}

/// Refuses ordering (`<`, `<=`, `>`, `>=`) a side whose type is known and
/// is not a number, which would make the comparison always false.
fn check_order(left: &Parsed, right: &Parsed, op: CompareOp, op_offset: usize) -> Result<(), ExprError> {
    let sides = [(left, "left"), (right, "right")];
    let Some((side, which)) = sides.into_iter().find(|(side, _)| !matches!(side.ty, Ty::Number | Ty::Measured)) else {
        return Ok(());
    };
    let op = op.as_str();
    let hint = match (side.ty, &side.node) {
        (Ty::Bool, Node::Not(_)) => format!("`!` applies before `{op}`: write `!(a {op} 1)`"),
        (Ty::String, Node::Context(_)) => {
            "context values are strings, which are not ordered: compare them with `==` or `!=`".to_owned()
        }
        (Ty::Null, _) => "null is never less or greater than anything: ask `== null`".to_owned(),
        _ => "`<`, `<=`, `>` and `>=` compare numbers, e.g. `result < 0.01`; compare other values with `==` or `!=`"
            .to_owned(),
    };
    Err(ExprError::new(
        op_offset,
        format!("`{op}` compares numbers only, and its {which} side is {}", side.ty.describe()),
        Some(hint),
    ))
}
