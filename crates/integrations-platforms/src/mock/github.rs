//! In-process mock of the parts of the GitHub REST API the probe uses.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde::Deserialize;
use url::Url;
use warp::http::{Method, Response, StatusCode};
use warp::hyper::Body;

use super::server::{handler, json_response, serve, ErrorStyle, MockControls, MockRequest, Served};
use super::{Fault, RecordedRequest};

/// Lifetime GitHub gives installation tokens.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// GitHub accepts an App JWT whose `exp` is at most this far after the current time.
const MAX_JWT_LIFETIME_SECS: i64 = 10 * 60;

/// The one REST API version the mock accepts in `X-GitHub-Api-Version`.
const SUPPORTED_API_VERSION: &str = "2022-11-28";

/// Clock skew the mock tolerates on `iat`.
const IAT_SKEW_SECS: i64 = 30;

/// An endpoint of the mock, for counters and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GithubEndpoint {
    /// `GET /repos/{owner}/{repo}/installation`.
    RepoInstallation,
    /// `POST /app/installations/{id}/access_tokens`.
    AccessTokens,
    /// `GET /repos/{owner}/{repo}`.
    Repo,
    /// Any other path.
    Other,
}

/// Repositories of its account that an installation can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositorySelection {
    /// Every repository of the account.
    All,
    /// Only these repository names (without the owner).
    Selected(Vec<String>),
}

struct Installation {
    app_id: u64,
    account: String,
    selection: RepositorySelection,
    suspended: bool,
}

struct IssuedToken {
    installation_id: u64,
    expires_at: DateTime<Utc>,
    /// The mock rejects the token after this instant even though `expires_at` is later.
    rejected_after: Option<Instant>,
}

#[derive(Default)]
struct GithubState {
    apps: HashMap<u64, DecodingKey>,
    installations: HashMap<u64, Installation>,
    repositories: HashSet<String>,
    tokens: HashMap<String, IssuedToken>,
    pats: HashMap<String, HashSet<String>>,
    token_lifetime: Option<Duration>,
    token_validity: Option<Duration>,
    clock_skew_secs: i64,
}

struct GithubMockInner {
    controls: MockControls<GithubEndpoint>,
    state: Mutex<GithubState>,
}

/// A mock GitHub API on `127.0.0.1` with an ephemeral port; it stops when dropped.
///
/// It verifies App JWTs (RS256 signature with the registered public key, `iat` and `exp`
/// against its own clock), tracks which installation sees which repositories, issues
/// installation tokens with an `expires_at`, and accepts registered personal access tokens.
/// Errors are GitHub-shaped JSON: `{"message", "documentation_url"}`.
pub struct MockGithub {
    inner: Arc<GithubMockInner>,
    served: Served,
}

