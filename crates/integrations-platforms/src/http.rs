//! The guarded HTTP client every probe uses: no redirects, no proxy, allowed hosts only, a
//! request timeout, a bounded body, and a round-trip clock.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{RequestBuilder, StatusCode};
use url::Url;

use crate::guard::{display_host, BlockedAddressError, GuardedResolver, HostPolicy};

/// Largest response body a probe reads; platform responses from the probed endpoints are a few KiB.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Error building a probe's HTTP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientBuildError {
    /// The TLS backend or resolver could not be set up.
    #[error("failed to build the probe HTTP client: {0}")]
    Reqwest(#[from] reqwest::Error),
}

/// Sum of the round-trip times of the platform calls one check made.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    micros: AtomicU64,
    calls: AtomicU64,
}

impl Latency {
    fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the total in milliseconds, `None` when no call was made.
    pub(crate) fn millis(&self) -> Option<f64> {
        if self.calls.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.micros.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

/// A response that reached the probe, with its body read.
#[derive(Debug)]
pub(crate) struct PlatformResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl PlatformResponse {
    /// Returns the media type without parameters, lowercase, or an empty string.
    pub(crate) fn content_type(&self) -> String {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Returns a header as text, `None` when missing or not ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Returns the `retry-after` delay in seconds, capped at [`MAX_RETRY_AFTER_SECS`] because a
    /// hostile or broken server can send any number and callers add it to the current time.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|seconds| seconds.min(MAX_RETRY_AFTER_SECS))
    }
}

/// Maximum `retry-after` delay taken from a response, in seconds (one day).
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 24 * 60 * 60;

/// Failure of a call that produced no usable response. Messages name hosts, never paths with secrets,
/// headers or bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The URL or its resolved address is not permitted.
    Blocked(String),
    /// No response within the request timeout.
    TimedOut { host: String, timeout: Duration },
    /// Connection, DNS or protocol failure.
    Unreachable { host: String, cause: String },
    /// A 3xx response, because probes never follow redirects.
    Redirected {
        host: String,
        status: u16,
        location_host: Option<String>,
    },
    /// The body exceeded [`MAX_BODY_BYTES`].
    BodyTooLarge { host: String },
}

impl CallError {
    /// Returns a message for the operator.
    pub(crate) fn message(&self) -> String {
        match self {
            CallError::Blocked(message) => message.clone(),
            CallError::TimedOut { host, timeout } => format!(
                "{host} did not respond within {} ms (request timed out); check that the \
                 platform is reachable from this server",
                timeout.as_millis()
            ),
            CallError::Unreachable { host, cause } => {
                format!("failed to connect to {host}: {cause}")
            }
            CallError::Redirected {
                host,
                status,
                location_host,
            } => {
                let target = location_host
                    .as_deref()
                    .map(|target| format!(" to {target}"))
                    .unwrap_or_default();
                format!(
                    "{host} responded {status} with a redirect{target}; probes follow no \
                     redirects, so check that the configured URL is the API URL"
                )
            }
            CallError::BodyTooLarge { host } => format!(
                "{host} sent a response larger than {MAX_BODY_BYTES} bytes; this is not a \
                 platform API response"
            ),
        }
    }
}

/// HTTP client of one probe.
#[derive(Debug, Clone)]
pub(crate) struct ProbeClient {
    client: reqwest::Client,
    policy: Arc<HostPolicy>,
    timeout: Duration,
}

impl ProbeClient {
    pub(crate) fn new(
        policy: HostPolicy,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Self, ClientBuildError> {
        let resolver = GuardedResolver::new(policy.loopback_names());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself and bypass the resolved-address check.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(user_agent)
            .build()?;
        Ok(Self {
            client,
            policy: Arc::new(policy),
            timeout,
        })
    }

    /// Returns the underlying client, to build requests.
    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks a URL against the host policy.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), CallError> {
        self.policy.check_url(url).map_err(CallError::Blocked)
    }

    /// Sends a request to `url` (already set on `request`), reads the body and adds the
    /// round-trip time to `latency`. 3xx responses are errors, other statuses are returned.
    pub(crate) async fn send(
        &self,
        url: &Url,
        request: RequestBuilder,
        latency: &Latency,
    ) -> Result<PlatformResponse, CallError> {
        self.check_url(url)?;
        let host = display_host(url);

        let started = Instant::now();
        let result = self.exchange(&host, request).await;
        latency.record(started.elapsed());
        let response = result?;

        if response.status.is_redirection() {
            return Err(CallError::Redirected {
                host,
                status: response.status.as_u16(),
                location_host: location_host(&response.headers, url),
            });
        }
        Ok(response)
    }

    async fn exchange(
        &self,
        host: &str,
        request: RequestBuilder,
    ) -> Result<PlatformResponse, CallError> {
        let mut response = request
            .send()
            .await
            .map_err(|error| self.classify(host, &error))?;
        let status = response.status();
        let headers = response.headers().clone();

        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.classify(host, &error))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::BodyTooLarge {
                    host: host.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(PlatformResponse {
            status,
            headers,
            body,
        })
    }

    /// Maps a reqwest error without using its `Display`, which includes the full URL.
    fn classify(&self, host: &str, error: &reqwest::Error) -> CallError {
        if error.is_timeout() {
            return CallError::TimedOut {
                host: host.to_owned(),
                timeout: self.timeout,
            };
        }
        let mut source: Option<&(dyn StdError + 'static)> = error.source();
        let mut innermost = None;
        while let Some(cause) = source {
            if let Some(blocked) = cause.downcast_ref::<BlockedAddressError>() {
                return CallError::Blocked(format!(
                    "{blocked}; probes never reach link-local, metadata or (for plain http) \
                     non-loopback addresses"
                ));
            }
            innermost = Some(cause);
            source = cause.source();
        }
        let cause = innermost
            .map(|cause| cause.to_string())
            .unwrap_or_else(|| "connection failed".to_owned());
        CallError::Unreachable {
            host: host.to_owned(),
            cause,
        }
    }
}

/// Host and port of a redirect target, resolved against the request URL.
fn location_host(headers: &HeaderMap, base: &Url) -> Option<String> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let target = base.join(location).ok()?;
    Some(display_host(&target))
}
