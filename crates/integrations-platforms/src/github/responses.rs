//! Turns GitHub responses into messages for the operator.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;

use crate::http::PlatformResponse;
use crate::redact::quote_platform_text;

/// Returns GitHub's `message` field, quoted, or `None` when the body is not GitHub JSON.
pub(crate) fn github_message(response: &PlatformResponse) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    let message = body.get("message")?.as_str()?;
    Some(quote_platform_text(message))
}

/// Formats GitHub's message as a suffix such as `: Bad credentials`, or nothing.
pub(crate) fn message_suffix(response: &PlatformResponse) -> String {
    github_message(response)
        .map(|message| format!(" ({message})"))
        .unwrap_or_default()
}

/// Formats GitHub's message to follow a status code, such as `: Bad credentials`, or nothing.
pub(crate) fn status_detail(response: &PlatformResponse) -> String {
    github_message(response)
        .map(|message| format!(": {message}"))
        .unwrap_or_default()
}

/// Describes a primary or secondary rate limit, or returns `None` when the response is not one.
///
/// GitHub signals a primary limit with 403 or 429 and `x-ratelimit-remaining: 0`, resetting at
/// `x-ratelimit-reset` (UTC epoch seconds); a secondary limit with 403 or 429 and a
/// `retry-after` header in seconds, or a message that mentions the secondary rate limit.
pub(crate) fn rate_limit_message(response: &PlatformResponse, who: &str) -> Option<String> {
    if !matches!(
        response.status,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    ) {
        return None;
    }
    let remaining_zero = response.header("x-ratelimit-remaining").map(str::trim) == Some("0");
    let retry_after = response.retry_after_secs();
    let mentions_limit = github_message(response)
        .is_some_and(|message| message.to_ascii_lowercase().contains("rate limit"));
    if !remaining_zero && retry_after.is_none() && !mentions_limit {
        return None;
    }

    let mut message = format!("GitHub rate limit exceeded for {who}");
    if let Some(seconds) = retry_after {
        let delay = chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(0));
        match Utc::now().checked_add_signed(delay) {
            Some(at) => message.push_str(&format!(
                "; retry after {seconds} s (retry-after), at {}",
                iso_8601(at)
            )),
            None => message.push_str(&format!("; retry after {seconds} s (retry-after)")),
        }
    }
    if remaining_zero {
        let reset = response
            .header("x-ratelimit-reset")
            .and_then(|value| value.trim().parse::<i64>().ok())
            .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0));
        match reset {
            Some(reset) => message.push_str(&format!(
                "; the limit resets at {} (x-ratelimit-reset)",
                iso_8601(reset)
            )),
            None => message.push_str("; no reset time was given"),
        }
    }
    message.push_str("; the check will pass again once the limit resets");
    Some(message)
}

/// Describes a 5xx response.
pub(crate) fn server_error_message(response: &PlatformResponse, call: &str) -> String {
    format!(
        "GitHub returned {} for {call}{}; the platform or the network path to it is failing, \
         retry later",
        response.status,
        message_suffix(response)
    )
}

/// Describes a response with no specific meaning for the call.
pub(crate) fn unexpected_message(response: &PlatformResponse, call: &str) -> String {
    format!(
        "GitHub returned {} for {call}{}",
        response.status,
        message_suffix(response)
    )
}

/// Describes a 401 on an App JWT. GitHub rejects JWTs whose `iat` lies in its future or whose
/// `exp` is more than 10 minutes ahead, which happens when this server's clock is off.
pub(crate) fn jwt_rejected_message(response: &PlatformResponse, app: &str, call: &str) -> String {
    let github = github_message(response).unwrap_or_else(|| "no reason given".to_owned());
    let lower = github.to_ascii_lowercase();
    let clock_hint = lower.contains("iat")
        || lower.contains("exp")
        || lower.contains("issued at")
        || lower.contains("expiration");
    if clock_hint {
        format!(
            "GitHub rejected the JWT of {app} on {call} ({github}); suspect clock skew: check \
             that this server's clock is synchronised (NTP), because GitHub rejects JWTs issued \
             in its future or expiring more than 10 minutes ahead"
        )
    } else {
        format!(
            "GitHub rejected the JWT of {app} on {call} ({github}); check that appId is the App's \
             id and privateKey is a current key of that App, and that this server's clock is \
             correct"
        )
    }
}

/// Formats a time as ISO 8601 in UTC with second precision.
pub(crate) fn iso_8601(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    fn response(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: &str,
    ) -> PlatformResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        PlatformResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn huge_retry_after_is_capped() {
        for value in [
            "9223372036854775807",
            "100000000000000",
            "18446744073709551615",
        ] {
            let response = response(429, &[("retry-after", value)], r#"{"message":"slow down"}"#);
            let message = rate_limit_message(&response, "the app").unwrap();
            assert!(
                message.contains("retry after 86400 s"),
                "{value}: {message}"
            );
        }
    }

    #[test]
    fn primary_limit_gives_reset() {
        let response = response(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000000"),
            ],
            r#"{"message":"API rate limit exceeded"}"#,
        );
        let message = rate_limit_message(&response, "the token").unwrap();
        assert!(message.contains("2023-11-14T22:13:20Z"), "{message}");
    }

    #[test]
    fn plain_forbidden_not_limit() {
        let response = response(403, &[], r#"{"message":"Resource not accessible"}"#);
        assert!(rate_limit_message(&response, "the token").is_none());
    }

    #[test]
    fn iat_rejection_suspects_clock() {
        let response = response(
            401,
            &[],
            r#"{"message":"'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"}"#,
        );
        let message = jwt_rejected_message(&response, "GitHub App 1", "the installation lookup");
        assert!(message.contains("clock skew"), "{message}");
    }
}
