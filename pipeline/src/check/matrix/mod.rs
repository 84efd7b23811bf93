//! A job's `matrix:`: one job per combination of values.
//!
//! ```yaml
//! test:
//!   matrix:
//!     rust: [stable, beta]
//!     os: [linux, macos]
//!     exclude: [{rust: beta, os: macos}]
//!     include: [{rust: nightly, os: linux, experimental: 'yes'}]
//!   fail-fast: false            # optional; by default one failure cancels the others
//!   runs-on: {os: "${{ matrix.os }}"}
//!   steps: [{run: "cargo +${{ matrix.rust }} test"}]
//! ```
//!
//! expands into `test (rust=stable, os=linux)`, `test (rust=stable,
//! os=macos)`, `test (rust=beta, os=linux)` and `test (rust=nightly,
//! os=linux, experimental=yes)`: the product of the lists, in the order
//! written (the first key outermost), less every combination that matches
//! an `exclude` entry (on all the keys it names), plus the `include`
//! entries. An `include` entry whose values for the matrix's own keys match
//! combinations adds its other keys to them (never replacing a value);
//! one that matches none is a combination of its own. `needs: [test]`
//! waits for every expansion, and `needs.test.result` reads all of them:
//! `failure` if one failed, else `cancelled` if one was, else `skipped` if
//! all were, else `success`.
//!
//! `${{ matrix.NAME }}` is filled in for each expansion in `runs-on`
//! values and the `cache` (its key and restore keys), and read like any
//! expression in `env`, `run` and `if:`.
//!
//! Keys are names (letters, digits, `_` and `-`, starting with a letter or
//! `_`); values go into job names and cache keys, so they are 1 to
//! [`MAX_MATRIX_VALUE_LEN`] letters, digits, `_`, `.` or `-` (numbers and
//! booleans as written). A matrix expands into at most [`MAX_MATRIX_JOBS`]
//! jobs, from at most [`MAX_MATRIX_PRODUCT`] combinations before
//! `exclude`, with at most [`MAX_MATRIX_KEYS`] keys.

use super::{Checker, Entry};
use crate::yaml::{Kind, Node, Pos, Scalar, ScalarType, Written, abbreviate};
use crate::{MAX_MATRIX_JOBS, MAX_MATRIX_KEYS, MAX_MATRIX_NAME_LEN, MAX_MATRIX_PRODUCT, MAX_MATRIX_VALUE_LEN};

const EXAMPLE: &str = "e.g. `matrix: {rust: [stable, beta], os: [linux]}`";
const VALUE_HINT: &str = "matrix values go into job names and cache keys: use 1 to 64 letters, digits, `_`, `.` or `-`";

/// One combination: values in key order.
pub(super) type Combo = Vec<(String, String)>;

/// A matrix as read: its keys in order, and its combinations.
pub(super) struct Matrix {
    pub(super) keys: Vec<String>,
    pub(super) combos: Vec<Combo>,
}

