//! Keeps secrets out of probe messages.

use std::fmt;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Removes a prefix of `secret` (at least [`MIN_SECRET_LEN`] bytes) that ends at an ellipsis.
fn scrub_cut_prefix(message: &str, secret: &str) -> String {
    const ELLIPSIS: char = '…';
    if !message.contains(ELLIPSIS) {
        return message.to_owned();
    }
    let mut scrubbed = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(position) = rest.find(ELLIPSIS) {
        let before = &rest[..position];
        // The longest prefix of the secret that the text before the ellipsis ends with.
        let longest = (MIN_SECRET_LEN..secret.len().min(before.len() + 1))
            .rev()
            .filter(|length| secret.is_char_boundary(*length))
            .find(|length| before.ends_with(&secret[..*length]));
        match longest {
            Some(length) => {
                scrubbed.push_str(&before[..before.len() - length]);
                scrubbed.push_str("[REDACTED]");
            }
            None => scrubbed.push_str(before),
        }
        scrubbed.push(ELLIPSIS);
        rest = &rest[position + ELLIPSIS.len_utf8()..];
    }
    scrubbed.push_str(rest);
    scrubbed
}

/// Reports whether a word looks like an opaque token: long, made of the characters tokens and
/// JWTs use, and mixing letters with digits, which ordinary words in platform messages do not.
/// UUIDs (client, tenant and request ids) are identifiers, not secrets, and are kept.
fn looks_like_token(word: &str) -> bool {
    if is_uuid(word) {
        return false;
    }
    let word =
        word.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';' | '(' | ')' | '[' | ']'));
    word.chars().count() >= 16
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '=' | '+' | '/' | '~' | '%')
        })
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
}

/// Reports whether a word is a UUID in its hyphenated form, ignoring surrounding punctuation.
fn is_uuid(word: &str) -> bool {
    let word = word.trim_matches(|c: char| !c.is_ascii_hexdigit());
    let groups: Vec<&str> = word.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|group| group.chars().all(|c| c.is_ascii_hexdigit()))
}

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
        let mut remember = |variant: String| {
            let known = values.iter().any(|value| value.as_str() == variant);
            if variant.len() >= MIN_SECRET_LEN && !variant.starts_with("-----") && !known {
                values.push(Zeroizing::new(variant));
            }
        };
        let value = value.trim();
        if value.contains('\n') {
            // Multi-line values are PEM keys: remember the whole key and each of its lines.
            remember(value.to_owned());
            for line in value.lines() {
                remember(line.trim().to_owned());
            }
            return;
        }
        // A platform may echo a token the way it arrived: percent-encoded in a URL or form body,
        // or as base64 without its padding.
        remember(value.to_owned());
        remember(
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        remember(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
        remember(value.trim_end_matches('=').to_owned());
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
        for value in &sorted {
            if message.contains(value) {
                message = message.replace(value, "[REDACTED]");
            }
        }
        // Quoted platform text is cut at MAX_QUOTED_CHARS, which can leave the start of a secret
        // in front of the ellipsis where the whole-value match above cannot see it.
        for value in &sorted {
            message = scrub_cut_prefix(&message, value);
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
    // Token-like words are masked before the cut, so no cut can leave part of one behind.
    let cleaned = cleaned
        .split_whitespace()
        .map(|word| {
            if looks_like_token(word) {
                "[REDACTED]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
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
    fn scrub_removes_encoded_echoes() {
        let secrets = Secrets::default();
        secrets.add("Qx8Q~abcdefghijKLMNOPqrstuv.wxyz_0123456789");
        secrets.add("OmszajVoN2cyczU=");
        let form = secrets.scrub("client_secret=Qx8Q%7EabcdefghijKLMNOPqrstuv.wxyz_0123456789");
        assert_eq!(form, "client_secret=[REDACTED]");
        let header = secrets.scrub("header=Basic%20OmszajVoN2cyczU%3D");
        assert!(!header.contains("OmszajVoN2cyczU"), "{header}");
    }

    #[test]
    fn scrub_removes_cut_secret() {
        let secrets = Secrets::default();
        secrets.add("ghp_SECRETPATVALUE1234567890abcdefghij");
        let message = secrets.scrub("Bad credentials ghp_SECRETPATVAL…");
        assert_eq!(message, "Bad credentials [REDACTED]…");
    }

    #[test]
    fn quote_masks_long_token_before_cut() {
        let jwt = format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.{}",
            "a1".repeat(120),
            "b2".repeat(120)
        );
        let text = format!("{} denied for {jwt}", "B".repeat(150));
        let quoted = quote_platform_text(&text);
        assert!(!quoted.contains("eyJ"), "{quoted}");
        assert!(quoted.contains("[REDACTED]"), "{quoted}");
    }

    #[test]
    fn quote_keeps_uuid() {
        let text = "service principal 0b3c1a52-7d4e-4f61-9a2b-5c8d7e6f1a20 not found";
        assert_eq!(quote_platform_text(text), text);
    }

    #[test]
    fn quote_keeps_plain_words() {
        let text = "Resource not accessible by integration, see https://docs.github.com/rest";
        assert_eq!(quote_platform_text(text), text);
    }

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
