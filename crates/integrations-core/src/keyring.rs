//! Envelope encryption: credentials are sealed with data keys, and data keys are stored in the
//! database wrapped by a master key or an external key provider.
//!
//! Every process loads data keys on demand, so the others follow a rotation done by one process.
//! They seal with the key the database marks as primary, and they load any key a ciphertext
//! names that they have not seen yet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rand::RngCore;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::cipher::{
    aead_for, seal_with, Aes256Gcm, Aes256GcmCipher, CipherError, CredentialCipher, MasterKey,
    SealedValue, DATA_KEY_FORMAT, MASTER_KEY_FORMAT,
};
use crate::store::{
    credentials_associated_data, DataKeyState, IntegrationStore, StoreError, StoredDataKey,
};

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// Format version of a data key wrapped by a [`MasterKey`].
const WRAP_FORMAT: u8 = 1;
const WRAP_NONCE_LEN: usize = 12;

/// Error from a key provider. Messages name key ids, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProviderError {
    /// The wrapped key could not be authenticated: another wrapping key, or tampered bytes.
    #[error("the wrapped data key could not be unwrapped")]
    Unwrap,
    /// Wrapping failed.
    #[error("the data key could not be wrapped")]
    Wrap,
    /// The provider (such as a KMS) could not be reached.
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
}

/// Wraps and unwraps data keys: a local master key, or an external key management service.
///
/// `data_key_id` is bound to the wrapped bytes, so a wrapped key copied onto another data key
/// id fails to unwrap.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Id of the wrapping key, stored beside every data key it wraps.
    fn key_id(&self) -> &str;

    /// Wraps a data key.
    async fn wrap(&self, data_key_id: &str, key: &[u8]) -> Result<Vec<u8>, KeyProviderError>;

    /// Unwraps a data key into a buffer that is wiped on drop.
    async fn unwrap(
        &self,
        data_key_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError>;
}

fn wrap_associated_data(data_key_id: &str) -> Vec<u8> {
    format!("integrations/data-key/v1/{data_key_id}").into_bytes()
}

/// A master key wraps data keys with AES-256-GCM:
/// `0x01 | nonce (12 bytes) | ciphertext and 16-byte tag`, with the data key id as associated
/// data.
#[async_trait]
impl KeyProvider for MasterKey {
    fn key_id(&self) -> &str {
        self.id()
    }

    async fn wrap(&self, data_key_id: &str, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        use aes_gcm::aead::{Aead, Payload};
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let associated_data = wrap_associated_data(data_key_id);
        let ciphertext = aead_for(self.bytes())
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: key,
                    aad: &associated_data,
                },
            )
            .map_err(|_| KeyProviderError::Wrap)?;
        let mut wrapped = Vec::with_capacity(1 + WRAP_NONCE_LEN + ciphertext.len());
        wrapped.push(WRAP_FORMAT);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    async fn unwrap(
        &self,
        data_key_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        use aes_gcm::aead::{Aead, Payload};
        let (&version, rest) = wrapped.split_first().ok_or(KeyProviderError::Unwrap)?;
        if version != WRAP_FORMAT || rest.len() < WRAP_NONCE_LEN {
            return Err(KeyProviderError::Unwrap);
        }
        let (nonce, ciphertext) = rest.split_at(WRAP_NONCE_LEN);
        let associated_data = wrap_associated_data(data_key_id);
        aead_for(self.bytes())
            .decrypt(
                aes_gcm::Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyProviderError::Unwrap)
    }
}

/// Failure to prepare, rotate or rewrap data keys. Messages name key ids, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A data key is wrapped by another master key than the configured one.
    #[error("data key {data_key} is wrapped by master key {wrapped_by}, but the configured master key is {configured}")]
    OtherWrappingKey {
        /// The data key.
        data_key: String,
        /// Id of the key that wrapped it.
        wrapped_by: String,
        /// Id of the configured key.
        configured: String,
    },
    /// The configured master key names the data key's wrapping key but cannot unwrap it.
    #[error("master key {configured} cannot open data key {data_key}: {source}")]
    Unwrap {
        /// The data key.
        data_key: String,
        /// Id of the configured key.
        configured: String,
        /// The key provider's error.
        source: KeyProviderError,
    },
    /// Stored credentials name data keys that the database does not contain.
    #[error("stored credentials are sealed by data keys {0:?}, which are missing from the database; restore the data_keys table from a backup")]
    MissingDataKeys(Vec<String>),
    /// The key provider failed.
    #[error(transparent)]
    Provider(#[from] KeyProviderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Re-encryption failed.
    #[error(transparent)]
    Cipher(#[from] CipherError),
}

/// Seals with the database's primary data key and opens values sealed by any data key, or by a
/// master key directly (format version 1, written before data keys existed).
pub struct EnvelopeCipher {
    store: Arc<dyn IntegrationStore>,
    provider: Arc<dyn KeyProvider>,
    legacy: Option<Aes256GcmCipher>,
    loaded: RwLock<HashMap<String, Arc<Aes256Gcm>>>,
}

impl fmt::Debug for EnvelopeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded: Vec<String> = self
            .loaded
            .read()
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("EnvelopeCipher")
            .field("wrapping_key_id", &self.provider.key_id())
            .field("loaded_data_keys", &loaded)
            .finish_non_exhaustive()
    }
}

