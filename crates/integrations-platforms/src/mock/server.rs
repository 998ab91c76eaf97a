//! Parts every mock platform shares: serving on loopback, request counters, added latency and
//! switchable failures.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::hyper::Body;
use warp::Filter;

/// A failure a mock endpoint returns in place of its normal response, switchable at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Responds with this status and a platform-shaped JSON error body (401, 403, 404, 5xx).
    Status(u16),
    /// Responds with `status` (403 or 429, both used by GitHub) and the rate-limit headers
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset` set `reset_in` from now (UTC epoch
    /// seconds) and `retry-after` in seconds.
    RateLimited {
        /// Status code of the response.
        status: u16,
        /// Time until the limit resets.
        reset_in: Duration,
    },
    /// Responds with 203 Non-Authoritative Information with an HTML sign-in page, as Azure DevOps
    /// does for requests it does not accept as authenticated.
    SignInPage,
    /// Responds with this status and an HTML page, as a web server or proxy in front of the
    /// API might.
    HtmlPage(u16),
    /// Responds with 302 Found with this `Location`.
    Redirect(String),
    /// Accepts the request and never responds (until the mock stops).
    Hang,
}

/// A request a mock received; the `Authorization` header is recorded only as present or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, such as `GET`.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Whether an `Authorization` header was sent.
    pub has_authorization: bool,
}

/// One request as the mock handlers see it.
pub(crate) struct MockRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl MockRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Returns the bearer token of the `Authorization` header.
    pub(crate) fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// Returns the path segments, without empty ones.
    pub(crate) fn segments(&self) -> Vec<&str> {
        self.path
            .split('/')
            .filter(|part| !part.is_empty())
            .collect()
    }
}

/// Body format of a mock's [`Fault::Status`] responses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorStyle {
    Github,
    Entra,
    Devops,
}

/// Counters, latency, faults and the request log of one mock.
pub(crate) struct MockControls<E> {
    state: Mutex<ControlState<E>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    style: ErrorStyle,
}

struct ControlState<E> {
    latency: Duration,
    faults: HashMap<E, Fault>,
    counts: HashMap<E, usize>,
    requests: Vec<RecordedRequest>,
}

impl<E: Copy + Eq + Hash> MockControls<E> {
    pub(crate) fn new(style: ErrorStyle) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Self {
            state: Mutex::new(ControlState {
                latency: Duration::ZERO,
                faults: HashMap::new(),
                counts: HashMap::new(),
                requests: Vec::new(),
            }),
            shutdown,
            style,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState<E>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub(crate) fn set_fault(&self, endpoint: E, fault: Option<Fault>) {
        let mut state = self.lock();
        match fault {
            Some(fault) => state.faults.insert(endpoint, fault),
            None => state.faults.remove(&endpoint),
        };
    }

    pub(crate) fn count(&self, endpoint: E) -> usize {
        self.lock().counts.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub(crate) fn reset_counts(&self) {
        let mut state = self.lock();
        state.counts.clear();
        state.requests.clear();
    }

    /// Counts and logs the request, waits the added latency, and returns the fault's response
    /// when one is set for the endpoint.
    pub(crate) async fn intercept(
        &self,
        endpoint: E,
        request: &MockRequest,
    ) -> Option<Response<Body>> {
        let (latency, fault) = {
            let mut state = self.lock();
            *state.counts.entry(endpoint).or_insert(0) += 1;
            state.requests.push(RecordedRequest {
                method: request.method.to_string(),
                path: request.path.clone(),
                has_authorization: request.headers.contains_key("authorization"),
            });
            (state.latency, state.faults.get(&endpoint).cloned())
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = fault?;
        Some(self.render(fault).await)
    }

    async fn render(&self, fault: Fault) -> Response<Body> {
        match fault {
            Fault::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json_response(status, error_body(self.style, status))
            }
            Fault::RateLimited { status, reset_in } => rate_limited(status, reset_in),
            Fault::SignInPage => sign_in_page(),
            Fault::HtmlPage(code) => Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
                .header("content-type", "text/html; charset=utf-8")
                .body(Body::from(
                    "<!DOCTYPE html><html><body>Welcome</body></html>",
                ))
                .expect("static response parts are valid"),
            Fault::Redirect(location) => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", location)
                .body(Body::empty())
                .expect("static response parts are valid"),
            Fault::Hang => {
                let mut stopped = self.shutdown.subscribe();
                let _ = stopped.wait_for(|stopped| *stopped).await;
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"message": "stopped"}),
                )
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.shutdown.send_replace(true);
    }
}

fn error_body(style: ErrorStyle, status: StatusCode) -> serde_json::Value {
    let reason = status.canonical_reason().unwrap_or("Error");
    match style {
        ErrorStyle::Github => serde_json::json!({
            "message": reason,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_str(),
        }),
        ErrorStyle::Entra => serde_json::json!({
            "error": "temporarily_unavailable",
            "error_description": format!("AADSTS50001: mock failure {}", status.as_u16()),
            "error_codes": [50001],
        }),
        ErrorStyle::Devops => serde_json::json!({
            "$id": "1",
            "message": reason,
            "typeName": "Microsoft.VisualStudio.Services.WebApi.VssServiceException",
        }),
    }
}

fn rate_limited(status: u16, reset_in: Duration) -> Response<Body> {
    let reset = chrono::Utc::now().timestamp() + i64::try_from(reset_in.as_secs()).unwrap_or(0);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let body = serde_json::json!({
        "message": "API rate limit exceeded. Wait for the limit to reset.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    });
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-remaining", 0.into());
    headers.insert("x-ratelimit-limit", 5000.into());
    headers.insert("x-ratelimit-reset", reset.into());
    headers.insert("retry-after", reset_in.as_secs().into());
    response
}

fn sign_in_page() -> Response<Body> {
    let html = "<!DOCTYPE html><html><head><title>Sign in to your account</title></head>\
                <body><form method=\"post\" action=\"https://login.example.invalid/\">\
                <input type=\"email\" name=\"loginfmt\"/></form></body></html>";
    Response::builder()
        .status(StatusCode::NON_AUTHORITATIVE_INFORMATION)
        .header("content-type", "text/html; charset=utf-8")
        .body(Body::from(html))
        .expect("static response parts are valid")
}

/// Builds a JSON response.
pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("static response parts are valid")
}

type Handler =
    Arc<dyn Fn(MockRequest) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// A mock server task on `127.0.0.1` with an ephemeral port, stopped on drop.
pub(crate) struct Served {
    pub(crate) address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on `127.0.0.1:0`.
pub(crate) fn serve(handler: Handler) -> std::io::Result<Served> {
    let route = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and_then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body: Bytes| {
                let handler = Arc::clone(&handler);
                async move {
                    let request = MockRequest {
                        method,
                        path: path.as_str().to_owned(),
                        query,
                        headers,
                        body,
                    };
                    Ok::<_, Infallible>(handler(request).await)
                }
            },
        );
    let (address, server) = warp::serve(route)
        .try_bind_ephemeral(([127, 0, 0, 1], 0))
        .map_err(std::io::Error::other)?;
    let task = tokio::spawn(server);
    Ok(Served { address, task })
}

/// Boxes an async handler for [`serve`].
pub(crate) fn handler<S, F, Fut>(state: Arc<S>, function: F) -> Handler
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, MockRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(function(Arc::clone(&state), request)))
}