impl Checker<'_> {
    /// Reads the `matrix` of job `job`. `None` when it cannot be expanded;
    /// every problem has been reported, and `keys` then holds the keys that
    /// could be read, for checking the job's expressions.
    pub(super) fn matrix(&mut self, entry: &Entry<'_>, job: &str, keys: &mut Vec<String>) -> Option<Matrix> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!(
                    "`matrix` in job `{job}` must be a mapping of keys to lists of values, found {}",
                    entry.value.describe()
                ),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in the matrix of job `{job}`");
        let entries = self.entries(map, "key", &context);
        let mut ok = true;
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        let (mut include, mut exclude) = (None, None);
        for e in &entries {
            match e.key {
                "include" => include = Some(e),
                "exclude" => exclude = Some(e),
                key => {
                    if !self.matrix_key(key, e.key_pos, job) {
                        ok = false;
                        continue;
                    }
                    keys.push(key.to_owned());
                    match self.matrix_values(e, job) {
                        Some(values) => axes.push((key.to_owned(), values)),
                        None => ok = false,
                    }
                }
            }
        }
        let include = include.and_then(|e| {
            let combos = self.matrix_entries(e, job, "include", None);
            if combos.is_none() {
                ok = false;
            }
            combos
        });
        for combo in include.iter().flatten() {
            for (key, _) in combo {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        // Excluded keys must be the matrix's own, or they could never match.
        let own: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
        let exclude = exclude.and_then(|e| {
            let combos = self.matrix_entries(e, job, "exclude", Some(&own));
            if combos.is_none() {
                ok = false;
            }
            combos
        });
        if keys.len() > MAX_MATRIX_KEYS {
            self.error(
                entry.value_pos(),
                format!("the matrix of job `{job}` has {} keys, over the limit of {MAX_MATRIX_KEYS}", keys.len()),
                Some("split it into several jobs".to_owned()),
            );
            return None;
        }
        if axes.is_empty() && include.as_ref().is_none_or(Vec::is_empty) {
            if ok {
                self.error(
                    entry.value_pos(),
                    format!("the matrix of job `{job}` has no values"),
                    Some(EXAMPLE.to_owned()),
                );
            }
            return None;
        }
        if !ok {
            return None;
        }
        let product = axes.iter().fold(1usize, |n, (_, values)| n.saturating_mul(values.len()));
        if product > MAX_MATRIX_PRODUCT {
            self.error(
                entry.value_pos(),
                format!(
                    "the matrix of job `{job}` has {product} combinations before `exclude`, over the limit of \
                     {MAX_MATRIX_PRODUCT}"
                ),
                Some("use fewer values, or list the combinations you want with `include`".to_owned()),
            );
            return None;
        }
        let combos = expand(&axes, exclude.as_deref().unwrap_or_default(), include.as_deref().unwrap_or_default());
        if combos.len() > MAX_MATRIX_JOBS {
            self.error(
                entry.value_pos(),
                format!(
                    "the matrix of job `{job}` expands into {} jobs, over the limit of {MAX_MATRIX_JOBS}",
                    combos.len()
                ),
                Some("use fewer values, or remove combinations with `exclude`".to_owned()),
            );
            return None;
        }
        if combos.is_empty() {
            self.error(
                entry.value_pos(),
                format!("`exclude` removes every combination of the matrix of job `{job}`"),
                Some("remove the job, or exclude less".to_owned()),
            );
            return None;
        }
        if let Some(long) = combos.iter().map(|c| cell_name(job, c)).find(|n| n.chars().count() > MAX_MATRIX_NAME_LEN) {
            self.error(
                entry.value_pos(),
                format!(
                    "the matrix of job `{job}` names a job `{}`, longer than {MAX_MATRIX_NAME_LEN} characters",
                    abbreviate(&long)
                ),
                Some("use shorter keys or values".to_owned()),
            );
            return None;
        }
        Some(Matrix { keys: keys.clone(), combos })
    }

    fn matrix_key(&mut self, key: &str, pos: Pos, job: &str) -> bool {
        let mut chars = key.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.len() <= 50
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !valid {
            self.error(
                pos,
                format!("invalid matrix key `{}` in job `{job}`", abbreviate(key)),
                Some("a matrix key is read as `matrix.KEY`: 1 to 50 letters, digits, `_` and `-`, starting with a letter or `_`".to_owned()),
            );
        }
        valid
    }

    /// One matrix value, as text.
    fn matrix_value(&mut self, node: &Node, key: &str, job: &str) -> Option<String> {
        let Some(text) = node.scalar_text().filter(|_| matches!(node.kind, Kind::Scalar(_))) else {
            self.error(
                node.pos,
                format!(
                    "matrix value of `{key}` in job `{job}` must be a string or a number, found {}",
                    node.describe()
                ),
                Some(VALUE_HINT.to_owned()),
            );
            return None;
        };
        let valid = (1..=MAX_MATRIX_VALUE_LEN).contains(&text.chars().count())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            self.error(
                node.pos,
                format!("invalid matrix value `{}` of `{key}` in job `{job}`", abbreviate(text)),
                Some(VALUE_HINT.to_owned()),
            );
            return None;
        }
        Some(text.to_owned())
    }

    fn matrix_values(&mut self, entry: &Entry<'_>, job: &str) -> Option<Vec<String>> {
        let key = entry.key;
        let items: Vec<&Node> = match &entry.value.kind {
            Kind::Seq(items) if !items.is_empty() => items.iter().collect(),
            Kind::Scalar(_) => vec![entry.value],
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`{key}` in the matrix of job `{job}` must be a list of values, found {}",
                        entry.value.describe()
                    ),
                    Some(format!("e.g. `{key}: [a, b]`")),
                );
                return None;
            }
        };
        let mut values: Vec<String> = Vec::new();
        let mut ok = true;
        for item in items {
            match self.matrix_value(item, key, job) {
                Some(value) if values.contains(&value) => {
                    self.error(
                        item.pos,
                        format!("`{key}` in the matrix of job `{job}` lists `{value}` twice"),
                        Some("remove one of them".to_owned()),
                    );
                    ok = false;
                }
                Some(value) => values.push(value),
                None => ok = false,
            }
        }
        ok.then_some(values)
    }

    /// `include:` or `exclude:`: a list of mappings of keys to values; with
    /// `only`, every key must be one of those.
    fn matrix_entries(
        &mut self,
        entry: &Entry<'_>,
        job: &str,
        what: &str,
        only: Option<&[String]>,
    ) -> Option<Vec<Combo>> {
        let example = format!("e.g. `{what}: [{{os: linux, rust: nightly}}]`");
        let Kind::Seq(items) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!(
                    "`{what}` in the matrix of job `{job}` must be a list of mappings, found {}",
                    entry.value.describe()
                ),
                Some(example),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Kind::Map(map) = &item.kind else {
                self.error(
                    item.pos,
                    format!(
                        "entries of `{what}` in the matrix of job `{job}` must be mappings, found {}",
                        item.describe()
                    ),
                    Some(example.clone()),
                );
                ok = false;
                continue;
            };
            let context = format!("in `{what}` of the matrix of job `{job}`");
            let mut combo = Combo::new();
            let before = self.diagnostics.len();
            for e in self.entries(map, "key", &context) {
                if !self.matrix_key(e.key, e.key_pos, job) {
                    ok = false;
                    continue;
                }
                if only.is_some_and(|keys| !keys.iter().any(|k| k == e.key)) {
                    self.error(
                        e.key_pos,
                        format!(
                            "`{what}` in the matrix of job `{job}` names `{}`, which is not a key of the matrix",
                            abbreviate(e.key)
                        ),
                        Some(format!(
                            "{what} entries name values of the matrix's own keys, e.g. `{what}: [{{os: macos}}]`"
                        )),
                    );
                    ok = false;
                    continue;
                }
                match self.matrix_value(e.value, e.key, job) {
                    Some(value) => combo.push((e.key.to_owned(), value)),
                    None => ok = false,
                }
            }
            // An entry whose every key was refused is said to be wrong once.
            if combo.is_empty() && self.diagnostics.len() > before {
                continue;
            }
            if combo.is_empty() {
                self.error(
                    item.pos,
                    format!("an entry of `{what}` in the matrix of job `{job}` is empty"),
                    Some(example.clone()),
                );
                ok = false;
                continue;
            }
            out.push(combo);
        }
        ok.then_some(out)
    }
}