/// Result of [`EnvelopeCipher::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringStatus {
    /// Number of data keys in the database, all verified.
    pub data_keys: usize,
    /// Id of the primary data key.
    pub primary: String,
    /// Whether this call created the first data key.
    pub created: bool,
}

impl EnvelopeCipher {
    /// Creates a cipher over the data keys in `store`, wrapped by `provider`. Call
    /// [`prepare`](Self::prepare) before serving.
    pub fn new(store: Arc<dyn IntegrationStore>, provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            store,
            provider,
            legacy: None,
            loaded: RwLock::new(HashMap::new()),
        }
    }

    /// Also opens values sealed directly by these master keys (format version 1).
    pub fn with_legacy_keys(mut self, legacy: Aes256GcmCipher) -> Self {
        self.legacy = Some(legacy);
        self
    }

    /// Returns the id of the wrapping key.
    pub fn wrapping_key_id(&self) -> &str {
        self.provider.key_id()
    }

    /// Verifies that the provider opens every stored data key, and creates the first primary
    /// data key when there is none. Fails, naming the key, when a data key cannot be opened, so
    /// nothing is ever written with an unverified key.
    pub async fn prepare(&self) -> Result<KeyringStatus, KeyringError> {
        for attempt in 0..3 {
            let keys = self.store.list_data_keys().await?;
            for key in &keys {
                self.unwrap_into_cache(key).await?;
            }
            if let Some(primary) = keys.iter().find(|key| key.is_primary) {
                return Ok(KeyringStatus {
                    data_keys: keys.len(),
                    primary: primary.id.clone(),
                    created: false,
                });
            }
            if keys.is_empty() {
                let missing = missing_data_keys(self.store.as_ref(), &keys).await?;
                if !missing.is_empty() {
                    return Err(KeyringError::MissingDataKeys(missing));
                }
            }
            // NOTE: processes starting together on an empty database may each add a first key.
            // The last one stays primary and the others seal nothing, so no value is lost.
            match self.add_primary(DataKeyState::Active).await {
                Ok(id) => {
                    return Ok(KeyringStatus {
                        data_keys: keys.len() + 1,
                        primary: id,
                        created: true,
                    })
                }
                // Another process added the first primary at the same time; use its key.
                Err(KeyringError::Store(StoreError::Conflict(_))) if attempt < 2 => continue,
                Err(error) => return Err(error),
            }
        }
        Err(KeyringError::Store(StoreError::Conflict(
            "the primary data key kept changing while starting".into(),
        )))
    }

    /// Adds a new random data key as primary, wrapped by the provider, and returns its id.
    pub async fn add_primary(&self, state: DataKeyState) -> Result<String, KeyringError> {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let id = format!("dk-{}", hex::encode(suffix));
        let wrapped = self.provider.wrap(&id, bytes.as_ref()).await?;
        let record = StoredDataKey {
            id: id.clone(),
            wrapped,
            wrapping_key_id: self.provider.key_id().to_owned(),
            is_primary: true,
            state,
            created_at: Utc::now(),
        };
        self.store.insert_data_key(&record).await?;
        self.cache(&id, Arc::new(aead_for(bytes.as_ref())));
        Ok(id)
    }

    /// Seals with a given data key rather than the primary, for re-encryption.
    pub async fn seal_with_data_key(
        &self,
        data_key_id: &str,
        plaintext: &[u8],
        associated_data: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let cipher = self.load(data_key_id).await?;
        seal_with(
            &cipher,
            DATA_KEY_FORMAT,
            data_key_id,
            plaintext,
            associated_data,
        )
    }

    /// Returns the primary data key's id and cipher. The primary is read from the database on
    /// every call, so a rotation by another process takes effect with this process's next
    /// write. Writes are rare next to reads, so the query costs little overall.
    async fn primary(&self) -> Result<(String, Arc<Aes256Gcm>), CipherError> {
        let primary = self
            .store
            .primary_data_key()
            .await
            .map_err(|error| CipherError::KeyUnavailable(format!("primary data key: {error}")))?
            .ok_or_else(|| {
                CipherError::KeyUnavailable("no primary data key found in the database".into())
            })?;
        let cipher = self
            .unwrap_into_cache(&primary)
            .await
            .map_err(|error| CipherError::KeyUnavailable(error.to_string()))?;
        Ok((primary.id, cipher))
    }

    fn cached(&self, id: &str) -> Option<Arc<Aes256Gcm>> {
        self.loaded.read().ok()?.get(id).cloned()
    }

    fn cache(&self, id: &str, cipher: Arc<Aes256Gcm>) {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.insert(id.to_owned(), cipher);
        }
    }

    /// Returns the data key `id`, loading and unwrapping it when this process has not yet.
    async fn load(&self, id: &str) -> Result<Arc<Aes256Gcm>, CipherError> {
        if let Some(cipher) = self.cached(id) {
            return Ok(cipher);
        }
        let record = self
            .store
            .find_data_key(id)
            .await
            .map_err(|error| CipherError::KeyUnavailable(format!("data key {id}: {error}")))?
            .ok_or_else(|| CipherError::UnknownKey(id.to_owned()))?;
        self.unwrap_into_cache(&record)
            .await
            .map_err(|error| CipherError::KeyUnavailable(error.to_string()))
    }

    async fn unwrap_into_cache(
        &self,
        record: &StoredDataKey,
    ) -> Result<Arc<Aes256Gcm>, KeyringError> {
        if let Some(cipher) = self.cached(&record.id) {
            return Ok(cipher);
        }
        let configured = self.provider.key_id();
        if record.wrapping_key_id != configured {
            return Err(KeyringError::OtherWrappingKey {
                data_key: record.id.clone(),
                wrapped_by: record.wrapping_key_id.clone(),
                configured: configured.to_owned(),
            });
        }
        let bytes = self
            .provider
            .unwrap(&record.id, &record.wrapped)
            .await
            .map_err(|source| KeyringError::Unwrap {
                data_key: record.id.clone(),
                configured: configured.to_owned(),
                source,
            })?;
        if bytes.len() != DATA_KEY_LEN {
            return Err(KeyringError::Unwrap {
                data_key: record.id.clone(),
                configured: configured.to_owned(),
                source: KeyProviderError::Unwrap,
            });
        }
        let cipher = Arc::new(aead_for(&bytes));
        self.cache(&record.id, cipher.clone());
        Ok(cipher)
    }
}