impl MockGithub {
    /// Starts the mock.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(GithubMockInner {
            controls: MockControls::new(ErrorStyle::Github),
            state: Mutex::new(GithubState::default()),
        });
        let served = serve(handler(Arc::clone(&inner), handle))?;
        Ok(Self { inner, served })
    }

    /// Returns the API base URL, such as `http://127.0.0.1:40123/`.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.served.address)).expect("socket address URL parses")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GithubState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers an App with its RSA public key in PEM (SPKI or PKCS#1).
    pub fn register_app(&self, app_id: u64, public_key_pem: &str) {
        let key =
            DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).expect("valid RSA public key PEM");
        self.state().apps.insert(app_id, key);
    }

    /// Registers an App with the public half of an RSA private key in PEM (PKCS#1 or PKCS#8,
    /// literal `\n` accepted).
    pub fn register_app_with_private_key(&self, app_id: u64, private_key_pem: &str) {
        let pem = private_key_pem.replace("\\n", "\n");
        let private = RsaPrivateKey::from_pkcs1_pem(pem.trim())
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem.trim()))
            .expect("valid RSA private key PEM");
        let public = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public key encodes");
        self.register_app(app_id, &public);
    }

    /// Adds a repository, `owner/repo`.
    pub fn add_repository(&self, full_name: &str) {
        self.state()
            .repositories
            .insert(full_name.to_ascii_lowercase());
    }

    /// Installs an App on an account.
    pub fn add_installation(
        &self,
        installation_id: u64,
        app_id: u64,
        account: &str,
        selection: RepositorySelection,
    ) {
        self.state().installations.insert(
            installation_id,
            Installation {
                app_id,
                account: account.to_ascii_lowercase(),
                selection,
                suspended: false,
            },
        );
    }

    /// Suspends or resumes an installation; a suspended one gets no tokens.
    pub fn set_installation_suspended(&self, installation_id: u64, suspended: bool) {
        if let Some(installation) = self.state().installations.get_mut(&installation_id) {
            installation.suspended = suspended;
        }
    }

    /// Registers a personal access token that can see `repositories` (`owner/repo`).
    pub fn add_pat(&self, token: &str, repositories: &[&str]) {
        let repositories = repositories
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect();
        self.state().pats.insert(token.to_owned(), repositories);
    }

    /// Sets the lifetime of new installation tokens (the `expires_at` it announces).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = Some(lifetime);
    }

    /// Makes the mock reject new installation tokens `validity` after issue, although their
    /// `expires_at` is later: a token that expires early. `None` restores normal behaviour.
    pub fn set_token_validity(&self, validity: Option<Duration>) {
        self.state().token_validity = validity;
    }

    /// Rejects every installation token issued so far, as after a revocation.
    pub fn revoke_tokens(&self) {
        let now = Instant::now();
        for token in self.state().tokens.values_mut() {
            token.rejected_after = Some(now);
        }
    }

    /// Sets the mock's clock this many seconds ahead of (positive) or behind (negative) the
    /// real clock, to exercise JWT time checks.
    pub fn set_clock_skew_secs(&self, seconds: i64) {
        self.state().clock_skew_secs = seconds;
    }

    /// Adds latency to every response.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.controls.set_latency(latency);
    }

    /// Makes `endpoint` respond with `fault`; `None` restores normal responses.
    pub fn set_fault(&self, endpoint: GithubEndpoint, fault: Option<Fault>) {
        self.inner.controls.set_fault(endpoint, fault);
    }

    /// Returns how many requests `endpoint` received.
    pub fn count(&self, endpoint: GithubEndpoint) -> usize {
        self.inner.controls.count(endpoint)
    }

    /// Returns every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.controls.requests()
    }

    /// Clears the counters and the request log.
    pub fn reset_counts(&self) {
        self.inner.controls.reset_counts();
    }
}

impl Drop for MockGithub {
    fn drop(&mut self) {
        self.inner.controls.stop();
    }
}

fn classify(request: &MockRequest) -> GithubEndpoint {
    let segments = request.segments();
    match (&request.method, segments.as_slice()) {
        (&Method::GET, ["repos", _, _, "installation"]) => GithubEndpoint::RepoInstallation,
        (&Method::POST, ["app", "installations", _, "access_tokens"]) => {
            GithubEndpoint::AccessTokens
        }
        (&Method::GET, ["repos", _, _]) => GithubEndpoint::Repo,
        _ => GithubEndpoint::Other,
    }
}

async fn handle(inner: Arc<GithubMockInner>, request: MockRequest) -> Response<Body> {
    let endpoint = classify(&request);
    if let Some(response) = inner.controls.intercept(endpoint, &request).await {
        return response;
    }
    if request.header("user-agent").is_none_or(str::is_empty) {
        return github_error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    if request
        .header("x-github-api-version")
        .is_some_and(|version| version != SUPPORTED_API_VERSION)
    {
        return github_error(StatusCode::BAD_REQUEST, "API version is not supported");
    }
    let segments: Vec<String> = request.segments().into_iter().map(str::to_owned).collect();
    let mut state = inner
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    match endpoint {
        GithubEndpoint::RepoInstallation => {
            find_installation(&state, &request, &segments[1], &segments[2])
        }
        GithubEndpoint::AccessTokens => issue_token(&mut state, &request, &segments[2]),
        GithubEndpoint::Repo => read_repository(&state, &request, &segments[1], &segments[2]),
        GithubEndpoint::Other => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn github_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_str(),
        }),
    )
}

#[derive(Deserialize)]
struct JwtClaims {
    iat: i64,
    exp: i64,
    iss: serde_json::Value,
}

