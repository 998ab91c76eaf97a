//! In-process mock of Azure DevOps organizations' `connectionData` endpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use url::Url;
use warp::http::{Method, Response, StatusCode};
use warp::hyper::Body;

use super::entra::{MockEntra, TokenRegistry};
use super::server::{handler, json_response, serve, ErrorStyle, MockControls, MockRequest, Served};
use super::{Fault, RecordedRequest};

/// An endpoint of the mock, for counters and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DevopsEndpoint {
    /// `GET /{organization}/_apis/connectionData`.
    ConnectionData,
    /// Any other path.
    Other,
}

#[derive(Default)]
struct Organization {
    /// Client ids of service principals added as users.
    service_principals: HashSet<String>,
    pats: HashSet<String>,
}

#[derive(Default)]
struct DevopsState {
    organizations: HashMap<String, Organization>,
}

struct DevopsMockInner {
    controls: MockControls<DevopsEndpoint>,
    state: Mutex<DevopsState>,
    entra_tokens: TokenRegistry,
}

/// A mock Azure DevOps on `127.0.0.1` with an ephemeral port, organizations at
/// `{base_url}{organization}`; it stops when dropped.
///
/// `connectionData` accepts Bearer tokens issued by the [`MockEntra`] it was started with, for
/// service principals added to the organization, and Basic PATs registered for the
/// organization. Other requests get 401 when they send `X-TFS-FedAuthRedirect: Suppress`, and
/// a 203 sign-in page otherwise, as Azure DevOps Services does.
pub struct MockAzureDevops {
    inner: Arc<DevopsMockInner>,
    served: Served,
}

impl MockAzureDevops {
    /// Starts the mock, accepting tokens issued by `entra`.
    pub async fn start(entra: &MockEntra) -> std::io::Result<Self> {
        let inner = Arc::new(DevopsMockInner {
            controls: MockControls::new(ErrorStyle::Devops),
            state: Mutex::new(DevopsState::default()),
            entra_tokens: entra.token_registry(),
        });
        let served = serve(handler(Arc::clone(&inner), handle))?;
        Ok(Self { inner, served })
    }

    /// Returns the base URL, such as `http://127.0.0.1:40127/`.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.served.address)).expect("socket address URL parses")
    }

    /// Returns the URL of an organization, such as `http://127.0.0.1:40127/contoso`.
    pub fn organization_url(&self, organization: &str) -> Url {
        self.base_url()
            .join(organization)
            .expect("organization name joins")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DevopsState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds an organization.
    pub fn add_organization(&self, organization: &str) {
        self.state()
            .organizations
            .entry(organization.to_ascii_lowercase())
            .or_default();
    }

    /// Adds a service principal, by client id, as a user of an organization.
    pub fn add_service_principal(&self, organization: &str, client_id: &str) {
        let mut state = self.state();
        let organization = state
            .organizations
            .entry(organization.to_ascii_lowercase())
            .or_default();
        organization
            .service_principals
            .insert(client_id.to_ascii_lowercase());
    }

    /// Registers a PAT for an organization.
    pub fn add_pat(&self, organization: &str, token: &str) {
        let mut state = self.state();
        let organization = state
            .organizations
            .entry(organization.to_ascii_lowercase())
            .or_default();
        organization.pats.insert(token.to_owned());
    }

    /// Adds latency to every response.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.controls.set_latency(latency);
    }

    /// Makes `endpoint` respond with `fault`; `None` restores normal responses.
    pub fn set_fault(&self, endpoint: DevopsEndpoint, fault: Option<Fault>) {
        self.inner.controls.set_fault(endpoint, fault);
    }

    /// Returns how many requests `endpoint` received.
    pub fn count(&self, endpoint: DevopsEndpoint) -> usize {
        self.inner.controls.count(endpoint)
    }

    /// Returns every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.controls.requests()
    }
}

impl Drop for MockAzureDevops {
    fn drop(&mut self) {
        self.inner.controls.stop();
    }
}

fn classify(request: &MockRequest) -> DevopsEndpoint {
    match (&request.method, request.segments().as_slice()) {
        (&Method::GET, [_, "_apis", name]) if name.eq_ignore_ascii_case("connectionData") => {
            DevopsEndpoint::ConnectionData
        }
        _ => DevopsEndpoint::Other,
    }
}

