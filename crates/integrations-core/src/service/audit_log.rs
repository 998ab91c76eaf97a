//! Audit log operations of [`IntegrationService`]: searching the log and writing failure events
//! (authentication failures and denied requests) through the repeat throttle.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::audit_throttle::AuditThrottle;
use crate::error::ServiceError;
use crate::model::{Actor, Role};
use crate::store::AuditQuery;

use super::{require_owner, IntegrationService};

/// Maximum events one audit search returns.
pub const MAX_AUDIT_PAGE: u64 = 1000;

/// Subject of authentication failure events, whose token was not verified.
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

/// HTTP method and route template of a request, for failure events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// HTTP method, such as `GET`.
    pub method: String,
    /// Route template, such as `/sfp/api/integrations/{id}`; never the raw path or the query.
    pub route: String,
}

impl RequestInfo {
    /// Adds the `method` and `route` filters to `event`.
    pub fn add_to(&self, event: AuditEvent) -> AuditEvent {
        event
            .with_filter("method", self.method.clone())
            .with_filter("route", self.route.clone())
    }
}

impl IntegrationService {
    /// Replaces the window in which repeated failure events are counted instead of written.
    /// Pending counts of the previous throttle are dropped, so call this before serving.
    pub fn with_audit_repeat_window(mut self, window: Duration) -> Self {
        self.throttle = Arc::new(AuditThrottle::new(self.audit.clone(), window));
        self
    }

    /// Returns the throttle of failure events, whose counts a background task flushes.
    pub fn audit_throttle(&self) -> &Arc<AuditThrottle> {
        &self.throttle
    }

    /// Lists audit events matching `query`, newest first, at most [`MAX_AUDIT_PAGE`]. Owner only.
    pub async fn search_audit(
        &self,
        actor: &Actor,
        query: AuditQuery,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        require_owner(actor)?;
        let query = AuditQuery {
            limit: query.limit.min(MAX_AUDIT_PAGE),
            ..query
        };
        Ok(self.store.search_audit(&query).await?)
    }

    /// Audits a request rejected with 401. `reason` names the kind of failure, such as
    /// `expired`. The subject is [`ANONYMOUS_SUBJECT`] unless `actor` is a verified caller, and
    /// the role of an anonymous event is `application`, the role of machine callers, because
    /// an event must have one.
    pub async fn audit_authentication_failure(
        &self,
        actor: Option<&Actor>,
        reason: &str,
        request: &RequestInfo,
    ) {
        let anonymous = Actor::new(ANONYMOUS_SUBJECT, Role::Application);
        let event = AuditEvent::new(
            actor.unwrap_or(&anonymous),
            AuditAction::AuthenticationFailed,
            AuditOutcome::Denied,
        )
        .with_filter("reason", reason);
        self.record_failure(request.add_to(event)).await;
    }

    /// Audits a request of `actor` rejected with 403.
    pub async fn audit_access_denied(&self, actor: &Actor, request: &RequestInfo) {
        let event = AuditEvent::new(actor, AuditAction::AccessDenied, AuditOutcome::Denied);
        self.record_failure(request.add_to(event)).await;
    }

    /// Writes a failure event through the throttle. A failed write is logged and otherwise
    /// ignored, because it must not change the response to the rejected request.
    pub(super) async fn record_failure(&self, event: AuditEvent) {
        if let Err(error) = self.throttle.record(event.clone()).await {
            tracing::warn!(
                error = %error,
                action = event.action.as_str(),
                actor = %event.actor_subject,
                "failed to audit a rejected request"
            );
        }
    }
}
