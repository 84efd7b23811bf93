//! Table tests of the expression language: expressions read into trees
//! (printed back with every compound part in parentheses), evaluated
//! against a fake run, and refused with their exact offsets.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;

/// The scope of a job that needs `build`, `test` and `deploy.prod`, sets a
/// few variables, has a secret and a matrix over `os`.
fn scope() -> Scope<'static> {
    Scope {
        needs: &["build", "test", "deploy.prod"],
        env: &["A", "B", "C", "EMPTY", "GREETING", "ZERO"],
        secrets: &["TOKEN"],
        matrix: &["os"],
        allow_status: true,
        result: false,
    }
}

fn read(text: &str) -> Expr {
    parse(text, &scope()).unwrap_or_else(|err| panic!("{text:?}: {err:?}"))
}

#[test]
fn expressions_read_into_trees() {
    let cases = [
        ("drover.branch == 'main'", "drover.branch == 'main'"),
        ("env.A && env.B || env.C", "(env.A && env.B) || env.C"),
        ("env.A || env.B && env.C", "env.A || (env.B && env.C)"),
        ("env.A && env.B && env.C", "env.A && env.B && env.C"),
        ("env.A || (env.B || env.C)", "env.A || (env.B || env.C)"),
        ("!env.A == false", "(!env.A) == false"),
        ("!(env.A == 'x')", "!(env.A == 'x')"),
        ("!!env.A", "!(!env.A)"),
        ("((env.A))", "env.A"),
        ("env.A!='x'&&env.B=='y'", "(env.A != 'x') && (env.B == 'y')"),
        (
            "drover.event == 'push'\n  && drover.branch == 'main'",
            "(drover.event == 'push') && (drover.branch == 'main')",
        ),
        ("'it''s' == env.A", "'it''s' == env.A"),
        ("'' == env.A", "'' == env.A"),
        ("-1.5 == 2", "-1.5 == 2"),
        ("1.0 == 10", "1 == 10"),
        ("true != false", "true != false"),
        ("null == drover.tag", "null == drover.tag"),
        ("env['A']", "env.A"),
        ("env [ 'A' ] == 'x'", "env.A == 'x'"),
        ("needs.build.result == 'success'", "needs.build.result == 'success'"),
        ("needs['deploy.prod'].result != 'failure'", "needs['deploy.prod'].result != 'failure'"),
        ("matrix.os == 'linux'", "matrix.os == 'linux'"),
        ("startsWith(drover.branch, 'release/')", "startsWith(drover.branch, 'release/')"),
        ("contains( drover.tag , 'rc' )", "contains(drover.tag, 'rc')"),
        ("success() && !cancelled()", "success() && (!cancelled())"),
        ("always()", "always()"),
        ("failure() || cancelled()", "failure() || cancelled()"),
        ("'ü' == env.A", "'ü' == env.A"),
        ("1 < 2", "1 < 2"),
        ("-1.5<=2", "-1.5 <= 2"),
        ("1>0 && 2>=1 || 3 != 4", "((1 > 0) && (2 >= 1)) || (3 != 4)"),
        ("!(1 < 2)", "!(1 < 2)"),
        ("(1 < 2) == true", "(1 < 2) == true"),
        ("1<-1", "1 < -1"),
    ];
    for (text, printed) in cases {
        let expr = read(text);
        assert_eq!(expr.root.to_string(), printed, "{text:?}");
        assert_eq!(expr.text(), text);
        // What is printed reads back as the same tree.
        assert_eq!(read(printed).root, expr.root, "{text:?}");
    }
}

#[test]
fn status_functions_are_noticed() {
    for (text, uses) in [
        ("env.A", false),
        ("contains(env.A, 'x') && env.B == 'y'", false),
        ("success()", true),
        ("!cancelled()", true),
        ("env.A == 'x' || (env.B && failure())", true),
        ("always() && drover.branch == 'main'", true),
    ] {
        assert_eq!(read(text).uses_status(), uses, "{text:?}");
    }
}

/// A run for evaluation: on `main`, with no tag, and a record of every
/// context read, to show what `&&` and `||` skip.
struct Fake {
    status: Status,
    env: BTreeMap<&'static str, &'static str>,
    reads: RefCell<Vec<String>>,
}

impl Fake {
    fn new(status: Status) -> Fake {
        let env = [("A", "a"), ("B", "b"), ("EMPTY", ""), ("GREETING", "Hello"), ("ZERO", "0")].into();
        Fake { status, env, reads: RefCell::new(Vec::new()) }
    }

    fn read(&self, what: String) {
        self.reads.borrow_mut().push(what);
    }
}