fn devops_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({
            "$id": "1",
            "innerException": null,
            "message": message,
            "typeName": "Microsoft.VisualStudio.Services.WebApi.VssServiceException, Microsoft.VisualStudio.Services.WebApi",
            "errorCode": 0,
        }),
    )
}

async fn handle(inner: Arc<DevopsMockInner>, request: MockRequest) -> Response<Body> {
    let endpoint = classify(&request);
    if let Some(response) = inner.controls.intercept(endpoint, &request).await {
        return response;
    }
    if endpoint == DevopsEndpoint::Other {
        return devops_error(StatusCode::NOT_FOUND, "The resource cannot be found.");
    }
    let api_version = url::form_urlencoded::parse(request.query.as_bytes())
        .find(|(name, _)| name == "api-version")
        .map(|(_, value)| value.into_owned());
    match api_version {
        None => return devops_error(StatusCode::BAD_REQUEST, "No api-version was supplied for the GET request."),
        Some(version) if !version.contains("-preview") => {
            return devops_error(
                StatusCode::BAD_REQUEST,
                &format!("The requested version \"{version}\" of the resource is under preview. The -preview flag must be supplied in the api-version for such requests."),
            )
        }
        Some(_) => {}
    }

    let organization_name = request.segments()[0].to_ascii_lowercase();
    let state = inner
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let Some(organization) = state.organizations.get(&organization_name) else {
        return devops_error(
            StatusCode::NOT_FOUND,
            &format!("TF400898: organization '{organization_name}' not found."),
        );
    };
    match authenticate(&inner, organization, &request) {
        Authentication::Accepted(name) => connection_data(&name),
        Authentication::NotMember(client_id) => devops_error(
            StatusCode::UNAUTHORIZED,
            &format!("TF400813: The user '{client_id}' is not authorized to access this resource."),
        ),
        Authentication::Rejected => {
            if request.header("x-tfs-fedauthredirect") == Some("Suppress") {
                devops_error(
                    StatusCode::UNAUTHORIZED,
                    "TF400813: Resource not available for anonymous access. Client authentication required.",
                )
            } else {
                sign_in_redirect_page()
            }
        }
    }
}

enum Authentication {
    Accepted(String),
    NotMember(String),
    Rejected,
}

fn authenticate(
    inner: &DevopsMockInner,
    organization: &Organization,
    request: &MockRequest,
) -> Authentication {
    if let Some(token) = request.bearer() {
        let tokens = inner
            .entra_tokens
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        return match tokens.get(token) {
            Some(issued) if issued.expires > Instant::now() => {
                if organization.service_principals.contains(&issued.client_id) {
                    Authentication::Accepted(format!("Service principal {}", issued.client_id))
                } else {
                    Authentication::NotMember(issued.client_id.clone())
                }
            }
            _ => Authentication::Rejected,
        };
    }
    let basic = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    match basic.as_deref().and_then(|pair| pair.split_once(':')) {
        Some((_, pat)) if organization.pats.contains(pat) => {
            Authentication::Accepted("PAT user".to_owned())
        }
        _ => Authentication::Rejected,
    }
}

fn connection_data(name: &str) -> Response<Body> {
    let user = serde_json::json!({
        "id": uuid::Uuid::new_v4(),
        "descriptor": format!("Microsoft.VisualStudio.Services.Claims.AadServicePrincipal;{}", uuid::Uuid::new_v4()),
        "subjectDescriptor": "aadsp.mock",
        "providerDisplayName": name,
        "isActive": true,
        "properties": {},
    });
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "authenticatedUser": user,
            "authorizedUser": user,
            "instanceId": uuid::Uuid::new_v4(),
            "deploymentId": uuid::Uuid::new_v4(),
            "deploymentType": "hosted",
            "locationServiceData": {"serviceOwner": "00025394-6065-48ca-87d9-7f5672854ef7"},
        }),
    )
}

/// Builds the page Azure DevOps sends instead of a 401 when the client did not suppress sign-in
/// redirects.
fn sign_in_redirect_page() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NON_AUTHORITATIVE_INFORMATION)
        .header("content-type", "text/html; charset=utf-8")
        .body(Body::from("<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>"))
        .expect("static response parts are valid")
}
