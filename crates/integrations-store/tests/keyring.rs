//! Envelope encryption over real stores: data keys in the database, wrapped by a master key or
//! another key provider, followed across processes, rotated and rewrapped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use integrations_core::keyring::{
    count_rows_by_key, rewrap_data_keys, rotate_data_key, RotationOptions,
};
use integrations_core::store::{credentials_associated_data, DataKeyState};
use integrations_core::{
    Actor, Aes256GcmCipher, AuthType, CipherError, CredentialCipher, CredentialFilter, Credentials,
    EnvelopeCipher, IntegrationService, IntegrationStore, KeyProvider, KeyProviderError,
    KeyringError, MasterKey, NewIntegration, Provider, Role, ServiceError,
};
use integrations_store::{MemoryStore, SqliteStore};
use uuid::Uuid;
use zeroize::Zeroizing;

fn owner() -> Actor {
    Actor::new("owner@example.com", Role::Owner)
}

fn github_pat(token: &str) -> NewIntegration {
    NewIntegration {
        provider: Provider::Github,
        auth_type: AuthType::Pat,
        credentials: Credentials::new().with("token", token),
        is_global: Some(true),
        projects: None,
        is_default: false,
        config: Default::default(),
    }
}

async fn prepared(store: Arc<dyn IntegrationStore>, master: &MasterKey) -> Arc<EnvelopeCipher> {
    let cipher = EnvelopeCipher::new(store, Arc::new(master.clone()));
    cipher.prepare().await.expect("prepare keyring");
    Arc::new(cipher)
}

fn service(store: &SqliteStore, cipher: Arc<EnvelopeCipher>) -> IntegrationService {
    IntegrationService::new(Arc::new(store.clone()), cipher, Arc::new(store.clone()))
}

async fn read_token(service: &IntegrationService, id: Uuid) -> Result<String, ServiceError> {
    let records = service
        .read_credentials(
            &owner(),
            CredentialFilter {
                provider: Some(Provider::Github),
                project: None,
            },
        )
        .await?;
    let record = records
        .into_iter()
        .find(|record| record.integration.id == id)
        .expect("integration listed");
    Ok(record.credentials.expose("token").unwrap().to_owned())
}

/// A key provider standing in for a KMS: it wraps with its own key under its own id and counts
/// the unwraps it is asked for.
#[derive(Debug)]
struct CountingKms {
    key: MasterKey,
    id: String,
    unwraps: AtomicUsize,
}

#[async_trait]
impl KeyProvider for CountingKms {
    fn key_id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, data_key_id: &str, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        self.key.wrap(data_key_id, key).await
    }

    async fn unwrap(
        &self,
        data_key_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.key.unwrap(data_key_id, wrapped).await
    }
}

#[tokio::test]
async fn first_start_creates_one_primary() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let master = MasterKey::generate();
    let first = EnvelopeCipher::new(store.clone(), Arc::new(master.clone()));
    let status = first.prepare().await.unwrap();
    assert!(status.created);
    assert_eq!(status.data_keys, 1);

    let again = EnvelopeCipher::new(store.clone(), Arc::new(master.clone()));
    let status = again.prepare().await.unwrap();
    assert!(!status.created);
    let keys = store.list_data_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].wrapping_key_id, master.id());
    assert!(keys[0].is_primary);
    assert_ne!(keys[0].wrapped.len(), 0);
}

#[tokio::test]
async fn processes_starting_together_share_one_primary() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let path = dir.path().to_owned();
        let master = master.clone();
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::open_in_dir(&path).await.unwrap();
            let cipher = EnvelopeCipher::new(Arc::new(store), Arc::new(master));
            cipher.prepare().await.unwrap().primary
        }));
    }
    let mut primaries = Vec::new();
    for task in tasks {
        primaries.push(task.await.unwrap());
    }
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let keys = store.list_data_keys().await.unwrap();
    assert_eq!(keys.iter().filter(|key| key.is_primary).count(), 1);
    let primary = store.primary_data_key().await.unwrap().unwrap().id;
    // Every process either used the existing primary or created a key that the next one
    // demoted. The key that is primary now seals for all of them.
    assert!(primaries.contains(&primary), "{primaries:?} vs {primary}");
}