/// The combinations: the product of `axes` (the first key outermost), less
/// those `exclude` matches, plus `include`.
pub(super) fn expand(axes: &[(String, Vec<String>)], exclude: &[Combo], include: &[Combo]) -> Vec<Combo> {
    let mut combos: Vec<Combo> = if axes.is_empty() { Vec::new() } else { vec![Vec::new()] };
    for (key, values) in axes {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |value| {
                    let mut next = combo.clone();
                    next.push((key.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    let has = |combo: &Combo, (key, value): &(String, String)| combo.iter().any(|(k, v)| k == key && v == value);
    combos.retain(|combo| !exclude.iter().any(|ex| ex.iter().all(|pair| has(combo, pair))));
    let own = |key: &str| axes.iter().any(|(k, _)| k == key);
    for extra in include {
        // Matches on the matrix's own keys; adds the others.
        let mut matched = false;
        for combo in combos.iter_mut() {
            let fits =
                extra.iter().filter(|(k, _)| own(k)).all(|pair| has(combo, pair)) && extra.iter().any(|(k, _)| own(k));
            let clashes = extra.iter().any(|(k, v)| !own(k) && combo.iter().any(|(ck, cv)| ck == k && cv != v));
            if fits && !clashes {
                for (k, v) in extra.iter().filter(|(k, _)| !own(k)) {
                    if !combo.iter().any(|(ck, _)| ck == k) {
                        combo.push((k.clone(), v.clone()));
                    }
                }
                matched = true;
            }
        }
        if !matched && !combos.contains(extra) {
            combos.push(extra.clone());
        }
    }
    combos
}

/// The name of the expansion `combo` of job `job`: `test (rust=beta, os=linux)`.
pub(super) fn cell_name(job: &str, combo: &Combo) -> String {
    let values: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{job} ({})", values.join(", "))
}

/// The job `job` (a mapping) with `${{ matrix.NAME }}` replaced by the
/// combination's values in its `runs-on` and `cache`, which are decided
/// before the job runs. (`env`, `run` and `if:` read `matrix.NAME` as
/// expressions do.) A string that changes no longer points into the file
/// character for character.
pub(super) fn substitute_job(job: &Node, combo: &Combo) -> Node {
    let Kind::Map(map) = &job.kind else { return substitute(job, &[]) };
    let entries = map
        .iter()
        .map(|(key, value)| {
            let fill = matches!(key.scalar_text(), Some("runs-on" | "cache"));
            (substitute(key, &[]), substitute(value, if fill { combo } else { &[] }))
        })
        .collect();
    Node { pos: job.pos, kind: Kind::Map(entries) }
}

/// `node` with `${{ matrix.NAME }}` of `combo` filled in everywhere under it.
fn substitute(node: &Node, combo: &[(String, String)]) -> Node {
    let kind = match &node.kind {
        Kind::Null => Kind::Null,
        Kind::Scalar(scalar) if scalar.ty == ScalarType::Str && scalar.text.contains("${{") => {
            let text = fill(&scalar.text, combo);
            let written = if text == scalar.text { scalar.written } else { Written::Other };
            Kind::Scalar(Scalar { text, ty: scalar.ty, written })
        }
        Kind::Scalar(scalar) => Kind::Scalar(scalar.clone()),
        Kind::Seq(items) => Kind::Seq(items.iter().map(|item| substitute(item, combo)).collect()),
        Kind::Map(map) => Kind::Map(map.iter().map(|(k, v)| (substitute(k, combo), substitute(v, combo))).collect()),
    };
    Node { pos: node.pos, kind }
}

/// `text` with each `${{ matrix.NAME }}` (spaces inside optional) of a
/// key of `combo` replaced by its value.
fn fill(text: &str, combo: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim();
        match inner.strip_prefix("matrix.").and_then(|key| combo.iter().find(|(k, _)| k == key)) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 3 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