#[async_trait]
impl CredentialCipher for EnvelopeCipher {
    async fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CipherError> {
        let (id, cipher) = self.primary().await?;
        seal_with(&cipher, DATA_KEY_FORMAT, &id, plaintext, associated_data)
    }

    /// Loads the primary data key, so that a server whose master key no longer wraps it (after
    /// `rotate-master-key`) reports itself unavailable.
    async fn check_ready(&self) -> Result<(), CipherError> {
        self.primary().await.map(|_| ())
    }

    async fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        // Every failure but an unreachable key source reads the same, whichever part of the
        // value was damaged: the framing, the key id, the nonce, the ciphertext or the tag.
        let parsed = SealedValue::parse(sealed)?;
        if parsed.version == MASTER_KEY_FORMAT {
            return match &self.legacy {
                Some(legacy) => legacy
                    .open(sealed, associated_data)
                    .map_err(|_| CipherError::Open),
                None => Err(CipherError::Open),
            };
        }
        let cipher = match self.load(parsed.key_id).await {
            Ok(cipher) => cipher,
            Err(CipherError::UnknownKey(_)) => return Err(CipherError::Open),
            Err(error) => return Err(error),
        };
        parsed.open_with(&cipher, associated_data)
    }
}

/// Pacing of a key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationOptions {
    /// Rows re-encrypted per batch.
    pub batch_size: u64,
    /// Pause between batches, so serving processes keep most of the database's write capacity.
    pub pause: Duration,
}

impl Default for RotationOptions {
    fn default() -> Self {
        Self {
            batch_size: 200,
            pause: Duration::from_millis(20),
        }
    }
}