#[tokio::test]
async fn sealed_value_names_the_primary_data_key() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let cipher = prepared(store.clone(), &MasterKey::generate()).await;
    let primary = store.primary_data_key().await.unwrap().unwrap();
    let sealed = cipher.seal(b"secret value", b"row").await.unwrap();
    assert_eq!(
        integrations_core::cipher::sealed_key_id(&sealed).unwrap(),
        (2, primary.id.as_str())
    );
    assert!(!sealed
        .windows(b"secret value".len())
        .any(|window| window == b"secret value"));
    assert_eq!(
        cipher.open(&sealed, b"row").await.unwrap().as_slice(),
        b"secret value"
    );
}

#[tokio::test]
async fn tampering_anywhere_fails_with_one_opaque_error() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let cipher = prepared(store, &MasterKey::generate()).await;
    let sealed = cipher.seal(b"ghp_tamper_target", b"row").await.unwrap();
    for index in 0..sealed.len() {
        for flip in [0x01u8, 0x80] {
            let mut tampered = sealed.clone();
            tampered[index] ^= flip;
            assert_eq!(
                cipher.open(&tampered, b"row").await,
                Err(CipherError::Open),
                "byte {index} flipped with {flip:#x}"
            );
        }
    }
    for length in 0..sealed.len() {
        assert_eq!(
            cipher.open(&sealed[..length], b"row").await,
            Err(CipherError::Open),
            "cut to {length} bytes"
        );
    }
    assert_eq!(
        CipherError::Open.to_string(),
        "sealed credentials could not be opened"
    );
}

#[tokio::test]
async fn ciphertext_copied_onto_another_row_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let cipher = prepared(Arc::new(store.clone()), &MasterKey::generate()).await;
    let service = service(&store, cipher);
    let source = service
        .create_integration(&owner(), github_pat("ghp_source_row"))
        .await
        .unwrap();
    let target = service
        .create_integration(&owner(), github_pat("ghp_target_row"))
        .await
        .unwrap();

    let source_sealed = store
        .find_integration(source.id)
        .await
        .unwrap()
        .unwrap()
        .sealed_credentials;
    let target_sealed = store
        .find_integration(target.id)
        .await
        .unwrap()
        .unwrap()
        .sealed_credentials;
    assert!(store
        .replace_sealed(target.id, &target_sealed, &source_sealed)
        .await
        .unwrap());

    let error = read_token(&service, target.id).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ServiceError::Internal(_)), "{error:?}");
    assert!(message.contains(&target.id.to_string()), "{message}");
    assert!(!message.contains("ghp_source_row"), "{message}");
    // The source row is untouched and still opens.
    assert!(store
        .replace_sealed(target.id, &source_sealed, &target_sealed)
        .await
        .unwrap());
    assert_eq!(
        read_token(&service, target.id).await.unwrap(),
        "ghp_target_row"
    );
}

