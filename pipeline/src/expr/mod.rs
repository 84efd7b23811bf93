//! Expressions: the small language of `if:` conditions on jobs and steps,
//! of `${{ }}` inside `env` values and `run` scripts, and of the `success`
//! and `failure` of a deploy's analysis metrics. This header is its
//! reference.
//!
//! An expression is read once, when the pipeline is submitted ([`parse`],
//! [`parse_condition`], [`interpolations`]): every name in it is checked
//! then, so a misspelt function, context or variable is refused at submit
//! with the character it starts at. The caller evaluates it later
//! ([`Expr::eval`], [`passes`]) against a [`Context`] that knows the run.
//! Nothing here does IO or reads a clock.
//!
//! # Examples
//!
//! ```yaml
//! jobs:
//!   deploy:
//!     needs: [build, test]
//!     if: drover.branch == 'main' && drover.event != 'pull_request'
//!     steps:
//!       - run: ./deploy "${{ drover.commit }}"
//!       - if: failure()
//!         run: ./rollback
//!   report:
//!     needs: [deploy]
//!     if: always()                        # runs whatever happened to deploy
//!     steps:
//!       - run: ./report "${{ needs.deploy.result }}"
//!   release:
//!     needs: [build]
//!     if: ${{ startsWith(drover.tag, 'v') }}   # `${{ }}` around a whole `if:` is allowed
//!     steps: [{run: ./release}]
//!   deploy-prod:
//!     needs: [build]
//!     deploy:
//!       # environment, artifact, service: see `deploy`
//!       analysis:
//!         metrics:
//!           - name: error-rate
//!             prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
//!             success: result < 0.01          # `result`: the measured value
//!             failure: result >= 0.05
//! ```
//!
//! # Grammar
//!
//! ```text
//! expression  = or
//! or          = and { "||" and }
//! and         = comparison { "&&" comparison }
//! comparison  = unary [ op unary ]        (they do not chain: `a == b == c` and `1 < a < 5` are refused)
//! op          = "==" | "!=" | "<" | "<=" | ">" | ">="
//! unary       = "!" unary | primary
//! primary     = literal | call | context | "(" expression ")"
//! call        = name "(" [ expression { "," expression } ] ")"
//! context     = name { "." segment | "[" string "]" }
//! literal     = string | number | "true" | "false" | "null"
//! string      = "'" { any character but "'", or "''" for a quote } "'"
//! number      = [ "-" ] digits [ "." digits ]
//! name        = letter or "_", then letters, digits, "_" and "-"
//! segment     = letters, digits, "_" and "-"
//! ```
//!
//! Whitespace (spaces, tabs, line breaks) may stand between any two tokens.
//! Strings are in single quotes only: `"main"` is refused with a hint, as
//! it is in GitHub Actions. Numbers have no exponent and no hex form.
//! Names are case-sensitive: `startswith` is refused (and `startsWith`
//! suggested). `!` binds tightest, then the comparisons (`==`, `!=`, `<`,
//! `<=`, `>`, `>=`, all at one level), then `&&`, then `||`: `!a < 1` reads
//! as `(!a) < 1`, and `a < 1 && b > 2` as `(a < 1) && (b > 2)`.
//!
//! # Values and types
//!
//! A value is `null`, a boolean, a number or a string ([`Value`]).
//!
//! - **Truthiness.** `&&`, `||`, `!` and a whole `if:` read any value as a
//!   boolean: `null`, `false`, `0` and `''` are false, everything else true.
//!   `&&` and `||` stop at the first operand that decides them and give a
//!   boolean (unlike GitHub Actions, which gives the operand).
//! - **Equality.** `==` is true when both sides have the same type and the
//!   same value; `!=` is its negation. There is no conversion: `'1' == 1`
//!   is false. Strings compare **case-sensitively**, character for character
//!   (GitHub Actions ignores case; Drover does not, because branch names,
//!   tags and job results are case-sensitive everywhere else). `null`
//!   equals only `null`, so `drover.tag == null` asks whether there is a tag.
//! - **Order.** `<`, `<=`, `>` and `>=` compare two numbers, as IEEE 754
//!   does: NaN is neither less, greater nor equal, so every ordering with
//!   it is false. Any other value on either side (a string, even `'5'`, a
//!   boolean, `null`) makes the comparison false: there is no conversion.
//! - **Checked at submit.** Comparing values of two different types
//!   (strings, which every context is, numbers and booleans), which are
//!   never equal, is refused as a type error: `env.DEBUG == true` (write
//!   `'true'`), and `!env.A == 'x'`, which reads as `(!env.A) == 'x'`. So
//!   is comparing `needs.JOB.result` with a string no result is. `null` may
//!   be compared with anything. Ordering a side whose type is known and is
//!   not a number is refused too, since it is always false: `env.A < 5`
//!   (contexts are strings), `result > 'x'`, `result <= null`.
//! - **`result`** has a type only once it is measured: it may be compared
//!   with anything (`result == true`, `result == 'ok'`), ordered
//!   (`result < 0.01`, false when it is not a number), and given to
//!   `startsWith` and `contains`, which read it as text.
//!
//! # Contexts
//!
//! | context | value |
//! |---|---|
//! | `drover.branch` | the branch the run is for, e.g. `'main'`; `null` when there is none (a tag, a file submitted by hand) |
//! | `drover.event` | what started the run: `'manual'`, and with triggers `'push'`, `'tag'`, `'pull_request'`, `'schedule'` |
//! | `drover.tag` | the tag the run is for, e.g. `'v1.2.0'`; `null` when there is none |
//! | `drover.commit` | the commit's full SHA; `null` for a file submitted by hand |
//! | `env.NAME` | a variable the pipeline file sets: in the top-level `env`, or the job's own (which wins). Only those: Drover's `DROVER_*`, the agent's variables and secrets are not visible to expressions (a step reads them as `$NAME`) |
//! | `matrix.NAME` | a value of the job's matrix; a job with no matrix has none, so every `matrix.NAME` is refused |
//! | `needs.JOB.result` | how `JOB` ended: `'success'`, `'failure'`, `'cancelled'` or `'skipped'`; `JOB` must be in the job's `needs` (`needs['a.b'].result` for a job name with a `.`) |
//! | `result` | the value an analysis metric measured: a number, a string, a boolean, or `null` when there is none. Only in a metric's `success` and `failure` ([`Scope::result`]), which read no other context; refused everywhere else |
//!
//! `env['NAME']` is the same as `env.NAME`, and so on for every context.
//! Context values are strings, or `null` when unset; `result` is any
//! value.
//!
//! # Functions
//!
//! | function | value |
//! |---|---|
//! | `startsWith(a, b)` | whether string `a` starts with string `b` (case-sensitive; `null` reads as `''`) |
//! | `contains(a, b)` | whether string `a` contains string `b` (case-sensitive; `null` reads as `''`) |
//! | `success()` | every needed job succeeded (for a step: every step before it), and the run is not being cancelled |
//! | `failure()` | some job the job needs, directly or through others, failed (for a step: some step before it), and the run is not being cancelled |
//! | `cancelled()` | the run is being cancelled (for a step: its job is; the step it stopped is killed, and the later steps that read `cancelled()` or `always()` still run) |
//! | `always()` | true |
//!
//! The arguments of `startsWith` and `contains` must be strings (contexts or
//! string literals), or `result`, read as text as `${{ }}` writes a value
//! (`null` as `''`). The four status functions take no arguments and are
//! allowed only in `if:`, not in `${{ }}` nor in an analysis condition.
//!
//! # `if:`
//!
//! A job or step without `if:` runs when `success()`. An `if:` that calls no
//! status function is read as `success() && (condition)`, as in GitHub
//! Actions: `if: drover.branch == 'main'` does not run after a failure. To
//! run anyway, say so: `if: always() && drover.branch == 'main'`, or
//! `if: failure()` for a clean-up. When the run is being cancelled only
//! conditions that call `always()` or `cancelled()` can be true, since
//! `success()` and `failure()` are then both false. A job whose condition
//! is false is skipped (its result is `'skipped'`, not `'failure'`), and the
//! jobs that need it decide by their own conditions ([`passes`]).
//!
//! The whole of an `if:` may be written in `${{ }}`. In YAML an unquoted
//! value that starts with `!` is a tag, which Drover refuses: write
//! `if: "!cancelled()"` or `if: ${{ !cancelled() }}`.
//!
//! # `${{ }}` in strings
//!
//! `env` values and `run` scripts may hold `${{ expression }}`; each is
//! checked at submit like a condition, without the status functions
//! ([`interpolations`]). The expression ends at the first `}}` outside a
//! string. There is no escape for `${{`; a script that needs those three
//! characters can write `$` and `{{` apart (`"$""{{"` in bash). The
//! coordinator fills them in ([`expand`]) when it assigns an attempt, so
//! a step sees the text with the values in it. In a matrix job,
//! `${{ matrix.NAME }}` is also filled in in `runs-on` and `cache` (the
//! only expression allowed there), which are decided before it runs.
//!
//! # Analysis conditions
//!
//! A metric of a deploy's `analysis:` ([`crate::deploy::Metric`]) judges
//! each measurement with `success`, `failure` or both: expressions over
//! `result`, read as a whole (no `${{ }}`) with a [`Scope`] whose `result`
//! is true, and evaluated by the coordinator, which measures, against a
//! [`Context`] whose [`Context::result`] gives the value. A condition is
//! true when its value is truthy: `success: result` passes on any value
//! but `null`, `false`, `0` and `''`.
//!
//! # Limits
//!
//! An expression has at most [`MAX_EXPRESSION_BYTES`] bytes (1 KiB), nests
//! at most [`MAX_EXPRESSION_DEPTH`] deep (each `(`, `!` and function call
//! opens a level), and has at most [`MAX_EXPRESSION_NODES`] nodes (each
//! literal, context, call and operator is one; a chain of `&&` or of `||`
//! is one node). Reading is linear in the text and evaluation in the nodes:
//! there are no loops, and recursion only follows the tree.
//!
//! The module's files: `lexer` (characters into tokens), `parser` (tokens
//! into a checked tree), `names` (contexts checked against the [`Scope`]),
//! `tree` (the tree: evaluation and printing), and `interpolate` (`${{ }}`
//! in strings).