/// Progress after one batch of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationProgress {
    /// Target data key.
    pub data_key: String,
    /// Pass over the table, from 1. A pass after the first picks up rows written concurrently
    /// with an older key.
    pub pass: u32,
    /// Rows looked at in this pass.
    pub scanned: u64,
    /// Rows re-encrypted so far, all passes.
    pub resealed: u64,
}

/// Result of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new primary data key.
    pub data_key: String,
    /// Whether the run continued an unfinished rotation instead of adding a key.
    pub resumed: bool,
    /// Rows re-encrypted by this run.
    pub resealed: u64,
    /// Integrations whose credentials could not be opened, left as they were.
    pub unopenable: Vec<Uuid>,
    /// Rows sealed by each key after the run: data key ids, and `master:<id>` for values
    /// sealed directly by a master key.
    pub rows_by_key: BTreeMap<String, u64>,
}

impl RotationReport {
    /// Reports whether every row is sealed by the new primary data key.
    pub fn complete(&self) -> bool {
        self.unopenable.is_empty() && self.rows_by_key.keys().all(|key| *key == self.data_key)
    }
}

/// Passes over the table before a rotation gives up on rows that keep being rewritten with an
/// older key, so that a run always ends.
const MAX_ROTATION_PASSES: u32 = 5;

/// Adds a new primary data key and re-encrypts every integration with it, batch by batch, while
/// other processes keep serving. A run that finds an unfinished rotation resumes it with the
/// same key instead of adding another. Each row is replaced only if it did not change since it
/// was read, so a concurrent update is never lost.
pub async fn rotate_data_key(
    cipher: &EnvelopeCipher,
    options: RotationOptions,
    mut progress: impl FnMut(&RotationProgress) + Send,
) -> Result<RotationReport, KeyringError> {
    cipher.prepare().await?;
    let store = cipher.store.clone();
    let current = store.primary_data_key().await?;
    let (data_key, resumed) = match current {
        Some(key) if key.state == DataKeyState::Rotating => (key.id, true),
        _ => match cipher.add_primary(DataKeyState::Rotating).await {
            Ok(id) => (id, false),
            // Another run added its key first; join it rather than adding a second one.
            Err(KeyringError::Store(StoreError::Conflict(message))) => {
                match store.primary_data_key().await? {
                    Some(key) if key.state == DataKeyState::Rotating => (key.id, true),
                    _ => return Err(KeyringError::Store(StoreError::Conflict(message))),
                }
            }
            Err(error) => return Err(error),
        },
    };

    let batch_size = options.batch_size.max(1);
    let mut resealed = 0;
    let mut unopenable = Vec::new();
    let mut rows_by_key = BTreeMap::new();
    for pass in 1..=MAX_ROTATION_PASSES {
        let mut after = None;
        let mut scanned = 0;
        loop {
            let rows = store.list_sealed(after, batch_size).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            for row in &rows {
                scanned += 1;
                let (version, key_id) =
                    crate::cipher::sealed_key_id(&row.sealed_credentials).unwrap_or((0, ""));
                if version == DATA_KEY_FORMAT && key_id == data_key {
                    continue;
                }
                let associated_data =
                    credentials_associated_data(row.id, row.provider, row.auth_type);
                let plaintext = match cipher.open(&row.sealed_credentials, &associated_data).await {
                    Ok(plaintext) => plaintext,
                    Err(CipherError::KeyUnavailable(message)) => {
                        return Err(CipherError::KeyUnavailable(message).into())
                    }
                    Err(_) => {
                        if !unopenable.contains(&row.id) {
                            unopenable.push(row.id);
                        }
                        continue;
                    }
                };
                let sealed = cipher
                    .seal_with_data_key(&data_key, &plaintext, &associated_data)
                    .await?;
                // A row changed since it was read keeps its new value; the next pass
                // re-encrypts it.
                if store
                    .replace_sealed(row.id, &row.sealed_credentials, &sealed)
                    .await?
                {
                    resealed += 1;
                }
            }
            progress(&RotationProgress {
                data_key: data_key.clone(),
                pass,
                scanned,
                resealed,
            });
            if !options.pause.is_zero() {
                tokio::time::sleep(options.pause).await;
            }
        }

        // Rows updated during the pass, or written by a process that read the old primary just
        // before the rotation started, are still sealed by an older key.
        rows_by_key = count_rows_by_key(store.as_ref(), batch_size).await?;
        let behind: u64 = rows_by_key
            .iter()
            .filter(|(key, _)| **key != data_key)
            .map(|(_, rows)| rows)
            .sum();
        if behind <= unopenable.len() as u64 {
            break;
        }
    }

    let report = RotationReport {
        data_key: data_key.clone(),
        resumed,
        resealed,
        unopenable,
        rows_by_key,
    };
    if report.complete() {
        // Only the key that is still primary is marked done. A key replaced by a later rotation
        // stays as it is, because its run reports rows sealed by the newer key.
        let still_primary = store
            .primary_data_key()
            .await?
            .is_some_and(|key| key.id == data_key);
        if still_primary {
            store
                .set_data_key_state(&data_key, DataKeyState::Active)
                .await?;
        }
    }
    Ok(report)
}