/// Verifies an App JWT and returns the app id, or the message of GitHub's 401 response.
fn verify_jwt(state: &GithubState, request: &MockRequest) -> Result<u64, &'static str> {
    let undecodable = || "A JSON web token could not be decoded";
    let jwt = request.bearer().ok_or_else(undecodable)?;

    let mut unverified = Validation::new(Algorithm::RS256);
    unverified.insecure_disable_signature_validation();
    unverified.validate_exp = false;
    unverified.required_spec_claims.clear();
    let claims =
        jsonwebtoken::decode::<JwtClaims>(jwt, &DecodingKey::from_secret(b""), &unverified)
            .map_err(|_| undecodable())?
            .claims;
    let app_id = match &claims.iss {
        serde_json::Value::String(text) => text.parse::<u64>().ok(),
        serde_json::Value::Number(number) => number.as_u64(),
        _ => None,
    }
    .ok_or_else(undecodable)?;
    let key = state.apps.get(&app_id).ok_or("Integration not found")?;

    let mut verified = Validation::new(Algorithm::RS256);
    verified.validate_exp = false;
    verified.required_spec_claims.clear();
    jsonwebtoken::decode::<JwtClaims>(jwt, key, &verified).map_err(|_| undecodable())?;

    let now = Utc::now().timestamp() + state.clock_skew_secs;
    if claims.iat > now + IAT_SKEW_SECS {
        return Err("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued");
    }
    if claims.exp > now + MAX_JWT_LIFETIME_SECS
        || claims.exp - claims.iat > MAX_JWT_LIFETIME_SECS + 60
    {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    if claims.exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires");
    }
    Ok(app_id)
}

fn sees(installation: &Installation, state: &GithubState, owner: &str, repo: &str) -> bool {
    let full_name = format!("{owner}/{repo}").to_ascii_lowercase();
    if installation.account != owner.to_ascii_lowercase()
        || !state.repositories.contains(&full_name)
    {
        return false;
    }
    match &installation.selection {
        RepositorySelection::All => true,
        RepositorySelection::Selected(names) => {
            names.iter().any(|name| name.eq_ignore_ascii_case(repo))
        }
    }
}

fn find_installation(
    state: &GithubState,
    request: &MockRequest,
    owner: &str,
    repo: &str,
) -> Response<Body> {
    let app_id = match verify_jwt(state, request) {
        Ok(app_id) => app_id,
        Err(message) => return github_error(StatusCode::UNAUTHORIZED, message),
    };
    let found = state.installations.iter().find(|(_, installation)| {
        installation.app_id == app_id && sees(installation, state, owner, repo)
    });
    match found {
        Some((id, installation)) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "id": id,
                "app_id": app_id,
                "account": {"login": installation.account},
                "repository_selection": match installation.selection {
                    RepositorySelection::All => "all",
                    RepositorySelection::Selected(_) => "selected",
                },
            }),
        ),
        None => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn issue_token(
    state: &mut GithubState,
    request: &MockRequest,
    installation_id: &str,
) -> Response<Body> {
    let app_id = match verify_jwt(state, request) {
        Ok(app_id) => app_id,
        Err(message) => return github_error(StatusCode::UNAUTHORIZED, message),
    };
    let Ok(installation_id) = installation_id.parse::<u64>() else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(installation) = state
        .installations
        .get(&installation_id)
        .filter(|i| i.app_id == app_id)
    else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if installation.suspended {
        return github_error(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
        );
    }

    let lifetime = state.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    let now = Utc::now() + chrono::Duration::seconds(state.clock_skew_secs);
    let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
    let token = format!("ghs_mock{}", uuid::Uuid::new_v4().simple());
    state.tokens.insert(
        token.clone(),
        IssuedToken {
            installation_id,
            expires_at,
            rejected_after: state
                .token_validity
                .map(|validity| Instant::now() + validity),
        },
    );
    json_response(
        StatusCode::CREATED,
        serde_json::json!({
            "token": token,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {"metadata": "read"},
        }),
    )
}

fn read_repository(
    state: &GithubState,
    request: &MockRequest,
    owner: &str,
    repo: &str,
) -> Response<Body> {
    let bad_credentials = || github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    let Some(token) = request.bearer() else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let full_name = format!("{owner}/{repo}").to_ascii_lowercase();
    let visible = if let Some(issued) = state.tokens.get(token) {
        let now = Utc::now() + chrono::Duration::seconds(state.clock_skew_secs);
        let rejected = issued
            .rejected_after
            .is_some_and(|after| Instant::now() >= after);
        if issued.expires_at <= now || rejected {
            return bad_credentials();
        }
        state
            .installations
            .get(&issued.installation_id)
            .is_some_and(|installation| sees(installation, state, owner, repo))
    } else if let Some(repositories) = state.pats.get(token) {
        repositories.contains(&full_name) && state.repositories.contains(&full_name)
    } else {
        return bad_credentials();
    };
    if !visible {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "id": 1,
            "name": repo,
            "full_name": format!("{owner}/{repo}"),
            "private": true,
        }),
    )
}
