//! The matrix read from files: combinations, names, what is filled in,
//! and what is refused.

use super::*;

fn combo(pairs: &[(&str, &str)]) -> Combo {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn combinations_are_the_product_less_exclude_plus_include() {
    let axes = vec![
        ("rust".to_string(), vec!["stable".to_string(), "beta".to_string()]),
        ("os".to_string(), vec!["linux".to_string(), "macos".to_string()]),
    ];
    // (case, exclude, include, the combinations)
    type Case = (&'static str, Vec<Combo>, Vec<Combo>, Vec<Combo>);
    let cases: Vec<Case> = vec![
        (
            "the product, first key outermost",
            vec![],
            vec![],
            vec![
                combo(&[("rust", "stable"), ("os", "linux")]),
                combo(&[("rust", "stable"), ("os", "macos")]),
                combo(&[("rust", "beta"), ("os", "linux")]),
                combo(&[("rust", "beta"), ("os", "macos")]),
            ],
        ),
        (
            "exclude on some keys",
            vec![combo(&[("os", "macos")])],
            vec![],
            vec![combo(&[("rust", "stable"), ("os", "linux")]), combo(&[("rust", "beta"), ("os", "linux")])],
        ),
        (
            "include extends the matching ones, and adds what matches none",
            vec![combo(&[("rust", "beta")])],
            vec![combo(&[("os", "linux"), ("big", "yes")]), combo(&[("rust", "nightly"), ("os", "linux")])],
            vec![
                combo(&[("rust", "stable"), ("os", "linux"), ("big", "yes")]),
                combo(&[("rust", "stable"), ("os", "macos")]),
                combo(&[("rust", "nightly"), ("os", "linux")]),
            ],
        ),
        (
            "an include that repeats a combination adds nothing",
            vec![],
            vec![combo(&[("rust", "beta"), ("os", "macos")])],
            vec![
                combo(&[("rust", "stable"), ("os", "linux")]),
                combo(&[("rust", "stable"), ("os", "macos")]),
                combo(&[("rust", "beta"), ("os", "linux")]),
                combo(&[("rust", "beta"), ("os", "macos")]),
            ],
        ),
    ];
    for (case, exclude, include, want) in cases {
        assert_eq!(expand(&axes, &exclude, &include), want, "{case}");
    }
    assert_eq!(expand(&[], &[], &[combo(&[("a", "1")])]), vec![combo(&[("a", "1")])], "include alone");
}

#[test]
fn matrix_values_fill_in_only_their_own_expressions() {
    let c = combo(&[("os", "linux"), ("rust", "1.75")]);
    // (text, filled in)
    let cases = [
        ("${{ matrix.os }}", "linux"),
        ("cargo-${{matrix.rust}}-{{ hashFiles('Cargo.lock') }}", "cargo-1.75-{{ hashFiles('Cargo.lock') }}"),
        ("${{ drover.branch }}-${{ matrix.os }}", "${{ drover.branch }}-linux"),
        ("${{ matrix.nope }}", "${{ matrix.nope }}"),
        ("${{ matrix.os", "${{ matrix.os"),
        ("plain", "plain"),
    ];
    for (text, want) in cases {
        assert_eq!(fill(text, &c), want, "{text}");
    }
    assert_eq!(cell_name("test", &c), "test (os=linux, rust=1.75)");
}

#[test]
fn a_matrix_job_becomes_one_job_per_combination() {
    let text = include_str!("example.yml");
    let pipeline = crate::parse("ci.yml", text).unwrap_or_else(|err| panic!("{err}"));
    let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "build",
            "test (rust=stable, os=linux)",
            "test (rust=stable, os=1.0)",
            "test (rust=beta, os=linux)",
            "test (rust=nightly, os=linux)",
            "report"
        ]
    );
    let beta = pipeline.job("test (rust=beta, os=linux)").unwrap();
    assert_eq!(beta.runs_on.get("os").map(String::as_str), Some("linux"), "runs-on filled in");
    assert_eq!(beta.cache.as_ref().unwrap().key.text, "c-beta-{{ hashFiles('x') }}", "the cache key filled in");
    assert_eq!(beta.env.get("R").map(String::as_str), Some("${{ matrix.rust }}"), "env is expanded at assignment");
    let cell = beta.matrix.as_ref().unwrap();
    assert_eq!((cell.of.as_str(), cell.value("rust"), cell.fail_fast), ("test", Some("beta"), false));
    let report = pipeline.job("report").unwrap();
    assert_eq!(report.needs.len(), 4, "needs: [test] waits for every expansion: {:?}", report.needs);
    assert_eq!(pipeline.expansions("test").count(), 4);
}

#[test]
fn bad_matrices_are_refused_with_what_to_do() {
    let big: Vec<String> = (0..17).map(|i| format!("v{i}")).collect();
    let big = big.join(", ");
    // (case, the job's keys, line, column, message)
    let cases = [
        (
            "over the limit",
            format!("    matrix: {{a: [{big}], b: [{big}]}}\n"),
            4,
            13,
            "the matrix of job `t` expands into 289 jobs, over the limit of 256".to_owned(),
        ),
        (
            "a value with a space",
            "    matrix: {os: ['a b']}\n".into(),
            4,
            19,
            "invalid matrix value `a b` of `os`".into(),
        ),
        ("a list as a value", "    matrix: {os: [[a]]}\n".into(), 4, 19, "must be a string or a number".into()),
        (
            "exclude on a key the matrix lacks",
            "    matrix: {os: [a, b], exclude: [{arch: x}]}\n".into(),
            4,
            37,
            "`exclude` in the matrix of job `t` names `arch`".into(),
        ),
        (
            "exclude removes everything",
            "    matrix: {os: [a], exclude: [{os: a}]}\n".into(),
            4,
            13,
            "`exclude` removes every combination".into(),
        ),
        (
            "fail-fast without a matrix",
            "    fail-fast: false\n".into(),
            4,
            5,
            "`fail-fast` in job `t` has no matrix".into(),
        ),
        (
            "an unknown matrix key in a step",
            "    matrix: {os: [a]}\n    env: {X: '${{ matrix.oss }}'}\n".into(),
            5,
            26,
            "the job's matrix has no `oss`".into(),
        ),
        (
            "runs-on with another expression",
            "    matrix: {os: [a]}\n    runs-on: {os: '${{ drover.branch }}'}\n".into(),
            5,
            19,
            "label `os` in `runs-on` of job `t` has an expression that is not a matrix value".into(),
        ),
        ("a value listed twice", "    matrix: {os: [a, a]}\n".into(), 4, 22, "lists `a` twice".into()),
    ];
    for (case, keys, line, column, message) in cases {
        let text = format!("name: p\njobs:\n  t:\n{keys}    steps: [{{run: make}}]\n");
        let err = crate::parse("ci.yml", &text).expect_err(case);
        assert_eq!(err.diagnostics.len(), 1, "{case}: reported once: {err}");
        let d = &err.diagnostics[0];
        assert!(d.message.contains(&message), "{case}: {err}");
        assert_eq!((d.line, d.column), (line, column), "{case}: {err}");
        assert!(d.hint.is_some(), "{case}: says what to do: {err}");
    }
}