mod interpolate;
mod lexer;
mod names;
mod parser;
#[cfg(test)]
mod tests;
mod tree;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::{MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES};
pub(crate) use interpolate::interpolations_with_budget;
pub use interpolate::{Piece, expand, interpolations};

/// How much "did you mean" work (edit-distance table cells) one call of
/// [`parse`] or [`interpolations`] may spend; the checker passes its
/// per-file budget instead.
const SUGGESTION_BUDGET: usize = 100_000;

/// A checked expression: its text, and the tree read from it.
///
/// It serializes as its text and deserializes by reading that again (the
/// names in it were checked when the pipeline was submitted, and are not
/// checked again). Two expressions are equal when their texts are.
#[derive(Clone)]
pub struct Expr {
    text: String,
    root: tree::Node,
    uses_status: bool,
}

impl Expr {
    /// The expression as written (for an `if:` in `${{ }}`, what is inside).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression against `ctx`. Each node is visited at most
    /// once, and `&&` and `||` stop early.
    pub fn eval(&self, ctx: &dyn Context) -> Value {
        self.root.eval(ctx)
    }

    /// Whether it calls a status function (`success()`, `failure()`,
    /// `always()`, `cancelled()`); an `if:` that calls none is read as
    /// `success() && (...)` ([`passes`]).
    pub fn uses_status(&self) -> bool {
        self.uses_status
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.text)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.text == other.text
    }
}