/// Counts the rows sealed by each key: data key ids, and `master:<id>` for values sealed
/// directly by a master key.
pub async fn count_rows_by_key(
    store: &dyn IntegrationStore,
    batch_size: u64,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    let mut after = None;
    loop {
        let rows = store.list_sealed(after, batch_size.max(1)).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for row in &rows {
            let label = match crate::cipher::sealed_key_id(&row.sealed_credentials) {
                Ok((MASTER_KEY_FORMAT, id)) => format!("master:{id}"),
                Ok((_, id)) => id.to_owned(),
                Err(_) => "unreadable".to_owned(),
            };
            *counts.entry(label).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Returns the data key ids that sealed rows name but `keys` does not contain.
pub async fn missing_data_keys(
    store: &dyn IntegrationStore,
    keys: &[StoredDataKey],
) -> Result<Vec<String>, StoreError> {
    let counts = count_rows_by_key(store, 500).await?;
    Ok(counts
        .into_keys()
        .filter(|label| !label.starts_with("master:") && label != "unreadable")
        .filter(|label| !keys.iter().any(|key| key.id == *label))
        .collect())
}

/// Moves every data key from the `old` wrapping key to `new`, in one transaction. Keys already
/// wrapped by `new` are left alone, so a run that was interrupted can be repeated. Returns the
/// number of keys rewrapped.
pub async fn rewrap_data_keys(
    store: &dyn IntegrationStore,
    old: &dyn KeyProvider,
    new: &dyn KeyProvider,
) -> Result<usize, KeyringError> {
    let keys = store.list_data_keys().await?;
    let mut rewrapped = Vec::with_capacity(keys.len());
    let mut changed = 0;
    for key in keys {
        if key.wrapping_key_id == new.key_id() {
            new.unwrap(&key.id, &key.wrapped)
                .await
                .map_err(|source| KeyringError::Unwrap {
                    data_key: key.id.clone(),
                    configured: new.key_id().to_owned(),
                    source,
                })?;
            rewrapped.push(key);
            continue;
        }
        if key.wrapping_key_id != old.key_id() {
            return Err(KeyringError::OtherWrappingKey {
                data_key: key.id,
                wrapped_by: key.wrapping_key_id,
                configured: old.key_id().to_owned(),
            });
        }
        let bytes =
            old.unwrap(&key.id, &key.wrapped)
                .await
                .map_err(|source| KeyringError::Unwrap {
                    data_key: key.id.clone(),
                    configured: old.key_id().to_owned(),
                    source,
                })?;
        let wrapped = new.wrap(&key.id, &bytes).await?;
        rewrapped.push(StoredDataKey {
            wrapped,
            wrapping_key_id: new.key_id().to_owned(),
            ..key
        });
        changed += 1;
    }
    // Every key is written back, so the store can refuse the change when a rotation added a
    // key since the list above was read.
    if changed > 0 {
        store.rewrap_data_keys(&rewrapped).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn master_key_wraps_and_unwraps() {
        let master = MasterKey::generate();
        let wrapped = master.wrap("dk-1", &[9u8; 32]).await.unwrap();
        assert_eq!(
            master.unwrap("dk-1", &wrapped).await.unwrap().as_slice(),
            &[9u8; 32]
        );
        assert_eq!(
            master.unwrap("dk-2", &wrapped).await,
            Err(KeyProviderError::Unwrap),
            "a wrapped key moved to another id must not unwrap"
        );
        assert_eq!(
            MasterKey::generate().unwrap("dk-1", &wrapped).await,
            Err(KeyProviderError::Unwrap)
        );
        let mut tampered = wrapped.clone();
        tampered[20] ^= 1;
        assert_eq!(
            master.unwrap("dk-1", &tampered).await,
            Err(KeyProviderError::Unwrap)
        );
    }
}
