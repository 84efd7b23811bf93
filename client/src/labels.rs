//! The one grammar of agent labels, `k=v,k=v`: the agent's `--labels`,
//! `drover certs issue-agent --labels`, and the text of the labels
//! extension in an agent's certificate (`drover-pki`), which the
//! coordinator reads. Pairs are trimmed and empty pairs skipped; keys and
//! values are non-empty, without ',' or '=' or control characters, at most
//! [`MAX_LABEL_LEN`] bytes; each key once; at most [`MAX_LABELS`]. Pure.

use std::collections::BTreeMap;

/// The longest label key or value, in bytes, and the most labels one agent
/// may have: enough for any real use, and a bound on the certificate's size.
pub const MAX_LABEL_LEN: usize = 128;
pub const MAX_LABELS: usize = 64;

/// Parses `k=v,k=v`; the error says what is wrong and how to write it.
pub fn parse(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not k=v; write labels as os=linux,arch=x86_64"))?;
        for (what, text) in [("key", k), ("value", v)] {
            if text.is_empty() {
                return Err(format!("label {pair:?} has an empty {what}"));
            }
            if text.contains('=') {
                return Err(format!("label {pair:?}: a {what} may not contain '='"));
            }
            if text.len() > MAX_LABEL_LEN {
                return Err(format!("label {pair:?}: the {what} is longer than {MAX_LABEL_LEN} bytes"));
            }
            if text.chars().any(char::is_control) {
                return Err(format!("label {pair:?}: the {what} contains a control character"));
            }
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels given; an agent may have at most {MAX_LABELS}", labels.len()));
    }
    Ok(labels)
}

/// Labels as the extension holds them and as `--labels` takes them:
/// `k=v,k=v`, sorted by key.
pub fn text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        let ok: &[(&str, &str)] = &[
            ("", ""),
            ("os=linux", "os=linux"),
            (" role=b , os=linux ,", "os=linux,role=b"),
            ("a.b/c=x-y_z", "a.b/c=x-y_z"),
        ];
        for (given, want) in ok {
            assert_eq!(text(&parse(given).unwrap()), *want, "{given:?}");
        }
        let long = "k".repeat(MAX_LABEL_LEN + 1);
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}=v")).collect();
        let refused: &[(&str, &str)] = &[
            ("os", "is not k=v"),
            ("=linux", "empty key"),
            ("os=", "empty value"),
            ("os=a=b", "may not contain '='"),
            ("os=a,os=b", "\"os\" is given twice"),
            (&format!("{long}=v"), "longer than 128 bytes"),
            ("os=li\u{1b}nux", "control character"),
            (&many.join(","), "at most 64"),
        ];
        for (given, want) in refused {
            let err = parse(given).unwrap_err();
            assert!(err.contains(want), "{given:?}: {err}");
        }
    }
}