impl Context for Fake {
    fn drover(&self, field: DroverField) -> Option<String> {
        self.read(format!("drover.{}", field.name()));
        match field {
            DroverField::Branch => Some("main".to_owned()),
            DroverField::Event => Some("push".to_owned()),
            DroverField::Tag => None,
            DroverField::Commit => Some("0123abc".to_owned()),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.read(format!("env.{name}"));
        self.env.get(name).map(|value| (*value).to_owned())
    }

    fn matrix(&self, name: &str) -> Option<String> {
        self.read(format!("matrix.{name}"));
        (name == "os").then(|| "linux".to_owned())
    }

    fn need_result(&self, job: &str) -> Option<JobResult> {
        self.read(format!("needs.{job}"));
        match job {
            "build" => Some(JobResult::Success),
            "test" => Some(JobResult::Failure),
            "deploy.prod" => Some(JobResult::Skipped),
            _ => None,
        }
    }

    fn status(&self) -> Status {
        self.read("status".to_owned());
        self.status
    }
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

#[test]
fn expressions_evaluate() {
    let t = Value::Bool(true);
    let f = Value::Bool(false);
    let cases: Vec<(&str, Value)> = vec![
        // Contexts and literals.
        ("drover.branch", string("main")),
        ("drover.event", string("push")),
        ("drover.commit", string("0123abc")),
        ("drover.tag", Value::Null),
        ("env.GREETING", string("Hello")),
        ("env.C", Value::Null),
        ("matrix.os", string("linux")),
        ("needs.build.result", string("success")),
        ("needs['deploy.prod'].result", string("skipped")),
        ("'x'", string("x")),
        ("1.5", Value::Number(1.5)),
        ("null", Value::Null),
        // `==` and `!=`: same type and value; strings case-sensitively.
        ("drover.branch == 'main'", t.clone()),
        ("drover.branch == 'Main'", f.clone()),
        ("env.GREETING == 'hello'", f.clone()),
        ("drover.branch != 'main'", f.clone()),
        ("drover.branch != 'dev'", t.clone()),
        ("drover.tag == null", t.clone()),
        ("drover.branch == null", f.clone()),
        ("null == ''", f.clone()),
        ("null == false", f.clone()),
        ("null == 0", f.clone()),
        ("1 == 1.0", t.clone()),
        ("-0 == 0", t.clone()),
        ("true == true", t.clone()),
        ("needs.test.result == 'failure'", t.clone()),
        ("env.ZERO == '0'", t.clone()),
        // `!`: truthiness.
        ("!''", t.clone()),
        ("!'0'", f.clone()),
        ("!0", t.clone()),
        ("!0.5", f.clone()),
        ("!null", t.clone()),
        ("!false", t.clone()),
        ("!env.EMPTY", t.clone()),
        ("!env.ZERO", f.clone()),
        ("!env.C", t.clone()),
        // `&&` and `||` give booleans.
        ("env.A && env.B", t.clone()),
        ("env.A && env.EMPTY", f.clone()),
        ("env.EMPTY || env.A", t.clone()),
        ("env.EMPTY || 0 || null", f.clone()),
        ("env.A || env.B && env.EMPTY", t.clone()),
        ("(env.A || env.B) && env.EMPTY", f.clone()),
        // Functions, case-sensitive; null reads as ''.
        ("startsWith(drover.branch, 'ma')", t.clone()),
        ("startsWith(drover.branch, 'MA')", f.clone()),
        ("startsWith(drover.branch, '')", t.clone()),
        ("startsWith(drover.tag, '')", t.clone()),
        ("startsWith(drover.tag, 'v')", f.clone()),
        ("contains(drover.branch, 'ai')", t.clone()),
        ("contains(env.GREETING, 'hell')", f.clone()),
        ("contains('a''b', '''')", t.clone()),
        ("always()", t.clone()),
        ("success()", t.clone()),
        ("failure()", f.clone()),
        ("cancelled()", f.clone()),
        // Ordering numbers.
        ("1 < 2", t.clone()),
        ("2 < 2", f.clone()),
        ("2 <= 2", t.clone()),
        ("-1 > 0", f.clone()),
        ("1.5 >= 1.5", t.clone()),
        ("0.1 > 0.01", t.clone()),
        ("-0 < 0", f.clone()),
        ("(1 < 2) == (3 > 2)", t.clone()),
    ];
    for (text, want) in cases {
        let run = Fake::new(Status::Succeeded);
        assert_eq!(read(text).eval(&run), want, "{text:?}");
    }
}

#[test]
fn and_and_or_stop_at_the_first_operand_that_decides() {
    let cases: [(&str, &[&str]); 6] = [
        ("env.EMPTY && env.A && env.B", &["env.EMPTY"]),
        ("env.A && env.EMPTY && env.B", &["env.A", "env.EMPTY"]),
        ("env.A || env.B", &["env.A"]),
        ("env.EMPTY || env.A || env.B", &["env.EMPTY", "env.A"]),
        ("always() || failure()", &[]),
        ("drover.branch == 'dev' && startsWith(drover.tag, 'v')", &["drover.branch"]),
    ];
    for (text, reads) in cases {
        let run = Fake::new(Status::Succeeded);
        read(text).eval(&run);
        assert_eq!(run.reads.borrow().as_slice(), reads, "{text:?}");
    }
}

#[test]
fn conditions_without_a_status_function_also_need_success() {
    use Status::{Cancelled, Failed, Skipped, Succeeded};
    // (condition, whether it passes when Succeeded, Failed, Skipped, Cancelled)
    let cases: [(Option<&str>, [bool; 4]); 11] = [
        (None, [true, false, false, false]),
        (Some("drover.branch == 'main'"), [true, false, false, false]),
        (Some("drover.branch == 'dev'"), [false, false, false, false]),
        (Some("always()"), [true, true, true, true]),
        (Some("success()"), [true, false, false, false]),
        (Some("failure()"), [false, true, false, false]),
        (Some("cancelled()"), [false, false, false, true]),
        (Some("!cancelled()"), [true, true, true, false]),
        (Some("success() || failure()"), [true, true, false, false]),
        (Some("always() && drover.branch == 'main'"), [true, true, true, true]),
        (Some("failure() && needs.test.result == 'failure'"), [false, true, false, false]),
    ];
    for (text, want) in cases {
        let expr = text.map(read);
        for (status, want) in [Succeeded, Failed, Skipped, Cancelled].into_iter().zip(want) {
            let run = Fake::new(status);
            assert_eq!(passes(expr.as_ref(), &run), want, "{text:?} when {status:?}");
        }
    }
    // The implicit `success()` is asked first, and decides alone.
    let run = Fake::new(Failed);
    assert!(!passes(Some(&read("drover.branch == 'main'")), &run));
    assert_eq!(run.reads.borrow().as_slice(), ["status"]);
}

#[test]
fn values_read_as_text_and_as_booleans() {
    let cases = [
        (Value::Null, "", false),
        (Value::Bool(true), "true", true),
        (Value::Bool(false), "false", false),
        (Value::Number(1.0), "1", true),
        (Value::Number(-2.5), "-2.5", true),
        (Value::Number(0.0), "0", false),
        (Value::Number(f64::NAN), "NaN", false),
        (string(""), "", false),
        (string("0"), "0", true),
        (string("false"), "false", true),
    ];
    for (value, text, truthy) in cases {
        assert_eq!(value.to_string(), text, "{value:?}");
        assert_eq!(value.is_truthy(), truthy, "{value:?}");
    }
}

#[test]
fn bad_expressions_say_where_and_why() {
    let long = "x".repeat(MAX_EXPRESSION_BYTES + 1);
    let huge_number = "9".repeat(400);
    let deep_nots = format!("{}env.A", "!".repeat(MAX_EXPRESSION_DEPTH + 1));
    let deep_parens = format!("{}env.A{}", "(".repeat(MAX_EXPRESSION_DEPTH + 1), ")".repeat(MAX_EXPRESSION_DEPTH + 1));
    let deep_calls = "startsWith(".repeat(MAX_EXPRESSION_DEPTH + 1);
    // 257 literals: the last is one node too many.
    let many_literals = format!("{}1", "1&&".repeat(MAX_EXPRESSION_NODES));
    // 256 literals and the `&&` that joins them: the `&&` is too many.
    let many_with_and = format!("{}1", "1&&".repeat(MAX_EXPRESSION_NODES - 1));
    // (text, offset, message, hint)
    let cases: Vec<(&str, usize, &str, &str)> = vec![
        ("", 0, "the expression is empty", "drover.branch == 'main'"),
        ("  \n ", 0, "the expression is empty", "e.g."),
        (&long, 0, "it has 1025 bytes, over the limit of 1024 (1 KiB)", "split it"),
        (&huge_number, 0, "is too large", ""),
        // Unknown names.
        ("github.ref == 'main'", 0, "unknown context `github`", "Drover's own context is `drover`"),
        ("Drover.branch", 0, "unknown context `Drover`", "did you mean `drover`?"),
        ("drover.branch == main", 17, "unknown context `main`", "single quotes, e.g. 'main'"),
        ("True", 0, "unknown context `True`", "did you mean `true`?"),
        ("success", 0, "unknown context `success`", "call it, `success()`"),
        ("drover.brnch", 7, "`drover` has no field `brnch`", "did you mean `drover.branch`?"),
        ("drover", 0, "`drover` alone is not a value", "drover.branch"),
        ("drover.branch.name", 14, "`drover.branch` has no field `name`", "a string"),
        ("env", 0, "`env` alone is not a value", "env.NAME"),
        ("env.A.B", 6, "`env.A` has no field `B`", "a string"),
        ("env.GRETING", 4, "`env.GRETING` is not set by the pipeline or the job", "did you mean `env.GREETING`?"),
        ("env.HOME", 4, "`env.HOME` is not set", "the job's `env` set: A, B, C, EMPTY, GREETING, ZERO"),
        ("env['TOKEN'] == ''", 4, "`TOKEN` is a secret, and expressions cannot read secrets", "`$TOKEN`"),
        ("'ü' == env.GRETING", 11, "`env.GRETING` is not set", "did you mean"),
        ("matrix.oss", 7, "the job's matrix has no `oss`", "did you mean `matrix.os`?"),
        ("needs.deploy.result", 6, "job `deploy` is not in `needs`", "add `deploy` to the job's `needs`"),
        ("needs.biuld.result", 6, "job `biuld` is not in `needs`", "did you mean `build`?"),
        ("needs.deploy.prod.result", 6, "job `deploy` is not in `needs`", "needs['deploy.prod'].result"),
        ("needs.build", 6, "`needs.build` alone is not a value", "`needs.build.result`"),
        ("needs.build.outputs", 12, "`needs.build` has no field `outputs`", "one field, `result`"),
        ("needs.build.result.x", 19, "`needs.build.result` has no field `x`", "a string"),
        ("sucess()", 0, "unknown function `sucess`", "did you mean `success`?"),
        ("startswith(drover.branch, 'v')", 0, "unknown function `startswith`", "did you mean `startsWith`?"),
        ("hashFiles('a')", 0, "unknown function `hashFiles`", "the functions are startsWith(a, b)"),
        // Types and arity.
        ("needs.build.result == 'succes'", 22, "`needs.build.result` is never 'succes'", "did you mean 'success'?"),
        ("'passed' != needs.test.result", 0, "`needs.test.result` is never 'passed'", "'skipped'"),
        ("env.A == 1", 6, "`==` compares a string with a number, which are never equal", "quote the number"),
        ("true != env.A", 5, "`!=` compares a boolean with a string, which always differ", "e.g. 'true'"),
        ("!env.A == 'x'", 7, "`==` compares a boolean with a string", "`!` applies before `==`"),
        ("1 == success()", 2, "compares a number with a boolean", "never equal"),
        ("startsWith(env.A)", 0, "`startsWith` takes 2 arguments, found 1", "startsWith(drover.branch, 'release/')"),
        ("contains(env.A, 'a', 'b')", 0, "`contains` takes 2 arguments, found 3", "contains(drover.branch"),
        ("success(1)", 8, "`success()` takes no arguments", "write `success()`"),
        ("startsWith(env.A, 1)", 18, "the second argument of `startsWith` must be a string, found a number", "e.g."),
        ("contains(success(), 'a')", 9, "the first argument of `contains` must be a string, found a boolean", "e.g."),
        ("contains(null, 'a')", 9, "the first argument of `contains` must be a string, found null", "e.g."),
        // Syntax.
        ("\"main\" == drover.branch", 0, "strings are written in single quotes", "write '' for a quote"),
        ("drover.branch = 'main'", 14, "`=` is not an operator", "compare with `==`"),
        ("env.A & env.B", 6, "`&` is not an operator", "write `&&` for and"),
        ("env.A | env.B", 6, "`|` is not an operator", "write `||` for or"),
        ("env.A < env.B", 6, "`<` compares numbers only, and its left side is a string", "context values are"),
        ("env.A < 5", 6, "`<` compares numbers only, and its left side is a string", "compare them with `==`"),
        ("5 >= env.ZERO", 2, "`>=` compares numbers only, and its right side is a string", "are strings"),
        ("1 <= needs.build.result", 2, "`<=` compares numbers only, and its right side is a string", ""),
        ("1 < 'x'", 2, "`<` compares numbers only, and its right side is a string", "e.g. `result < 0.01`"),
        ("true > 1", 5, "`>` compares numbers only, and its left side is a boolean", "compare other values"),
        ("null < 1", 5, "`<` compares numbers only, and its left side is null", "ask `== null`"),
        ("!env.A < 1", 7, "its left side is a boolean", "`!` applies before `<`: write `!(a < 1)`"),
        ("success() >= 1", 10, "its left side is a boolean", ""),
        ("1 < 2 < 3", 6, "comparisons do not chain", "`result >= 5 && result <= 10`"),
        ("1 < 2 == true", 6, "comparisons do not chain", "`result >= 5 && result <= 10`"),
        ("env.A => 1", 6, "`=` is not an operator", "write `>=`"),
        ("env.A =< 1", 6, "`=` is not an operator", "write `<=`"),
        ("1 <> 2", 3, "expected a value, found `>`", ""),
        ("1 <", 3, "expected a value, found the end of the expression", ""),
        ("result == 'x'", 0, "`result` is allowed only in the `success` and `failure` of an analysis metric", "drover"),
        ("env.A == result", 9, "`result` is allowed only in the `success` and `failure`", "a deploy's `analysis:`"),
        ("drover.branch == 'main", 17, "this string is never closed", "single quotes"),
        ("(env.A == 'x'", 0, "`(` is never closed", "close it with `)`"),
        ("(env.A == 'x' env.B)", 14, "expected `)`, found `env`", "single quotes"),
        ("env.A == 'x')", 12, "`)` closes no `(`", ""),
        (
            "env.A 'x'",
            6,
            "expected an operator (`==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`) or the end, found the string 'x'",
            "&&",
        ),
        ("env.A ==", 8, "expected a value, found the end of the expression", "a value is a context"),
        ("&& env.A", 0, "expected a value, found `&&`", "a value is"),
        ("env.A == env.B == env.C", 15, "comparisons do not chain", "join comparisons with `&&`"),
        ("env.", 4, "expected a name after `.`, found the end of the expression", ""),
        ("env[A]", 4, "expected a name in quotes after `[`, found `A`", "needs['build.linux']"),
        ("env['A'", 7, "expected `]`, found the end", ""),
        ("startsWith(env.A, 'x'", 10, "the `(` of `startsWith(` is never closed", "close it"),
        ("startsWith(env.A 'x')", 17, "expected `,` or `)`, found the string 'x'", ""),
        ("env.A @ env.B", 6, "unexpected character `@`", "`==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`, `!`"),
        ("success() && ${{ env.A }}", 13, "`${{` inside an expression", "around a whole expression"),
        // Limits.
        (&deep_nots, MAX_EXPRESSION_DEPTH, "the expression nests more than 32 deep", "fewer parentheses"),
        (&deep_parens, MAX_EXPRESSION_DEPTH, "nests more than 32 deep", ""),
        (&deep_calls, 11 * MAX_EXPRESSION_DEPTH + 10, "nests more than 32 deep", ""),
        (&many_literals, 3 * MAX_EXPRESSION_NODES, "the expression has more than 256 parts", "split it"),
        (&many_with_and, 0, "the expression has more than 256 parts", ""),
    ];
    for (text, offset, message, hint) in cases {
        let err = parse(text, &scope()).expect_err(text);
        let shown = crate::yaml::abbreviate(text);
        assert_eq!(err.offset, offset, "{shown:?}: {err:?}");
        assert!(err.message.contains(message), "{shown:?}: {err:?}");
        assert!(err.hint.as_deref().unwrap_or("").contains(hint), "{shown:?}: {err:?}");
        assert_eq!(err.to_string(), err.message);
    }
}

#[test]
fn limits_are_inclusive() {
    let nots = format!("{}env.A", "!".repeat(MAX_EXPRESSION_DEPTH));
    let parens = format!("{}env.A{}", "(".repeat(MAX_EXPRESSION_DEPTH), ")".repeat(MAX_EXPRESSION_DEPTH));
    // 255 literals and their `&&`: 256 nodes.
    let nodes = format!("{}1", "1&&".repeat(MAX_EXPRESSION_NODES - 2));
    let longest = format!("'{}' == env.A", "x".repeat(MAX_EXPRESSION_BYTES - 11));
    assert_eq!(longest.len(), MAX_EXPRESSION_BYTES);
    for text in [&nots, &parens, &nodes, &longest] {
        let expr = read(text);
        // Evaluating the largest tree is quick: each node once.
        expr.eval(&Fake::new(Status::Succeeded));
    }
}

#[test]
fn names_are_checked_against_the_scope() {
    // A job with no matrix, no needs and no variables.
    let bare = Scope { allow_status: true, ..Scope::default() };
    let cases = [
        ("matrix.os", 7, "`matrix.os` names nothing: the job has no matrix", "`matrix:`"),
        ("needs.build.result", 6, "job `build` is not in `needs`", "there are none here"),
        ("env.A", 4, "`env.A` is not set", "there are none"),
    ];
    for (text, offset, message, hint) in cases {
        let err = parse(text, &bare).expect_err(text);
        assert_eq!(err.offset, offset, "{text:?}: {err:?}");
        assert!(err.message.contains(message), "{text:?}: {err:?}");
        assert!(err.hint.as_deref().unwrap_or("").contains(hint), "{text:?}: {err:?}");
    }
    // Status functions only where allowed.
    let no_status = Scope { allow_status: false, ..scope() };
    let err = parse("env.A && !cancelled()", &no_status).unwrap_err();
    assert_eq!((err.offset, err.message.as_str()), (10, "`cancelled()` is allowed only in `if:`"));
    // A "did you mean" costs from a budget; with none left, there is no guess.
    let err = parser::parse("env.GRETING", Some(&scope()), &mut 0).unwrap_err();
    assert!(!err.hint.unwrap().contains("did you mean"));
}

#[test]
fn conditions_may_be_written_in_braces() {
    let expr = parse_condition("${{ drover.branch == 'main' }}", &scope()).unwrap();
    assert_eq!(expr.root.to_string(), "drover.branch == 'main'");
    let expr = parse_condition("  ${{ always() }}\n", &scope()).unwrap();
    assert!(expr.uses_status());
    assert_eq!(parse_condition("env.A == 'x'", &scope()).unwrap(), read("env.A == 'x'"));

    let cases = [
        ("${{ drover.brnch }}", 11, "`drover` has no field `brnch`"),
        ("${{ env.A }} && env.B", 12, "a condition is one expression, and this is more"),
        ("${{ env.A }} ${{ env.B }}", 13, "a condition is one expression"),
        ("${{ env.A", 0, "`${{` is never closed"),
        ("${{ }}", 0, "empty `${{ }}`"),
        ("env.A && ${{ env.B }}", 9, "`${{` inside an expression"),
    ];
    for (text, offset, message) in cases {
        let err = parse_condition(text, &scope()).expect_err(text);
        assert_eq!(err.offset, offset, "{text:?}: {err:?}");
        assert!(err.message.contains(message), "{text:?}: {err:?}");
    }
}

fn literal(offset: usize, text: &str) -> Piece {
    Piece::Literal { offset, text: text.to_owned() }
}

fn expression(offset: usize, text: &str) -> Piece {
    Piece::Expr { offset, expr: parse(text, &Scope { allow_status: false, ..scope() }).unwrap() }
}

#[test]
fn strings_split_into_text_and_expressions() {
    let cases = [
        ("plain text }} {{ x }} $ {", vec![literal(0, "plain text }} {{ x }} $ {")]),
        ("", vec![]),
        (
            "echo ${{ drover.branch }} and ${{env.A}}!",
            vec![
                literal(0, "echo "),
                expression(5, " drover.branch "),
                literal(25, " and "),
                expression(30, "env.A"),
                literal(40, "!"),
            ],
        ),
        ("${{ 'a}}b' == env.A }}", vec![expression(0, " 'a}}b' == env.A ")]),
        ("${{ 'it''s}}' }}x", vec![expression(0, " 'it''s}}' "), literal(16, "x")]),
        ("$${{ env.A }}", vec![literal(0, "$"), expression(1, " env.A ")]),
        ("ü${{ env.A }}ü", vec![literal(0, "ü"), expression(1, " env.A "), literal(13, "ü")]),
        ("run:\n  ${{ matrix.os }}\n", vec![literal(0, "run:\n  "), expression(7, " matrix.os "), literal(23, "\n")]),
    ];
    for (text, pieces) in cases {
        let got = interpolations(text, &scope()).unwrap_or_else(|err| panic!("{text:?}: {err:?}"));
        assert_eq!(got, pieces, "{text:?}");
    }

    let cases = [
        ("echo ${{ drover.brnch }}", 16, "`drover` has no field `brnch`"),
        ("ü ${{ github.sha }}", 6, "unknown context `github`"),
        ("echo ${{ drover.branch", 5, "`${{` is never closed"),
        ("echo ${{ 'x }}", 5, "`${{` is never closed"),
        ("a ${{ }} b", 2, "empty `${{ }}`"),
        ("echo ${{ result }}", 9, "`result` is allowed only in the `success` and `failure` of an analysis metric"),
        ("${{ env.A }} ${{ success() }}", 17, "`success()` is allowed only in `if:`"),
        ("${{ env.A == }}", 13, "expected a value, found the end of the expression"),
    ];
    for (text, offset, message) in cases {
        let err = interpolations(text, &scope()).expect_err(text);
        assert_eq!(err.offset, offset, "{text:?}: {err:?}");
        assert!(err.message.contains(message), "{text:?}: {err:?}");
    }
}

#[test]
fn expressions_are_stored_as_their_text() {
    let expr = read("needs['deploy.prod'].result == 'success' && !cancelled()");
    let json = serde_json::to_string(&expr).unwrap();
    assert_eq!(json, r#""needs['deploy.prod'].result == 'success' && !cancelled()""#);
    let back: Expr = serde_json::from_str(&json).unwrap();
    assert_eq!(back, expr);
    assert_eq!(back.root, expr.root);
    assert!(back.uses_status());
    // Names were checked at submit and are not checked again...
    let unchecked: Expr = serde_json::from_str(r#""needs.anything.result == 'success'""#).unwrap();
    assert_eq!(unchecked.text(), "needs.anything.result == 'success'");
    // ...but the text must still be an expression.
    let err = serde_json::from_str::<Expr>(r#""drover.""#).unwrap_err().to_string();
    assert!(err.contains("expression `drover.`: expected a name after `.`"), "{err}");
    assert_eq!(format!("{expr:?}"), r#"Expr("needs['deploy.prod'].result == 'success' && !cancelled()")"#);
}

#[test]
fn expand_fills_in_each_expression_and_leaves_other_text_alone() {
    let ctx = Fake::new(Status::Succeeded);
    let cases = [
        ("no expression at all", "no expression at all"),
        ("echo ${{ env.GREETING }}, ${{ drover.branch }}!", "echo Hello, main!"),
        ("${{ startsWith(env.GREETING, 'He') }}", "true"),
        ("shell ${HOME} and $(date) stay", "shell ${HOME} and $(date) stay"),
        ("${{ drover.tag }}", ""),
    ];
    for (text, want) in cases {
        assert_eq!(super::expand(text, &ctx).unwrap(), want, "{text:?}");
    }
    assert_eq!(Expr::reread("env.A == 'a'").unwrap().eval(&ctx).to_string(), "true");
}

/// The scope of an analysis metric's `success` and `failure`.
fn analysis() -> Scope<'static> {
    Scope { result: true, ..Scope::default() }
}

/// A measurement: `result` is `value`, and there is no run.
struct Measured(Option<Value>);

impl Context for Measured {
    fn drover(&self, _: DroverField) -> Option<String> {
        None
    }

    fn env(&self, _: &str) -> Option<String> {
        None
    }

    fn matrix(&self, _: &str) -> Option<String> {
        None
    }

    fn need_result(&self, _: &str) -> Option<JobResult> {
        None
    }

    fn status(&self) -> Status {
        Status::Succeeded
    }

    fn result(&self) -> Option<Value> {
        self.0.clone()
    }
}

#[test]
fn analysis_conditions_read_result() {
    let cases = [
        ("result < 0.01", "result < 0.01"),
        ("result>=5&&result<=10", "(result >= 5) && (result <= 10)"),
        ("result == true", "result == true"),
        ("result == 'ok' || result == 1", "(result == 'ok') || (result == 1)"),
        ("result != null", "result != null"),
        ("0.5 > result", "0.5 > result"),
        ("result > -1", "result > -1"),
        ("!result", "!result"),
        ("!(result < 1)", "!(result < 1)"),
        ("contains(result, 'ok')", "contains(result, 'ok')"),
        ("result", "result"),
    ];
    for (text, printed) in cases {
        let expr = parse(text, &analysis()).unwrap_or_else(|err| panic!("{text:?}: {err:?}"));
        assert_eq!(expr.root.to_string(), printed, "{text:?}");
        assert!(!expr.uses_status(), "{text:?}");
        assert_eq!(parse(printed, &analysis()).unwrap().root, expr.root, "{text:?}");
    }
    // Stored as text, read back without a scope.
    let back: Expr = serde_json::from_str(r#""result >= 5 && result <= 10""#).unwrap();
    assert_eq!(back.root, parse("result >= 5 && result <= 10", &analysis()).unwrap().root);
}

#[test]
fn analysis_conditions_evaluate_against_the_measurement() {
    let number = |n: f64| Some(Value::Number(n));
    let text = |s: &str| Some(string(s));
    // (condition, result, its value)
    let cases: Vec<(&str, Option<Value>, bool)> = vec![
        ("result < 0.01", number(0.005), true),
        ("result < 0.01", number(0.01), false),
        ("result <= 0.01", number(0.01), true),
        ("result > 0.01", number(0.02), true),
        ("result >= 0.05", number(0.049), false),
        ("result < 0.01", number(-1.0), true),
        ("result > 1000000", number(f64::INFINITY), true),
        // A side that is not a number makes an ordering false, with no
        // conversion; so does NaN.
        ("result < 0.01", text("x"), false),
        ("result < 0.01", text("0.005"), false),
        ("result < 0.01", Some(Value::Bool(false)), false),
        ("result < 0.01", Some(Value::Null), false),
        ("result < 0.01", None, false),
        ("result >= 0.01", None, false),
        ("result < 0.01", number(f64::NAN), false),
        ("result >= 0.01", number(f64::NAN), false),
        ("!(result < 0.01)", number(f64::NAN), true),
        ("!(result < 0.01)", text("x"), true),
        // Equality: same type and value.
        ("result == true", Some(Value::Bool(true)), true),
        ("result == true", Some(Value::Bool(false)), false),
        ("result == true", text("true"), false),
        ("result == true", number(1.0), false),
        ("result == 'ok'", text("ok"), true),
        ("result == 'ok'", text("OK"), false),
        ("result == 1", number(1.0), true),
        ("result == null", None, true),
        ("result != null", Some(Value::Null), false),
        ("result != null", number(0.0), true),
        // A range.
        ("result >= 5 && result <= 10", number(4.9), false),
        ("result >= 5 && result <= 10", number(5.0), true),
        ("result >= 5 && result <= 10", number(7.5), true),
        ("result >= 5 && result <= 10", number(10.0), true),
        ("result >= 5 && result <= 10", number(10.5), false),
        ("result >= 5 && result <= 10", text("7"), false),
        ("result < 5 || result > 10", number(11.0), true),
        // Truthiness, and functions reading it as text.
        ("result", number(0.0), false),
        ("result", number(2.0), true),
        ("result", text(""), false),
        ("!result", None, true),
        ("contains(result, 'ok')", text("all ok"), true),
        ("startsWith(result, '12')", number(12.5), true),
        ("startsWith(result, '')", None, true),
    ];
    for (condition, result, want) in cases {
        let expr = parse(condition, &analysis()).unwrap_or_else(|err| panic!("{condition:?}: {err:?}"));
        // A condition is judged by its truthiness (`result` alone is the value).
        let got = expr.eval(&Measured(result.clone()));
        assert_eq!(got.is_truthy(), want, "{condition:?} with {result:?}: {got:?}");
    }
    // A context that measures nothing reads `result` as null: the default.
    let run = Fake::new(Status::Succeeded);
    assert_eq!(Expr::reread("result == null").unwrap().eval(&run), Value::Bool(true));
}

#[test]
fn analysis_conditions_read_nothing_but_result() {
    // (text, offset, message, hint)
    let cases = [
        ("result < 'x'", 7, "`<` compares numbers only, and its right side is a string", "compare numbers"),
        ("'x' > result", 4, "`>` compares numbers only, and its left side is a string", "e.g. `result < 0.01`"),
        ("result <= null", 7, "`<=` compares numbers only, and its right side is null", "ask `== null`"),
        ("result >= true", 7, "`>=` compares numbers only, and its right side is a boolean", ""),
        ("!result < 1", 8, "`<` compares numbers only, and its left side is a boolean", "`!` applies before `<`"),
        ("1 < result < 5", 11, "comparisons do not chain", "`result >= 5 && result <= 10`"),
        ("result.value", 7, "`result` has no field `value`", "the measured value itself"),
        ("result['a b'] == 1", 7, "`result` has no field `a b`", "`json_path`"),
        ("reslt < 1", 0, "unknown context `reslt`", "did you mean `result`?"),
        ("value > 1", 0, "unknown context `value`", "read only `result`, the measured value"),
        ("Result > 1", 0, "unknown context `Result`", "did you mean `result`?"),
        ("drover.branch == 'main'", 0, "`drover` cannot be read in an analysis metric's condition", "only `result`"),
        ("result > 1 && env.A", 14, "`env` cannot be read in an analysis metric's condition", "not a run"),
        ("needs.build.result == 'success'", 0, "`needs` cannot be read", ""),
        ("matrix.os", 0, "`matrix` cannot be read", ""),
        ("success() && result", 0, "`success()` is allowed only in `if:`", ""),
        ("contains", 0, "unknown context `contains`", "call it, `contains()`"),
        ("result => 1", 7, "`=` is not an operator", "write `>=`"),
        ("result < ", 9, "expected a value, found the end of the expression", ""),
        ("${{ result }}", 0, "`${{` inside an expression", ""),
        ("result < 1e3", 10, "expected an operator", ""),
    ];
    for (text, offset, message, hint) in cases {
        let err = parse(text, &analysis()).expect_err(text);
        assert_eq!(err.offset, offset, "{text:?}: {err:?}");
        assert!(err.message.contains(message), "{text:?}: {err:?}");
        assert!(err.hint.as_deref().unwrap_or("").contains(hint), "{text:?}: {err:?}");
    }
}
