//! "Did you mean": for a name that matches none of those allowed, the
//! closest allowed one by edit distance (within a budget of work per file),
//! or a short list of them when none is close. `cache_key` asks it too, for
//! a misspelt function in a cache key, and `expr` for a misspelt function,
//! context, variable or needed job in an expression.

use crate::yaml::abbreviate;

/// How much work, in edit-distance table cells, we spend on "did you mean"
/// suggestions per file. A file with thousands of long job names and as many
/// typos could otherwise take seconds; past this budget hints just list names.
pub(super) const SUGGESTION_BUDGET: usize = 10_000_000;

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo: at most a third of the letters differ, ignoring case. Each
/// comparison is charged to `budget`; once that runs out there is no guess.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str], budget: &mut usize) -> Option<&'c str> {
    let word_lower = word.to_lowercase();
    let word_len = word_lower.chars().count();
    let mut best: Option<(usize, &str)> = None;
    for &candidate in candidates {
        let candidate_len = candidate.chars().count();
        let limit = (word_len.max(candidate_len) / 3).max(1);
        if word_len.abs_diff(candidate_len) > limit {
            // The distance is at least the difference in length.
            continue;
        }
        let cost = (word_len + 1) * (candidate_len + 1);
        if cost > *budget {
            return None;
        }
        *budget -= cost;
        let distance = edit_distance(&word_lower, &candidate.to_lowercase());
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// The edit distance between `a` and `b` in characters, where swapping two
/// neighbours counts as one edit (optimal string alignment), because
/// `biuld` for `build` is as typical a typo as a missing letter.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the usual table: two rows back, the previous, the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost).min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Lists up to ten names for a hint, so a pipeline with thousands of jobs
/// does not produce a thousand-name hint.
pub(crate) fn list_some(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = names.iter().take(SHOWN).map(|name| abbreviate(name)).collect();
    if names.len() > SHOWN {
        format!("{}, and {} more", shown.join(", "), names.len() - SHOWN)
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        let cases = [
            ("", "", 0),
            ("a", "", 1),
            ("build", "build", 0),
            ("biuld", "build", 1),
            ("step", "steps", 1),
            ("runs_on", "runs-on", 1),
            ("kitten", "sitting", 3),
            ("ca", "abc", 3),
        ];
        for (a, b, distance) in cases {
            assert_eq!(edit_distance(a, b), distance, "{a} {b}");
        }
    }
}