#[tokio::test]
async fn wrong_master_key_rejected_by_id() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let right = MasterKey::generate();
    prepared(store.clone(), &right).await;
    let data_key = store.primary_data_key().await.unwrap().unwrap().id;

    let wrong = MasterKey::generate();
    let error = EnvelopeCipher::new(store.clone(), Arc::new(wrong.clone()))
        .prepare()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, KeyringError::OtherWrappingKey { .. }),
        "{error:?}"
    );
    assert!(message.contains(&data_key), "{message}");
    assert!(message.contains(right.id()), "{message}");
    assert!(message.contains(wrong.id()), "{message}");

    // A provider that claims the right id but has another key cannot unwrap either.
    let impostor = CountingKms {
        key: MasterKey::generate(),
        id: right.id().to_owned(),
        unwraps: AtomicUsize::new(0),
    };
    let error = EnvelopeCipher::new(store.clone(), Arc::new(impostor))
        .prepare()
        .await
        .unwrap_err();
    assert!(matches!(error, KeyringError::Unwrap { .. }), "{error:?}");
    assert!(error.to_string().contains(&data_key), "{error}");
    // Nothing was written by the refused keys.
    assert_eq!(store.list_data_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn external_key_provider_unwraps_each_key_once() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let kms = Arc::new(CountingKms {
        key: MasterKey::generate(),
        id: "kms:projects/demo/keys/integrations".to_owned(),
        unwraps: AtomicUsize::new(0),
    });
    let cipher = EnvelopeCipher::new(store.clone(), kms.clone());
    cipher.prepare().await.unwrap();
    assert_eq!(
        store
            .primary_data_key()
            .await
            .unwrap()
            .unwrap()
            .wrapping_key_id,
        "kms:projects/demo/keys/integrations"
    );
    let sealed = cipher.seal(b"value", b"ad").await.unwrap();

    // A second process unwraps the key once, then serves from its cache.
    let other = EnvelopeCipher::new(store, kms.clone());
    let before = kms.unwraps.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(
            other.open(&sealed, b"ad").await.unwrap().as_slice(),
            b"value"
        );
    }
    assert_eq!(kms.unwraps.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn other_process_follows_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let first_store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let second_store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let first = prepared(Arc::new(first_store.clone()), &master).await;
    let second = prepared(Arc::new(second_store.clone()), &master).await;
    let old_primary = first_store.primary_data_key().await.unwrap().unwrap().id;

    let new_primary = first.add_primary(DataKeyState::Active).await.unwrap();
    assert_ne!(new_primary, old_primary);

    // The second process seals with the new primary on its next write, and opens values sealed
    // by a key it has never loaded.
    let sealed_by_second = second.seal(b"after rotation", b"ad").await.unwrap();
    assert_eq!(
        integrations_core::cipher::sealed_key_id(&sealed_by_second)
            .unwrap()
            .1,
        new_primary
    );
    let sealed_by_first = first.seal(b"from first", b"ad").await.unwrap();
    assert_eq!(
        second
            .open(&sealed_by_first, b"ad")
            .await
            .unwrap()
            .as_slice(),
        b"from first"
    );
}

#[tokio::test]
async fn legacy_values_open_and_rotate_into_data_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let master = MasterKey::generate();
    // Written as before data keys existed: sealed directly with the master key.
    let legacy = IntegrationService::new(
        Arc::new(store.clone()),
        Arc::new(Aes256GcmCipher::new(&master)),
        Arc::new(store.clone()),
    );
    let created = legacy
        .create_integration(&owner(), github_pat("ghp_from_before"))
        .await
        .unwrap();

    let cipher = Arc::new(
        EnvelopeCipher::new(Arc::new(store.clone()), Arc::new(master.clone()))
            .with_legacy_keys(Aes256GcmCipher::new(&master)),
    );
    cipher.prepare().await.unwrap();
    let upgraded = service(&store, cipher.clone());
    assert_eq!(
        read_token(&upgraded, created.id).await.unwrap(),
        "ghp_from_before"
    );
    let counts = count_rows_by_key(&store, 10).await.unwrap();
    assert_eq!(counts.get(&format!("master:{}", master.id())), Some(&1));

    let report = rotate_data_key(&cipher, RotationOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.resealed, 1);
    assert_eq!(report.rows_by_key.get(&report.data_key), Some(&1));
    assert_eq!(report.rows_by_key.len(), 1);
    assert_eq!(
        read_token(&upgraded, created.id).await.unwrap(),
        "ghp_from_before"
    );
}