impl Eq for Expr {}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl Expr {
    /// Reads an expression that was checked when its pipeline was
    /// submitted (a step's `if:` as the agent gets it): names are not
    /// checked again.
    pub fn reread(text: &str) -> Result<Expr, ExprError> {
        parser::parse(text, None, &mut 0)
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Expr, D::Error> {
        let text = String::deserialize(deserializer)?;
        parser::parse(&text, None, &mut 0).map_err(|err| {
            serde::de::Error::custom(format!("expression `{text}`: {} (at character {})", err.message, err.offset + 1))
        })
    }
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Where the problem is: an offset into the text, in characters.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when we can say more than the message does.
    pub hint: Option<String>,
}

impl ExprError {
    fn new(offset: usize, message: impl Into<String>, hint: Option<String>) -> ExprError {
        ExprError { offset, message: message.into(), hint }
    }
}

/// What the names in an expression may refer to where it is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The jobs `needs.JOB.result` may name: those in the job's `needs`.
    pub needs: &'a [&'a str],
    /// The variables `env.NAME` may name: those the top-level `env` and the
    /// job's own `env` set.
    pub env: &'a [&'a str],
    /// The job's secrets, named in the error for `env.SECRET`.
    pub secrets: &'a [&'a str],
    /// The names `matrix.NAME` may use; empty when the job has no matrix.
    pub matrix: &'a [&'a str],
    /// Whether the status functions are allowed: in `if:`, not in `${{ }}`.
    pub allow_status: bool,
    /// Whether the expression is an analysis metric's `success` or
    /// `failure`: then `result` is its one context, and every other
    /// (`drover`, `env`, `matrix`, `needs`) is refused, since a measurement
    /// is not a run's. Elsewhere `result` is refused.
    pub result: bool,
}

