//! Keeps secrets out of probe messages.

use std::fmt;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Maximum length, in characters, of platform-supplied text (such as GitHub's `message`) quoted in a report.
const MAX_QUOTED_CHARS: usize = 200;

/// Shortest value treated as a secret when scrubbing; shorter values would match ordinary words.
const MIN_SECRET_LEN: usize = 6;

/// The secrets one check handled: credentials, keys and the tokens it obtained. Every report
/// message passes through [`Secrets::scrub`] before it leaves the probe, as a second line of
/// defence behind messages that are built without secrets in the first place.
#[derive(Default)]
pub(crate) struct Secrets {
    values: Mutex<Vec<Zeroizing<String>>>,
}

impl Secrets {
    /// Remembers a value to remove from messages, with each of its lines when it spans several
    /// (a PEM key may be quoted line by line).
    pub(crate) fn add(&self, value: &str) {
        let mut values = self
            .values
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for piece in std::iter::once(value).chain(value.lines()) {
            let piece = piece.trim();
            if piece.len() >= MIN_SECRET_LEN && !piece.starts_with("-----") {
                values.push(Zeroizing::new(piece.to_owned()));
            }
        }
    }

    /// Replaces every remembered secret in `message` with `[REDACTED]`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let values = self
            .values
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut sorted: Vec<&str> = values.iter().map(|value| value.as_str()).collect();
        // Longest secrets first, so a secret that contains another is removed whole.
        sorted.sort_by_key(|value| std::cmp::Reverse(value.len()));
        let mut message = message.to_owned();
        for value in sorted {
            if message.contains(value) {
                message = message.replace(value, "[REDACTED]");
            }
        }
        message
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

/// Prepares text from a platform response for quoting: control characters become spaces and
/// the text is cut to [`MAX_QUOTED_CHARS`] characters.
pub(crate) fn quote_platform_text(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if cleaned.chars().count() <= MAX_QUOTED_CHARS {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(MAX_QUOTED_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secret() {
        let secrets = Secrets::default();
        secrets.add("ghp_abcdef123456");
        let message = secrets.scrub("token ghp_abcdef123456 was rejected");
        assert_eq!(message, "token [REDACTED] was rejected");
    }

    #[test]
    fn scrub_removes_key_lines() {
        let secrets = Secrets::default();
        secrets.add("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----");
        let message = secrets.scrub("bad key line MIIEvQIBADANBg here");
        assert!(!message.contains("MIIEvQIBADANBg"), "{message}");
    }

    #[test]
    fn quoted_text_cut() {
        let long = "x".repeat(500);
        assert_eq!(
            quote_platform_text(&long).chars().count(),
            MAX_QUOTED_CHARS + 1
        );
    }

    #[test]
    fn quoted_text_single_line() {
        assert_eq!(quote_platform_text("a\r\nb\tc"), "a b c");
    }
}
