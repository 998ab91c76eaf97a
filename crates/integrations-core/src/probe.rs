//! The platform health seam: one probe per source-control platform.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use crate::credentials::Credentials;
use crate::model::{Integration, Platform, Project};

/// Health of one project's platform access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The platform API confirmed access to the repository.
    Healthy,
    /// Credentials are missing, invalid or expired, or the platform is unreachable.
    Unhealthy,
    /// No integration or built-in credentials exist for the platform.
    NotConfigured,
    /// The token cache is still warming up after start.
    Initializing,
}

/// An integration chosen for a probe, with its decrypted credentials.
#[derive(Debug, Clone)]
pub struct ResolvedIntegration {
    /// Metadata.
    pub integration: Integration,
    /// Decrypted credentials.
    pub credentials: Credentials,
}

/// What a probe checks: a project and the integration resolved for it, if any.
///
/// The integration is the project's own integration of the platform's provider, else the global
/// default of that provider, else `None`. With `None`, a probe may fall back to credentials of its
/// own configuration, such as a built-in GitHub App.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The project to check.
    pub project: Project,
    /// The integration resolved for it.
    pub integration: Option<ResolvedIntegration>,
}

/// Outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// Status.
    pub status: HealthStatus,
    /// Explanation for the operator, with the fix when the check failed. Never contains a secret.
    pub message: String,
    /// Round-trip time of the platform calls, in milliseconds; `None` when nothing was called.
    pub latency_ms: Option<f64>,
}

impl ProbeReport {
    /// Creates a report.
    pub fn new(status: HealthStatus, message: impl Into<String>, latency_ms: Option<f64>) -> Self {
        Self {
            status,
            message: message.into(),
            latency_ms,
        }
    }
}

/// Checks that one platform is reachable with a project's credentials.
#[async_trait]
pub trait PlatformProbe: Send + Sync + fmt::Debug {
    /// Returns the platform this probe checks.
    fn platform(&self) -> Platform;

    /// Checks one project. Failures are reported in the result, not as errors.
    async fn check(&self, target: &ProbeTarget) -> ProbeReport;

    /// Fills caches (such as installation tokens) for these targets in the background. While a
    /// target's first warm-up runs, [`PlatformProbe::check`] may report
    /// [`HealthStatus::Initializing`] instead of waiting.
    async fn warm_up(&self, targets: Vec<ProbeTarget>) {
        let _ = targets;
    }
}