#[tokio::test]
async fn rotation_resumes_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let master = MasterKey::generate();
    let cipher = prepared(Arc::new(store.clone()), &master).await;
    let service = service(&store, cipher.clone());
    let mut ids = Vec::new();
    for index in 0..30 {
        let created = service
            .create_integration(&owner(), github_pat(&format!("ghp_resume_{index}")))
            .await
            .unwrap();
        ids.push(created.id);
    }
    let old_primary = store.primary_data_key().await.unwrap().unwrap().id;

    // A run stopped after its first batch: drop the future while it pauses.
    let options = RotationOptions {
        batch_size: 10,
        pause: Duration::from_secs(30),
    };
    let stopped = tokio::time::timeout(
        Duration::from_millis(500),
        rotate_data_key(&cipher, options, |_| {}),
    )
    .await;
    assert!(stopped.is_err(), "the first run should still be pausing");
    let rotating = store.primary_data_key().await.unwrap().unwrap();
    assert_eq!(rotating.state, DataKeyState::Rotating);
    let counts = count_rows_by_key(&store, 100).await.unwrap();
    assert_eq!(counts.get(&rotating.id), Some(&10), "{counts:?}");
    assert_eq!(counts.get(&old_primary), Some(&20), "{counts:?}");

    let report = rotate_data_key(
        &cipher,
        RotationOptions {
            batch_size: 10,
            pause: Duration::ZERO,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.resumed);
    assert_eq!(report.data_key, rotating.id);
    assert_eq!(report.resealed, 20);
    assert!(report.complete(), "{report:?}");
    assert_eq!(
        store.primary_data_key().await.unwrap().unwrap().state,
        DataKeyState::Active
    );
    for (index, id) in ids.iter().enumerate() {
        assert_eq!(
            read_token(&service, *id).await.unwrap(),
            format!("ghp_resume_{index}")
        );
    }

    // The next run starts a new rotation rather than resuming the finished one.
    let next = rotate_data_key(&cipher, RotationOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(!next.resumed);
    assert_ne!(next.data_key, rotating.id);
}

#[tokio::test]
async fn rotation_never_overwrites_a_concurrent_update() {
    let store = MemoryStore::new();
    let master = MasterKey::generate();
    let cipher = prepared(Arc::new(store.clone()), &master).await;
    let service = IntegrationService::new(
        Arc::new(store.clone()),
        cipher.clone(),
        Arc::new(store.clone()),
    );
    let created = service
        .create_integration(&owner(), github_pat("ghp_before_update"))
        .await
        .unwrap();
    let row = store.find_integration(created.id).await.unwrap().unwrap();
    let associated_data = credentials_associated_data(created.id, Provider::Github, AuthType::Pat);

    // An update lands between the rotation's read and its write: the write must not apply.
    let updated = cipher
        .seal(
            &Credentials::new()
                .with("token", "ghp_after_update")
                .to_plaintext(),
            &associated_data,
        )
        .await
        .unwrap();
    assert!(store
        .replace_sealed(created.id, &row.sealed_credentials, &updated)
        .await
        .unwrap());
    let stale = cipher
        .seal(
            &Credentials::new()
                .with("token", "ghp_before_update")
                .to_plaintext(),
            &associated_data,
        )
        .await
        .unwrap();
    assert!(!store
        .replace_sealed(created.id, &row.sealed_credentials, &stale)
        .await
        .unwrap());

    let report = rotate_data_key(&cipher, RotationOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.complete());
    assert_eq!(
        read_token_any(&service, created.id).await,
        "ghp_after_update"
    );
}

async fn read_token_any(service: &IntegrationService, id: Uuid) -> String {
    let records = service
        .read_credentials(
            &owner(),
            CredentialFilter {
                provider: Some(Provider::Github),
                project: None,
            },
        )
        .await
        .unwrap();
    records
        .into_iter()
        .find(|record| record.integration.id == id)
        .unwrap()
        .credentials
        .expose("token")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn master_key_switch_rewraps_every_data_key() {
    let store: Arc<dyn IntegrationStore> = Arc::new(MemoryStore::new());
    let old = MasterKey::generate();
    let cipher = prepared(store.clone(), &old).await;
    cipher.add_primary(DataKeyState::Active).await.unwrap();
    let sealed = cipher.seal(b"kept", b"ad").await.unwrap();

    let new = MasterKey::generate();
    assert_eq!(
        rewrap_data_keys(store.as_ref(), &old, &new).await.unwrap(),
        2
    );
    // Repeating the switch finds nothing left to do.
    assert_eq!(
        rewrap_data_keys(store.as_ref(), &old, &new).await.unwrap(),
        0
    );
    for key in store.list_data_keys().await.unwrap() {
        assert_eq!(key.wrapping_key_id, new.id());
    }

    // A process still on the old master key cannot add a data key after the switch.
    let stale = cipher.add_primary(DataKeyState::Active).await.unwrap_err();
    assert!(
        matches!(
            stale,
            KeyringError::Store(integrations_core::StoreError::Conflict(_))
        ),
        "{stale:?}"
    );
    assert_eq!(store.list_data_keys().await.unwrap().len(), 2);

    let with_new = prepared(store.clone(), &new).await;
    assert_eq!(
        with_new.open(&sealed, b"ad").await.unwrap().as_slice(),
        b"kept"
    );
    let rejected = EnvelopeCipher::new(store.clone(), Arc::new(old.clone()))
        .prepare()
        .await
        .unwrap_err();
    assert!(rejected.to_string().contains(new.id()), "{rejected}");

    // A switch from a key that wraps nothing here is refused without changing anything.
    let stranger = MasterKey::generate();
    let error = rewrap_data_keys(store.as_ref(), &stranger, &MasterKey::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(error, KeyringError::OtherWrappingKey { .. }),
        "{error:?}"
    );
    for key in store.list_data_keys().await.unwrap() {
        assert_eq!(key.wrapping_key_id, new.id());
    }
}

#[tokio::test]
async fn data_keys_never_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let master = MasterKey::generate();
    let cipher = prepared(Arc::new(store.clone()), &master).await;
    cipher.add_primary(DataKeyState::Active).await.unwrap();
    let keys = store.list_data_keys().await.unwrap();
    store.close().await;

    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        files.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert_eq!(keys.len(), 2);
    for key in keys {
        let plaintext = master.unwrap(&key.id, &key.wrapped).await.unwrap();
        assert_eq!(plaintext.len(), 32);
        assert!(
            !files
                .windows(32)
                .any(|window| window == plaintext.as_slice()),
            "data key {} is stored in plaintext",
            key.id
        );
        assert!(
            files
                .windows(key.wrapped.len())
                .any(|window| window == key.wrapped),
            "the wrapped data key {} is not in the database files",
            key.id
        );
    }
}

#[tokio::test]
async fn concurrent_rotations_share_one_key() {
    let store = MemoryStore::new();
    let master = MasterKey::generate();
    let cipher = prepared(Arc::new(store.clone()), &master).await;
    let service = IntegrationService::new(
        Arc::new(store.clone()),
        cipher.clone(),
        Arc::new(store.clone()),
    );
    for index in 0..40 {
        service
            .create_integration(&owner(), github_pat(&format!("ghp_concurrent_{index}")))
            .await
            .unwrap();
    }

    let options = RotationOptions {
        batch_size: 5,
        pause: Duration::from_millis(1),
    };
    let (first, second) = tokio::join!(
        rotate_data_key(&cipher, options, |_| {}),
        rotate_data_key(&cipher, options, |_| {})
    );
    let (first, second) = (first.unwrap(), second.unwrap());

    // The run that came second joined the first one's key instead of adding its own.
    assert_eq!(first.data_key, second.data_key);
    assert!(first.resumed || second.resumed);
    assert_eq!(store.list_data_keys().await.unwrap().len(), 2);
    let primary = store.primary_data_key().await.unwrap().unwrap();
    assert_eq!(primary.id, first.data_key);
    assert_eq!(primary.state, DataKeyState::Active);
    let counts = count_rows_by_key(&store, 100).await.unwrap();
    assert_eq!(counts.get(&primary.id), Some(&40), "{counts:?}");
}

#[tokio::test]
async fn missing_data_keys_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let master = MasterKey::generate();
    let cipher = prepared(Arc::new(store.clone()), &master).await;
    let created = service(&store, cipher)
        .create_integration(&owner(), github_pat("ghp_orphaned"))
        .await
        .unwrap();
    let lost = store.primary_data_key().await.unwrap().unwrap().id;
    sqlx::query("DELETE FROM data_keys")
        .execute(store.pool())
        .await
        .unwrap();

    let error = EnvelopeCipher::new(Arc::new(store.clone()), Arc::new(master))
        .prepare()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, KeyringError::MissingDataKeys(ids) if ids == &vec![lost.clone()]),
        "{error:?}"
    );
    assert!(error.to_string().contains(&lost), "{error}");
    // No new key was created over the lost one.
    assert!(store.list_data_keys().await.unwrap().is_empty());
    assert!(store.find_integration(created.id).await.unwrap().is_some());
}
