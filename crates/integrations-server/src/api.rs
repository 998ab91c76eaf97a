//! The warp filters: paths, methods, authentication, query strings and bodies.

use std::convert::Infallible;

use bytes::Bytes;
use integrations_core::{Actor, RequestInfo};
use percent_encoding::percent_decode_str;
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::application_tokens;
use crate::audit_hook;
use crate::body;
use crate::error::{self, ApiError};
use crate::handlers::{self, QueryParams};
use crate::AppState;

/// An authenticated request: the application state, the caller, and the method and route
/// template for audit events.
#[derive(Clone)]
struct Caller {
    state: AppState,
    actor: Actor,
    request: RequestInfo,
}

/// Builds every route, with JSON error recovery and a request log line.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(|state: AppState| async move { handlers::readiness(&state.service).await });

    let api = warp::path("sfp").and(warp::path("api")).and(
        integration_routes(&state)
            .or(project_routes(&state))
            .unify()
            .or(application_token_routes(&state))
            .unify(),
    );

    health
        .or(api)
        .unify()
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(log_request))
}

fn integration_routes(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let list = warp::path!("integrations")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/integrations"))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                handlers::list_integrations(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });
    let create = warp::path!("integrations")
        .and(warp::post())
        .and(authenticated(state, "/sfp/api/integrations"))
        .and(json_body())
        .then(|caller: Caller, body: Bytes| async move {
            respond(
                &caller,
                handlers::create_integration(&caller.state.service, &caller.actor, body).await,
            )
            .await
        });
    let defaults = warp::path!("integrations" / "defaults")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/integrations/defaults"))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                handlers::list_defaults(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });
    // The service audits a denied credential read itself, with its filters, so this route
    // replies without `respond`, which would audit the 403 a second time.
    let credentials = warp::path!("integrations" / "credentials")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/integrations/credentials"))
        .and(query())
        .then(|caller: Caller, query| async move {
            reply(
                handlers::read_credentials(
                    &caller.state.service,
                    &caller.actor,
                    &caller.request,
                    query,
                )
                .await,
            )
        });
    let health = warp::path!("integrations" / "platforms" / "health")
        .and(warp::get())
        .and(authenticated(
            state,
            "/sfp/api/integrations/platforms/health",
        ))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                handlers::platform_health(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });
    let update = warp::path!("integrations" / String)
        .and(warp::patch())
        .and(authenticated(state, "/sfp/api/integrations/{id}"))
        .and(json_body())
        .then(|id: String, caller: Caller, body: Bytes| async move {
            respond(
                &caller,
                handlers::update_integration(&caller.state.service, &caller.actor, &id, body).await,
            )
            .await
        });
    let delete = warp::path!("integrations" / String)
        .and(warp::delete())
        .and(authenticated(state, "/sfp/api/integrations/{id}"))
        .then(|id: String, caller: Caller| async move {
            respond(
                &caller,
                handlers::delete_integration(&caller.state.service, &caller.actor, &id).await,
            )
            .await
        });
    let audit = warp::path!("audit")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/audit"))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                handlers::list_audit(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });

    list.or(create)
        .unify()
        .or(defaults)
        .unify()
        .or(credentials)
        .unify()
        .or(health)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(audit)
        .unify()
        .boxed()
}

fn project_routes(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let list = warp::path!("projects")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/projects"))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                handlers::list_projects(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });
    let create = warp::path!("projects")
        .and(warp::post())
        .and(authenticated(state, "/sfp/api/projects"))
        .and(json_body())
        .then(|caller: Caller, body: Bytes| async move {
            respond(
                &caller,
                handlers::create_project(&caller.state.service, &caller.actor, body).await,
            )
            .await
        });
    let find = project_identifier()
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/projects/{identifier}"))
        .then(|identifier: String, caller: Caller| async move {
            respond(
                &caller,
                handlers::find_project(&caller.state.service, &caller.actor, &identifier).await,
            )
            .await
        });
    let delete = project_identifier()
        .and(warp::delete())
        .and(authenticated(state, "/sfp/api/projects/{identifier}"))
        .then(|identifier: String, caller: Caller| async move {
            respond(
                &caller,
                handlers::delete_project(&caller.state.service, &caller.actor, &identifier).await,
            )
            .await
        });

    list.or(create)
        .unify()
        .or(find)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

fn application_token_routes(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let list = warp::path!("application-tokens")
        .and(warp::get())
        .and(authenticated(state, "/sfp/api/application-tokens"))
        .and(query())
        .then(|caller: Caller, query| async move {
            respond(
                &caller,
                application_tokens::list(&caller.state.service, &caller.actor, query).await,
            )
            .await
        });
    let create = warp::path!("application-tokens")
        .and(warp::post())
        .and(authenticated(state, "/sfp/api/application-tokens"))
        .and(json_body())
        .then(|caller: Caller, body: Bytes| async move {
            respond(
                &caller,
                application_tokens::create(&caller.state.service, &caller.actor, body).await,
            )
            .await
        });
    let revoke = warp::path!("application-tokens" / String)
        .and(warp::delete())
        .and(authenticated(state, "/sfp/api/application-tokens/{id}"))
        .then(|id: String, caller: Caller| async move {
            respond(
                &caller,
                application_tokens::revoke(&caller.state.service, &caller.actor, &id).await,
            )
            .await
        });

    list.or(create).unify().or(revoke).unify().boxed()
}

/// Matches `/projects/{identifier}` where the identifier is the rest of the path, so both
/// `flxbl-io%2Fsf-core` and `flxbl-io/sf-core` name the same project. warp's `path::param`
/// would not decode `%2F`, so the tail is percent-decoded here.
fn project_identifier() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("projects")
        .and(warp::path::tail())
        .and_then(|tail: warp::path::Tail| async move {
            let raw = tail.as_str().trim_end_matches('/');
            if raw.is_empty() {
                return Err(warp::reject::not_found());
            }
            percent_decode_str(raw)
                .decode_utf8()
                .map(|identifier| identifier.into_owned())
                .map_err(|_| {
                    warp::reject::custom(ApiError::bad_request(
                        "project identifier is not valid UTF-8 after percent-decoding",
                    ))
                })
        })
}

fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Verifies the bearer token, rejecting with a JSON 401 when it is missing or invalid. Every
/// rejection is audited under `route`, the template of the route this filter guards, so no raw
/// path reaches an event.
fn authenticated(
    state: &AppState,
    route: &'static str,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    with_state(state.clone())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and_then(
            move |state: AppState, method: Method, headers: HeaderMap| async move {
                let request = RequestInfo {
                    method: method.as_str().to_owned(),
                    route: route.to_owned(),
                };
                let header = match headers.get(warp::http::header::AUTHORIZATION) {
                    None => None,
                    Some(value) => match value.to_str() {
                        Ok(text) => Some(text),
                        Err(_) => {
                            let failure = crate::auth::AuthFailure::Malformed;
                            audit_hook::authentication_failed(&state, &request, failure).await;
                            return Err(warp::reject::custom(ApiError::unauthorized(failure)));
                        }
                    },
                };
                match crate::auth::authenticate(&state, header).await {
                    Ok(actor) => Ok(Caller {
                        state,
                        actor,
                        request,
                    }),
                    Err(rejection) => {
                        if let crate::auth::AuthRejection::Unauthorized(failure) = &rejection {
                            audit_hook::authentication_failed(&state, &request, *failure).await;
                        }
                        Err(warp::reject::custom(ApiError::from(rejection)))
                    }
                }
            },
        )
}

/// Parses the query string into parameters, rejecting a parameter given twice.
fn query() -> impl Filter<Extract = (QueryParams,), Error = Rejection> + Clone {
    warp::query::<Vec<(String, String)>>().and_then(|pairs: Vec<(String, String)>| async move {
        let mut params = QueryParams::new();
        for (name, value) in pairs {
            if params.contains_key(&name) {
                let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(warp::reject::custom(ApiError::bad_request(format!(
                    "query parameter {name} must be given at most once"
                ))));
            }
            params.insert(name, value);
        }
        Ok(params)
    })
}

/// Reads the request body up to [`body::MAX_BODY_BYTES`]. A body declared as anything but JSON
/// gets 415; a missing Content-Type is read as JSON, as sfp clients do not always send one.
fn json_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            match content_type {
                Some(value) if !is_json_media_type(&value) => {
                    Err(warp::reject::custom(ApiError::new(
                        warp::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "Content-Type must be application/json",
                    )))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(|length, stream| async move {
            body::read_limited(length, stream)
                .await
                .map_err(warp::reject::custom)
        })
}

/// Accepts `application/json` and structured `+json` types, with any parameters.
fn is_json_media_type(value: &str) -> bool {
    let media_type = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Replies with `result`, auditing a 403 and a 401 that the service returned.
async fn respond(caller: &Caller, result: Result<Response, ApiError>) -> Response {
    if let Err(error) = &result {
        audit_hook::request_failed(&caller.state, &caller.actor, &caller.request, error).await;
    }
    reply(result)
}

fn reply(result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => error.to_response(),
    }
}

/// Logs method, path, status and latency. The query string, headers and body are left out
/// because they can name projects or carry tokens and credentials.
fn log_request(info: warp::log::Info<'_>) {
    let status = info.status();
    let latency_ms = info.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(method = %info.method(), path = %info.path(), status = status.as_u16(), latency_ms, "request");
    } else {
        tracing::info!(method = %info.method(), path = %info.path(), status = status.as_u16(), latency_ms, "request");
    }
}
