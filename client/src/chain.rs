//! An error with every cause in its chain, `a: b: c`, for logs and
//! messages: tonic's transport errors say only "transport error" at the top
//! and the reason further down. Each cause is printed once: tonic and hyper
//! often repeat their source in their own text ("tcp connect error:
//! Connection refused (os error 111)" above "Connection refused (os error
//! 111)"), and a cause whose text is already there is left out.

use std::error::Error;

/// `e` and its causes, `a: b: c`, each text printed once.
pub fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What went wrong below `e`'s own text when it has causes (tonic's outer
/// "transport error" says nothing), else `e` itself; without a final full
/// stop, so that the caller can go on with "; what to do".
pub fn cause(e: &dyn Error) -> String {
    let text = e.source().map_or_else(|| e.to_string(), error_chain);
    text.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fmt;

    /// An error with a text and an optional cause.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn chain_of(texts: &[&'static str]) -> E {
        let mut e: Option<Box<E>> = None;
        for t in texts.iter().rev() {
            e = Some(Box::new(E(t, e)));
        }
        *e.expect("at least one text")
    }

    #[test]
    fn each_cause_is_printed_once() {
        let cases: &[(&[&str], &str)] = &[
            (&["alone"], "alone"),
            (&["transport error", "connection refused"], "transport error: connection refused"),
            // tonic's connect error repeats its source in its own text.
            (
                &[
                    "transport error",
                    "tcp connect error: Connection refused (os error 111)",
                    "Connection refused (os error 111)",
                ],
                "transport error: tcp connect error: Connection refused (os error 111)",
            ),
            // A cause repeated further down is still printed once.
            (&["a", "b", "a"], "a: b"),
            // An empty cause adds nothing.
            (&["a", "", "c"], "a: c"),
            (&["a", "b", "c"], "a: b: c"),
        ];
        for (texts, want) in cases {
            assert_eq!(error_chain(&chain_of(texts)), *want, "{texts:?}");
        }
    }

    #[test]
    fn the_cause_skips_an_empty_top_and_a_final_full_stop() {
        let cases: &[(&[&str], &str)] = &[
            (&["transport error"], "transport error"),
            (&["transport error", "invalid certificate."], "invalid certificate"),
            (&["transport error", "tls: bad", "bad"], "tls: bad"),
            (&["transport error", "x", "y."], "x: y"),
        ];
        for (texts, want) in cases {
            assert_eq!(cause(&chain_of(texts)), *want, "{texts:?}");
        }
    }
}
