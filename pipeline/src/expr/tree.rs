//! The tree an expression is read into: evaluation, and printing back as
//! an expression with every compound part in parentheses, which shows how
//! it was read (and reads back as the same tree).

use std::fmt;

use super::{Context, DroverField, Status, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Literal(Value),
    Context(ContextRef),
    Not(Box<Node>),
    /// `left op right`.
    Compare {
        op: CompareOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    /// `a && b && ...`: two or more operands.
    And(Vec<Node>),
    /// `a || b || ...`: two or more operands.
    Or(Vec<Node>),
    Call(Function, Vec<Node>),
}

/// A context value an expression reads.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ContextRef {
    Drover(DroverField),
    Env(String),
    Matrix(String),
    NeedResult(String),
    /// `result`: the measured value of an analysis metric.
    Result,
}

/// A comparison's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    /// The operator as written.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    /// Whether it orders numbers (`<`, `<=`, `>`, `>=`), rather than
    /// telling values equal.
    pub(super) fn orders(self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::Ne)
    }

    /// `left op right`: `==` and `!=` on any values; the others only on two
    /// numbers, and false otherwise (and with NaN, as IEEE 754 has it).
    fn apply(self, left: &Value, right: &Value) -> bool {
        let numbers = match (left, right) {
            (Value::Number(l), Value::Number(r)) => Some((*l, *r)),
            _ => None,
        };
        match (self, numbers) {
            (CompareOp::Eq, _) => left == right,
            (CompareOp::Ne, _) => left != right,
            (_, None) => false,
            (CompareOp::Lt, Some((l, r))) => l < r,
            (CompareOp::Le, Some((l, r))) => l <= r,
            (CompareOp::Gt, Some((l, r))) => l > r,
            (CompareOp::Ge, Some((l, r))) => l >= r,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    StartsWith,
    Contains,
    Success,
    Failure,
    Always,
    Cancelled,
}

impl Function {
    /// Every function: its name and how many arguments it takes.
    pub(super) const ALL: [(&'static str, Function, usize); 6] = [
        ("startsWith", Function::StartsWith, 2),
        ("contains", Function::Contains, 2),
        ("success", Function::Success, 0),
        ("failure", Function::Failure, 0),
        ("always", Function::Always, 0),
        ("cancelled", Function::Cancelled, 0),
    ];

    pub(super) fn name(self) -> &'static str {
        Function::ALL.iter().find(|(_, f, _)| *f == self).map_or("", |(name, _, _)| name)
    }

    /// Whether it reads the job's or step's status.
    pub(super) fn is_status(self) -> bool {
        matches!(self, Function::Success | Function::Failure | Function::Always | Function::Cancelled)
    }
}

impl Node {
    /// The value of this node. The recursion follows the tree, whose depth
    /// the parser bounds.
    pub(super) fn eval(&self, ctx: &dyn Context) -> Value {
        match self {
            Node::Literal(value) => value.clone(),
            Node::Context(reference) => {
                let value = match reference {
                    // The one context that is not a string.
                    ContextRef::Result => return ctx.result().unwrap_or(Value::Null),
                    ContextRef::Drover(field) => ctx.drover(*field),
                    ContextRef::Env(name) => ctx.env(name),
                    ContextRef::Matrix(name) => ctx.matrix(name),
                    ContextRef::NeedResult(job) => ctx.need_result(job).map(|r| r.as_str().to_owned()),
                };
                value.map_or(Value::Null, Value::String)
            }
            Node::Not(inner) => Value::Bool(!inner.eval(ctx).is_truthy()),
            Node::Compare { op, left, right } => Value::Bool(op.apply(&left.eval(ctx), &right.eval(ctx))),
            Node::And(operands) => Value::Bool(operands.iter().all(|o| o.eval(ctx).is_truthy())),
            Node::Or(operands) => Value::Bool(operands.iter().any(|o| o.eval(ctx).is_truthy())),
            Node::Call(function, args) => Value::Bool(match function {
                Function::StartsWith => text(&args[0], ctx).starts_with(&text(&args[1], ctx)),
                Function::Contains => text(&args[0], ctx).contains(&text(&args[1], ctx)),
                Function::Success => ctx.status() == Status::Succeeded,
                Function::Failure => ctx.status() == Status::Failed,
                Function::Always => true,
                Function::Cancelled => ctx.status() == Status::Cancelled,
            }),
        }
    }

    /// Whether it calls a status function anywhere.
    pub(super) fn uses_status(&self) -> bool {
        match self {
            Node::Literal(_) | Node::Context(_) => false,
            Node::Not(inner) => inner.uses_status(),
            Node::Compare { left, right, .. } => left.uses_status() || right.uses_status(),
            Node::And(operands) | Node::Or(operands) => operands.iter().any(Node::uses_status),
            Node::Call(function, args) => function.is_status() || args.iter().any(Node::uses_status),
        }
    }

    fn is_compound(&self) -> bool {
        matches!(self, Node::Not(_) | Node::Compare { .. } | Node::And(_) | Node::Or(_))
    }
}

/// An argument of `startsWith` or `contains` as text (`null` as `''`).
fn text(node: &Node, ctx: &dyn Context) -> String {
    node.eval(ctx).to_string()
}

/// Writes `node`, in parentheses when it is compound.
struct Operand<'n>(&'n Node);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_compound() { write!(f, "({})", self.0) } else { write!(f, "{}", self.0) }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |f: &mut fmt::Formatter<'_>, operands: &[Node], separator: &str| {
            for (i, operand) in operands.iter().enumerate() {
                if i > 0 {
                    f.write_str(separator)?;
                }
                write!(f, "{}", Operand(operand))?;
            }
            Ok(())
        };
        match self {
            Node::Literal(Value::Null) => f.write_str("null"),
            Node::Literal(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Node::Literal(value) => write!(f, "{value}"),
            Node::Context(ContextRef::Drover(field)) => write!(f, "drover.{}", field.name()),
            Node::Context(ContextRef::Env(name)) => write!(f, "env{}", Key(name)),
            Node::Context(ContextRef::Matrix(name)) => write!(f, "matrix{}", Key(name)),
            Node::Context(ContextRef::NeedResult(job)) => write!(f, "needs{}.result", Key(job)),
            Node::Context(ContextRef::Result) => f.write_str("result"),
            Node::Not(inner) => write!(f, "!{}", Operand(inner)),
            Node::Compare { op, left, right } => write!(f, "{} {} {}", Operand(left), op.as_str(), Operand(right)),
            Node::And(operands) => joined(f, operands, " && "),
            Node::Or(operands) => joined(f, operands, " || "),
            Node::Call(function, args) => {
                write!(f, "{}(", function.name())?;
                joined(f, args, ", ")?;
                f.write_str(")")
            }
        }
    }
}

/// A context's key: `.name`, or `['name']` when it is not a segment.
struct Key<'k>(&'k str);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segment = !self.0.is_empty() && self.0.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if segment { write!(f, ".{}", self.0) } else { write!(f, "['{}']", self.0.replace('\'', "''")) }
    }
}
