//! Start-up and shutdown: data directory, keys, database, service, listener and signals.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use integrations_core::audit_throttle::AuditThrottle;
use integrations_core::store::IntegrationQuery;
use integrations_core::validation::UrlPolicy;
use integrations_core::{
    Aes256GcmCipher, AuditSink, EnvelopeCipher, IntegrationService, IntegrationStore, KeyringError,
    MasterKey, ServiceSettings, StoreError,
};
use integrations_platforms::PlatformsConfig;
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{AuthSetupError, TokenVerifier};
use crate::config::ServeConfig;
use crate::keys::{self, KeyError, KeySource};
use crate::AppState;

/// Start-up failure. Messages never contain key material or database passwords.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key file or the data directory could not be prepared.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Token verification is misconfigured.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The database could not be opened.
    #[error("failed to open the database: {0}")]
    Store(StoreError),
    /// The master key cannot open the stored data keys or credentials.
    #[error("the master key cannot open the stored credentials: {0}")]
    WrongMasterKey(String),
    /// No master key is configured or on disk, but the database contains data keys or sealed
    /// credentials.
    #[error("the master key file {} is missing but the database holds data keys and {stored} integrations sealed under a master key; restore the key file from its backup or set INTEGRATIONS_MASTER_KEY", path.display())]
    MissingMasterKey {
        /// Expected path of the key file.
        path: std::path::PathBuf,
        /// Number of stored integrations.
        stored: usize,
    },
    /// The platform probes are misconfigured.
    #[error("invalid platform probe configuration: {0}")]
    Platforms(String),
    /// The listen address could not be bound.
    #[error("failed to listen on {address}: {message}; stop the process using it or choose another address with --listen")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Error from binding.
        message: String,
    },
}

