//! In-process mock of the Microsoft Entra ID token endpoint (client credentials).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;
use warp::http::{Method, Response, StatusCode};
use warp::hyper::Body;

use super::server::{handler, json_response, serve, ErrorStyle, MockControls, MockRequest, Served};
use super::{Fault, RecordedRequest};

/// The scope Azure DevOps tokens are requested for.
const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

/// Lifetime Entra gives access tokens, in seconds, as announced in `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// An endpoint of the mock, for counters and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntraEndpoint {
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// Any other path.
    Other,
}

#[derive(Default)]
struct Client {
    /// Secret values and whether each has expired.
    secrets: Vec<(String, bool)>,
}

/// A token the mock issued; Azure DevOps mocks that share the registry accept it.
#[derive(Debug, Clone)]
pub(crate) struct IssuedEntraToken {
    pub(crate) client_id: String,
    pub(crate) expires: Instant,
}

/// Tokens issued by a [`MockEntra`], shared with [`super::MockAzureDevops`].
pub(crate) type TokenRegistry = Arc<Mutex<HashMap<String, IssuedEntraToken>>>;

#[derive(Default)]
struct EntraState {
    /// Clients per lowercase tenant id or domain.
    tenants: HashMap<String, HashMap<String, Client>>,
    token_lifetime: Option<Duration>,
}

struct EntraMockInner {
    controls: MockControls<EntraEndpoint>,
    state: Mutex<EntraState>,
    tokens: TokenRegistry,
}

/// A mock Entra authority on `127.0.0.1` with an ephemeral port; it stops when dropped.
///
/// It stores tenants, their clients and secrets (some expired) and responds to the client-credentials
/// grant with `{access_token, expires_in, token_type}` or Entra's error JSON
/// `{error, error_description, error_codes}` with AADSTS codes: 90002 unknown tenant, 700016
/// unknown client, 7000215 wrong secret, 7000222 expired secret, 70011 wrong scope.
pub struct MockEntra {
    inner: Arc<EntraMockInner>,
    served: Served,
}

impl MockEntra {
    /// Starts the mock.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(EntraMockInner {
            controls: MockControls::new(ErrorStyle::Entra),
            state: Mutex::new(EntraState::default()),
            tokens: TokenRegistry::default(),
        });
        let served = serve(handler(Arc::clone(&inner), handle))?;
        Ok(Self { inner, served })
    }

    /// Returns the authority URL, such as `http://127.0.0.1:40125/`.
    pub fn authority(&self) -> Url {
        Url::parse(&format!("http://{}/", self.served.address)).expect("socket address URL parses")
    }

    pub(crate) fn token_registry(&self) -> TokenRegistry {
        Arc::clone(&self.inner.tokens)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EntraState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a tenant, by id or domain.
    pub fn add_tenant(&self, tenant: &str) {
        self.state()
            .tenants
            .entry(tenant.to_ascii_lowercase())
            .or_default();
    }

    /// Adds a client secret of `client_id` in `tenant`; `expired` secrets are rejected with
    /// AADSTS7000222.
    pub fn add_client_secret(&self, tenant: &str, client_id: &str, secret: &str, expired: bool) {
        let mut state = self.state();
        let clients = state
            .tenants
            .entry(tenant.to_ascii_lowercase())
            .or_default();
        let client = clients.entry(client_id.to_ascii_lowercase()).or_default();
        client.secrets.push((secret.to_owned(), expired));
    }

    /// Sets the lifetime of new tokens (`expires_in`).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = Some(lifetime);
    }

    /// Invalidates every token issued so far.
    pub fn revoke_tokens(&self) {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }

    /// Adds latency to every response.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.controls.set_latency(latency);
    }

    /// Makes `endpoint` respond with `fault`; `None` restores normal responses.
    pub fn set_fault(&self, endpoint: EntraEndpoint, fault: Option<Fault>) {
        self.inner.controls.set_fault(endpoint, fault);
    }

    /// Returns how many requests `endpoint` received.
    pub fn count(&self, endpoint: EntraEndpoint) -> usize {
        self.inner.controls.count(endpoint)
    }

    /// Returns every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.controls.requests()
    }
}

impl Drop for MockEntra {
    fn drop(&mut self) {
        self.inner.controls.stop();
    }
}

fn classify(request: &MockRequest) -> EntraEndpoint {
    match (&request.method, request.segments().as_slice()) {
        (&Method::POST, [_, "oauth2", "v2.0", "token"]) => EntraEndpoint::Token,
        _ => EntraEndpoint::Other,
    }
}

async fn handle(inner: Arc<EntraMockInner>, request: MockRequest) -> Response<Body> {
    let endpoint = classify(&request);
    if let Some(response) = inner.controls.intercept(endpoint, &request).await {
        return response;
    }
    if endpoint == EntraEndpoint::Other {
        return entra_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests to /{tenant}/oauth2/v2.0/token.",
        );
    }
    let tenant = request.segments()[0].to_ascii_lowercase();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    let state = inner
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    match issue(&state, &tenant, &form) {
        Ok(client_id) => {
            let lifetime = state.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
            let token = format!("mock-access-{}", uuid::Uuid::new_v4().simple());
            inner
                .tokens
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .insert(
                    token.clone(),
                    IssuedEntraToken {
                        client_id,
                        expires: Instant::now() + lifetime,
                    },
                );
            json_response(
                StatusCode::OK,
                serde_json::json!({
                    "token_type": "Bearer",
                    "expires_in": lifetime.as_secs(),
                    "ext_expires_in": lifetime.as_secs(),
                    "access_token": token,
                }),
            )
        }
        Err((status, error, code, description)) => entra_error(status, error, code, &description),
    }
}

/// An Entra error response: status, `error`, AADSTS code and description.
type Rejection = (StatusCode, &'static str, u64, String);

/// Checks a client-credentials request and returns the client id, or Entra's error response.
fn issue(
    state: &EntraState,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<String, Rejection> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            "The app requested an unsupported grant type.".to_owned(),
        ));
    }
    let Some(clients) = state.tenants.get(tenant) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ));
    };
    let client_id = field("client_id").to_ascii_lowercase();
    let Some(client) = clients.get(&client_id) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        ));
    };
    match client.secrets.iter().find(|(secret, _)| secret == field("client_secret")) {
        None => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".to_owned(),
            ))
        }
        Some((_, true)) => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_222,
                format!("The provided client secret keys for app '{client_id}' are expired."),
            ))
        }
        Some((_, false)) => {}
    }
    if field("scope") != AZURE_DEVOPS_SCOPE {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70_011,
            "The provided value for the input parameter 'scope' is not valid.".to_owned(),
        ));
    }
    Ok(client_id)
}

fn entra_error(status: StatusCode, error: &str, code: u64, description: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000"),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}
