//! The `rotate-key` and `rotate-master-key` commands: key changes run as their own process
//! against the database that servers keep serving from.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integrations_core::keyring::{
    count_rows_by_key, rewrap_data_keys, rotate_data_key, RotationOptions, RotationReport,
};
use integrations_core::{Actor, AuditAction, AuditEvent, AuditOutcome, IntegrationStore, Role};

use crate::config::{KeyedStoreConfig, RotateKeyConfig, RotateMasterKeyConfig};
use crate::keys::{self, KeyError};
use crate::server::{envelope_cipher, open_store, StartError};

/// Subject of the audit events the key commands write.
const KEY_COMMAND_SUBJECT: &str = "integrations-server";

/// Failure of a key command. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The store, the keys or the configuration could not be prepared.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The rotation stopped part way; running the command again resumes it.
    #[error("key rotation stopped: {0}; run rotate-key again to resume")]
    Interrupted(String),
    /// The given master key does not open the data keys, possibly because
    /// `rotate-master-key` changed it since the command started.
    #[error("the master key cannot open the stored credentials: {0}; if rotate-master-key ran meanwhile, run rotate-key again with the new master key")]
    WrongMasterKey(String),
    /// The master key change was refused or failed; nothing was changed.
    #[error("{0}")]
    MasterKey(String),
}

impl From<KeyError> for RotationError {
    fn from(error: KeyError) -> Self {
        RotationError::Start(StartError::Keys(error))
    }
}

async fn open(config: &KeyedStoreConfig) -> Result<Arc<dyn IntegrationStore>, RotationError> {
    let (store, _) = open_store(
        config.database.database_url.as_ref(),
        &config.database.data_dir,
    )
    .await
    .map_err(StartError::Store)?;
    Ok(store)
}

/// Adds a new primary data key (or resumes an unfinished rotation) and re-encrypts every
/// integration, writing a progress line per batch and the rows left per key to `out`.
pub async fn rotate_key(
    config: &RotateKeyConfig,
    out: &mut (dyn Write + Send),
) -> Result<RotationReport, RotationError> {
    let store = open(&config.store).await?;
    let (master_key, _) = keys::load_existing_master_key(
        config.store.master_key.as_ref(),
        config.store.master_key_file.as_deref(),
        &config.store.database.data_dir,
    )?;
    let cipher =
        envelope_cipher(store.clone(), &master_key)
            .await
            .map_err(|error| match error {
                StartError::WrongMasterKey(message) => RotationError::WrongMasterKey(message),
                other => RotationError::Start(other),
            })?;
    let options = RotationOptions {
        batch_size: config.batch_size,
        pause: Duration::from_millis(config.pause_ms),
    };

    let started = Instant::now();
    let report = rotate_data_key(&cipher, options, |progress| {
        // A closed stdout must not stop the rotation; the summary reports the outcome anyway.
        let _ = writeln!(
            out,
            "pass {}: {} integrations scanned, {} re-encrypted with data key {}",
            progress.pass, progress.scanned, progress.resealed, progress.data_key
        );
    })
    .await
    .map_err(|error| RotationError::Interrupted(error.to_string()))?;

    let data_keys = store
        .list_data_keys()
        .await
        .map_err(|error| RotationError::Interrupted(error.to_string()))?;
    let verb = if report.resumed { "resumed" } else { "added" };
    let _ = writeln!(
        out,
        "{verb} primary data key {}; re-encrypted {} integrations in {:.1} s",
        report.data_key,
        report.resealed,
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(out, "integrations sealed by each key:");
    for key in &data_keys {
        let rows = report.rows_by_key.get(&key.id).copied().unwrap_or(0);
        let note = if key.id == report.data_key {
            " (primary)"
        } else if rows == 0 {
            " (seals nothing; no credential depends on it)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}: {rows}{note}", key.id);
    }
    for (label, rows) in &report.rows_by_key {
        if !data_keys.iter().any(|key| &key.id == label) {
            let _ = writeln!(out, "  {label}: {rows}");
        }
    }
    if !report.unopenable.is_empty() {
        let _ = writeln!(
            out,
            "{} integrations could not be opened and were left as they were: {:?}",
            report.unopenable.len(),
            report.unopenable
        );
    }

    let event = AuditEvent::new(
        &Actor::new(KEY_COMMAND_SUBJECT, Role::Owner),
        AuditAction::DataKeyRotated,
        AuditOutcome::Success,
    )
    .with_filter("data_key", report.data_key.clone())
    .with_filter("reencrypted", report.resealed.to_string())
    .with_filter("complete", report.complete().to_string());
    if let Err(error) = store.append_audit(&event).await {
        tracing::warn!(error = %error, data_key = %report.data_key, "failed to write the audit event of the key rotation");
    }
    Ok(report)
}

/// Rewraps every data key from the current master key to the new one, in one transaction.
/// Refused while integrations are still sealed directly by the current master key, because the
/// new key could not open them.
pub async fn rotate_master_key(
    config: &RotateMasterKeyConfig,
    out: &mut (dyn Write + Send),
) -> Result<usize, RotationError> {
    let store = open(&config.store).await?;
    let (old, _) = keys::load_existing_master_key(
        config.store.master_key.as_ref(),
        config.store.master_key_file.as_deref(),
        &config.store.database.data_dir,
    )?;
    let new = match (&config.new_master_key, &config.new_master_key_file) {
        (Some(text), _) => keys::parse_master_key_env("INTEGRATIONS_NEW_MASTER_KEY", text)?,
        (None, Some(path)) => keys::read_master_key(path)?,
        (None, None) => return Err(RotationError::MasterKey(
            "missing new master key: pass --new-master-key-file or set INTEGRATIONS_NEW_MASTER_KEY"
                .into(),
        )),
    };
    if new.id() == old.id() {
        return Err(RotationError::MasterKey(format!(
            "the new master key is the same as the current one ({}); generate a new key, for example with `openssl rand -base64 32`",
            old.id()
        )));
    }
    // Verifies the current key against every data key, and creates the first one on a database
    // that has none, so that the switch always leaves a key wrapped by the new master key.
    envelope_cipher(store.clone(), &old).await?;

    let counts = count_rows_by_key(store.as_ref(), 500)
        .await
        .map_err(|error| RotationError::MasterKey(error.to_string()))?;
    let direct: u64 = counts
        .iter()
        .filter(|(label, _)| label.starts_with("master:"))
        .map(|(_, rows)| rows)
        .sum();
    if direct > 0 {
        return Err(RotationError::MasterKey(format!(
            "{direct} integrations are still sealed directly by a master key; run rotate-key first so that every integration is sealed by a data key"
        )));
    }

    let rewrapped = rewrap_data_keys(store.as_ref(), &old, &new)
        .await
        .map_err(|error| RotationError::MasterKey(error.to_string()))?;
    let event = AuditEvent::new(
        &Actor::new(KEY_COMMAND_SUBJECT, Role::Owner),
        AuditAction::MasterKeyChanged,
        AuditOutcome::Success,
    )
    .with_filter("from_key", old.id())
    .with_filter("to_key", new.id())
    .with_filter("data_keys", rewrapped.to_string());
    if let Err(error) = store.append_audit(&event).await {
        tracing::warn!(error = %error, "failed to write the audit event of the master key change");
    }
    let _ = writeln!(
        out,
        "rewrapped {rewrapped} data keys from master key {} to master key {}; restart every server with the new master key (replace master.key in the data directory, or set INTEGRATIONS_MASTER_KEY)",
        old.id(),
        new.id()
    );
    Ok(rewrapped)
}