/// Prepares keys and the database, then serves until SIGTERM or Ctrl-C.
pub async fn run(config: ServeConfig) -> Result<(), StartError> {
    let state = prepare(&config).await?;
    let service = state.service.clone();
    tokio::spawn(async move {
        if let Err(error) = service.warm_up().await {
            tracing::warn!(error = %error, "platform token warm-up failed");
        }
    });

    let throttle = state.service.audit_throttle().clone();
    let flusher = tokio::spawn(flush_audit_counts(throttle.clone()));

    let routes = crate::routes(state);
    let (address, server) = warp::serve(routes)
        .try_bind_with_graceful_shutdown(config.listen, shutdown_signal())
        .map_err(|error| StartError::Bind {
            address: config.listen,
            message: error.to_string(),
        })?;
    tracing::info!("listening on http://{address}");
    if !address.ip().is_loopback() {
        tracing::warn!(
            "listening on a non-loopback address without TLS; bearer tokens and credentials cross the network in plaintext, so put a TLS-terminating proxy in front"
        );
    }
    server.await;
    flusher.abort();
    let written = throttle.flush_all().await;
    if written > 0 {
        tracing::info!(
            events = written,
            "wrote pending counts of repeated audit events"
        );
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Writes the counts of repeated failure events whose window has closed. Checks four times
/// per window, at most every 5 s and at least every 10 ms, so a count is written at most a
/// quarter window (or 5 s) after its window closes.
async fn flush_audit_counts(throttle: Arc<AuditThrottle>) {
    let period = (throttle.window() / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        throttle.flush_expired().await;
    }
}

/// Loads keys, opens the database and builds the service, checking that the master key opens
/// every stored credential.
pub async fn prepare(config: &ServeConfig) -> Result<AppState, StartError> {
    keys::prepare_data_dir(&config.data_dir)?;
    tracing::info!(path = %config.data_dir.display(), "data directory");

    let verifier = TokenVerifier::from_config(&config.jwt, &config.data_dir)?;
    tracing::info!(algorithm = ?verifier.algorithm(), "bearer tokens verified");

    let (store, audit) = open_store(config.database_url.as_ref(), &config.data_dir)
        .await
        .map_err(StartError::Store)?;
    let key_file = config.data_dir.join(keys::MASTER_KEY_FILE);
    if config.master_key.is_none() && config.master_key_file.is_none() && !key_file.exists() {
        // Generating a fresh key here would leave every stored credential unreadable and put a
        // useless key where the operator expects the real one.
        let stored = store
            .list_integrations(&IntegrationQuery::default())
            .await
            .map_err(StartError::Store)?
            .len();
        let data_keys = store.list_data_keys().await.map_err(StartError::Store)?;
        if stored > 0 || !data_keys.is_empty() {
            return Err(StartError::MissingMasterKey {
                path: key_file,
                stored,
            });
        }
    }

    let (master_key, source) = keys::load_master_key(
        config.master_key.as_ref(),
        config.master_key_file.as_deref(),
        &config.data_dir,
    )?;
    log_master_key(&master_key, &source);
    let cipher = envelope_cipher(store.clone(), &master_key).await?;

    let settings = ServiceSettings {
        urls: UrlPolicy {
            http_allowed_hosts: config
                .allow_http_hosts
                .iter()
                .map(|host| host.trim().to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect(),
        },
        health_concurrency: config.health_concurrency.max(1),
        probe_timeout: Duration::from_millis(config.probe_timeout_ms),
    };
    let service = with_probes(IntegrationService::new(store, cipher, audit))?
        .with_settings(settings)
        .with_audit_repeat_window(Duration::from_millis(config.audit_repeat_window_ms));

    let check = service
        .verify_master_key()
        .await
        .map_err(|error| StartError::Store(StoreError::Unavailable(error.to_string())))?;
    let missing = if check.unopenable.is_empty() {
        Vec::new()
    } else {
        let keys = service
            .store()
            .list_data_keys()
            .await
            .map_err(StartError::Store)?;
        integrations_core::keyring::missing_data_keys(service.store().as_ref(), &keys)
            .await
            .map_err(StartError::Store)?
    };
    if check.wrong_key() {
        if !missing.is_empty() {
            return Err(StartError::WrongMasterKey(
                KeyringError::MissingDataKeys(missing).to_string(),
            ));
        }
        return Err(StartError::WrongMasterKey(format!(
            "none of the {} stored integrations opens with key id {}",
            check.checked,
            master_key.id()
        )));
    }
    if check.unopenable.is_empty() {
        tracing::info!(
            integrations = check.checked,
            "master key opens every stored credential"
        );
    } else {
        // A few unreadable rows point at corruption or a restore mix-up, not at a wrong key:
        // serve the rest, and name the broken integrations so an owner can replace them.
        tracing::error!(
            integrations = check.checked,
            unopenable = ?check.unopenable,
            missing_data_keys = ?missing,
            "stored credentials of some integrations cannot be opened; update them with new credentials or restore them from a backup"
        );
    }

    Ok(AppState::new(service, verifier))
}

fn log_master_key(master_key: &MasterKey, source: &KeySource) {
    match source {
        KeySource::Environment => {
            tracing::info!(
                key_id = master_key.id(),
                "master key loaded from INTEGRATIONS_MASTER_KEY"
            )
        }
        KeySource::File(path) => {
            tracing::info!(key_id = master_key.id(), path = %path.display(), "master key loaded")
        }
        KeySource::Created(path) => tracing::warn!(
            key_id = master_key.id(),
            path = %path.display(),
            "created a new master key; back it up, because credentials sealed with it cannot be recovered without it"
        ),
    }
}

/// Builds the envelope cipher over the store's data keys and checks that the master key opens
/// every one of them, creating the first data key on a new database.
pub(crate) async fn envelope_cipher(
    store: Arc<dyn IntegrationStore>,
    master_key: &MasterKey,
) -> Result<Arc<EnvelopeCipher>, StartError> {
    // Values sealed directly with the master key, before data keys existed, still open.
    let cipher = EnvelopeCipher::new(store, Arc::new(master_key.clone()))
        .with_legacy_keys(Aes256GcmCipher::new(master_key));
    let status = cipher.prepare().await.map_err(|error| match error {
        KeyringError::Store(error) => StartError::Store(error),
        other => StartError::WrongMasterKey(other.to_string()),
    })?;
    if status.created {
        tracing::info!(data_key = %status.primary, "created the first data key");
    }
    tracing::info!(
        data_keys = status.data_keys,
        primary = %status.primary,
        key_id = master_key.id(),
        "master key opens every data key"
    );
    Ok(Arc::new(cipher))
}

/// Adds the GitHub and Azure DevOps probes, configured from the environment variables that
/// `integrations_platforms::PlatformsConfig::from_env` reads.
fn with_probes(mut service: IntegrationService) -> Result<IntegrationService, StartError> {
    let config =
        PlatformsConfig::from_env().map_err(|error| StartError::Platforms(error.to_string()))?;
    if let Some(app) = &config.builtin_app {
        tracing::info!(app_id = app.app_id(), "built-in GitHub App configured");
    }
    let probes = integrations_platforms::default_probes(&config)
        .map_err(|error| StartError::Platforms(error.to_string()))?;
    for probe in probes {
        tracing::info!(platform = %probe.platform(), "platform probe enabled");
        service = service.with_probe(probe);
    }
    Ok(service)
}

/// Opens the database `database_url` names, or the SQLite file in `data_dir` when it is unset.
pub(crate) async fn open_store(
    database_url: Option<&SecretString>,
    data_dir: &Path,
) -> Result<(Arc<dyn IntegrationStore>, Arc<dyn AuditSink>), StoreError> {
    let url = database_url
        .map(|url| url.expose_secret().trim())
        .filter(|url| !url.is_empty());
    let Some(url) = url else {
        let path = data_dir.join(integrations_store::DATABASE_FILE);
        tracing::info!(path = %path.display(), "opening SQLite database");
        let store = Arc::new(integrations_store::SqliteStore::open_in_dir(data_dir).await?);
        return Ok((store.clone(), store));
    };
    tracing::info!(database = %redact_database_url(url), "opening database");
    let store = integrations_store::open(url).await?;
    Ok(store.into_parts())
}

/// Returns the URL without user name, password or query, safe to log.
fn redact_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed
                .port()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            format!("{}://{host}{port}{}", parsed.scheme(), parsed.path())
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Completes on Ctrl-C or SIGTERM, logging which one arrived.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_password_redacted() {
        let redacted = redact_database_url("postgres://app:hunter2@db.local:5432/integrations");
        assert_eq!(redacted, "postgres://db.local:5432/integrations");
    }
}