/// A value: what an expression, and each part of it, evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
}

impl Value {
    /// The value read as a boolean: `null`, `false`, `0` (and NaN) and `''`
    /// are false, everything else true.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
        }
    }
}

/// How a value reads in text (what `${{ }}` will be replaced by): `null` as
/// nothing, booleans as `true` and `false`, numbers without a needless
/// `.0`, strings as they are.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

/// A field of the `drover` context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DroverField {
    Branch,
    Event,
    Tag,
    Commit,
}

impl DroverField {
    /// Every field, as written after `drover.`.
    pub const ALL: [(&'static str, DroverField); 4] = [
        ("branch", DroverField::Branch),
        ("event", DroverField::Event),
        ("tag", DroverField::Tag),
        ("commit", DroverField::Commit),
    ];

    /// The field as written after `drover.`.
    pub fn name(self) -> &'static str {
        match self {
            DroverField::Branch => "branch",
            DroverField::Event => "event",
            DroverField::Tag => "tag",
            DroverField::Commit => "commit",
        }
    }
}

/// How a needed job ended, as `needs.JOB.result` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl JobResult {
    /// Every result, as an expression compares it.
    pub const ALL: [JobResult; 4] = [JobResult::Success, JobResult::Failure, JobResult::Cancelled, JobResult::Skipped];

    /// The result as an expression sees it: `'success'` and so on.
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure => "failure",
            JobResult::Cancelled => "cancelled",
            JobResult::Skipped => "skipped",
        }
    }
}

/// Where a job (or a step) stands when its condition is evaluated: what
/// the status functions read. For a job, "needed" means the jobs in its
/// `needs` and, for [`Status::Failed`], the jobs those need in turn; for a
/// step, the steps before it in its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every needed job succeeded (trivially so when there are none), and
    /// the run is not being cancelled: `success()`.
    Succeeded,
    /// Some needed job, directly or through others, failed, and the run is
    /// not being cancelled: `failure()`.
    Failed,
    /// None failed, but not all succeeded (one was skipped), and the run is
    /// not being cancelled: neither `success()` nor `failure()`.
    Skipped,
    /// The run is being cancelled: `cancelled()`, and neither `success()`
    /// nor `failure()`.
    Cancelled,
}

