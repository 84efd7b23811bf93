//! The one check of an `http://` or `https://` URL the coordinator fetches
//! or calls: an analysis provider's address, an app's artifact, a gate's
//! webhook.

use super::{Checker, Entry};

/// Where `url`, which `subject` names, is refused, and why: the offset of
/// the offending character (in characters) and the message. At most
/// `max_len` characters, no spaces or control characters, a scheme of
/// `http://` or `https://`, and a host.
pub(crate) fn http_url_problem(url: &str, subject: &str, max_len: usize) -> Option<(usize, String)> {
    if url.chars().count() > max_len {
        Some((0, format!("{subject} is over the limit of {max_len} characters")))
    } else if let Some(at) = url.chars().position(|c| c.is_whitespace() || c.is_control()) {
        Some((at, format!("{subject} has a space or a control character")))
    } else if !(url.starts_with("http://") || url.starts_with("https://")) {
        Some((0, format!("{subject} must start with `http://` or `https://`")))
    } else if !has_host(url) {
        Some((0, format!("{subject} names no host")))
    } else {
        None
    }
}

impl Checker<'_> {
    /// A URL the coordinator calls as it is written (`entry`, which
    /// `subject` names; `used` says what uses it, "an analysis"): a string,
    /// without `${{ }}` (nothing fills it in; `unfilled_hint` says what to
    /// write instead), under [`http_url_problem`]'s rules; `hint` shows a
    /// good one.
    pub(super) fn called_url(
        &mut self,
        entry: &Entry<'_>,
        subject: &str,
        used: &str,
        (hint, unfilled_hint): (&str, &str),
        max_len: usize,
    ) -> Option<String> {
        let node = entry.value;
        let Some(url) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("{subject} must be a URL, found {}", node.describe()),
                Some(hint.into()),
            );
            return None;
        };
        let problem = match url.find("${{") {
            Some(at) => Some((
                url[..at].chars().count(),
                format!("{subject} has `${{{{ }}}}`, but {used} is used as it is written, with nothing filled in"),
                unfilled_hint,
            )),
            None => http_url_problem(url, subject, max_len).map(|(at, message)| (at, message, hint)),
        };
        if let Some((at, message, hint)) = problem {
            self.error(node.pos_at(at), message, Some(hint.to_owned()));
            return None;
        }
        Some(url.to_owned())
    }
}

/// Whether the URL `url` (which starts with a scheme and `://`) names a
/// host: something before its port, path, query or fragment, after any
/// `user@`.
fn has_host(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    !host.is_empty() && host != "[]"
}

#[cfg(test)]
mod tests {
    use super::http_url_problem;

    #[test]
    fn urls() {
        let table: &[(&str, Option<(usize, &str)>)] = &[
            ("http://prometheus:9090", None),
            ("https://user@[::1]:8443/x?y#z", None),
            ("ftp://host/x", Some((0, "u must start with `http://` or `https://`"))),
            ("http://:9090/x", Some((0, "u names no host"))),
            ("http:///x", Some((0, "u names no host"))),
            ("http://[]/x", Some((0, "u names no host"))),
            ("http://a b", Some((8, "u has a space or a control character"))),
            ("http://aaaaaaaaaaaaaaaaaaaaaaaa", Some((0, "u is over the limit of 30 characters"))),
        ];
        for (url, want) in table {
            let got = http_url_problem(url, "u", 30);
            assert_eq!(got.as_ref().map(|(at, m)| (*at, m.as_str())), *want, "{url}");
        }
    }
}