/// What an expression reads from the run it is evaluated for. The caller
/// (the coordinator, for `if:`) implements it; names were checked at
/// submit, so an unknown one can only be unset (`None`, read as `null`).
pub trait Context {
    /// `drover.branch` and the other `drover` fields; `None` when unset.
    fn drover(&self, field: DroverField) -> Option<String>;
    /// `env.NAME`: the job's variable, as the pipeline file sets it.
    fn env(&self, name: &str) -> Option<String>;
    /// `matrix.NAME`: the job's value of the matrix.
    fn matrix(&self, name: &str) -> Option<String>;
    /// `needs.JOB.result`: how the needed job `job` ended.
    fn need_result(&self, job: &str) -> Option<JobResult>;
    /// What the status functions read.
    fn status(&self) -> Status;
    /// `result`: the value an analysis metric measured, `None` (read as
    /// `null`) when there is none. Only a metric's conditions read it, and
    /// only the caller that measures implements it.
    fn result(&self) -> Option<Value> {
        None
    }
}

/// Reads the expression `text`, checking every name in it against `scope`.
/// The first problem is the error, with its offset into `text`.
pub fn parse(text: &str, scope: &Scope<'_>) -> Result<Expr, ExprError> {
    parser::parse(text, Some(scope), &mut { SUGGESTION_BUDGET })
}

/// [`parse`], spending `budget` on suggestions.
pub(crate) fn parse_with_budget(text: &str, scope: &Scope<'_>, budget: &mut usize) -> Result<Expr, ExprError> {
    parser::parse(text, Some(scope), budget)
}

/// Reads the text of an `if:`: an expression, which may be written in
/// `${{ }}` as a whole. Offsets in the error are into `text`.
pub fn parse_condition(text: &str, scope: &Scope<'_>) -> Result<Expr, ExprError> {
    condition_with_budget(text, scope, &mut { SUGGESTION_BUDGET })
}

/// [`parse_condition`], spending `budget` on suggestions.
pub(crate) fn condition_with_budget(text: &str, scope: &Scope<'_>, budget: &mut usize) -> Result<Expr, ExprError> {
    if !text.trim_start().starts_with("${{") {
        return parser::parse(text, Some(scope), budget);
    }
    // `${{ expr }}` around the whole of it, and nothing else.
    let pieces = interpolate::split(text, Some(scope), budget)?;
    let mut found = None;
    for piece in pieces {
        match piece {
            Piece::Literal { text, .. } if text.trim().is_empty() => {}
            Piece::Expr { expr, .. } if found.is_none() => found = Some(expr),
            Piece::Expr { offset, .. } | Piece::Literal { offset, .. } => {
                return Err(ExprError::new(
                    offset,
                    "a condition is one expression, and this is more",
                    Some(
                        "`${{ }}` may go around the whole condition, or be left out; it cannot go around a part \
                          of it"
                            .to_owned(),
                    ),
                ));
            }
        }
    }
    // `split` found the `${{`, so there is an expression.
    found.ok_or_else(|| ExprError::new(0, "the condition is empty", None))
}

/// Whether a job or step with the `if:` `condition` runs: with none, when
/// `success()`; with one that calls no status function, when `success()`
/// and the condition is true; else when the condition is true.
pub fn passes(condition: Option<&Expr>, ctx: &dyn Context) -> bool {
    match condition {
        None => ctx.status() == Status::Succeeded,
        Some(expr) if expr.uses_status() => expr.eval(ctx).is_truthy(),
        Some(expr) => ctx.status() == Status::Succeeded && expr.eval(ctx).is_truthy(),
    }
}
