//! AES-256-GCM sealing of credentials, bound to their integration by associated data.
//!
//! Sealed format:
//!
//! ```text
//! version (1 byte) | key id length (1 byte) | key id (ASCII) | nonce (12 bytes) | ciphertext and 16-byte tag
//! ```
//!
//! Version 1 names the master key that sealed the value directly; databases written before data
//! keys existed hold it. Version 2 names a data key (see [`crate::keyring`]), which the master
//! key wraps.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
pub(crate) use aes_gcm::Aes256Gcm;
use aes_gcm::{Key, Nonce};
use async_trait::async_trait;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Format version of values sealed directly with a master key.
pub(crate) const MASTER_KEY_FORMAT: u8 = 1;
/// Format version of values sealed with a data key.
pub(crate) const DATA_KEY_FORMAT: u8 = 2;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Error from sealing or opening credentials.
///
/// Opening failures are deliberately opaque: a wrong key, a tampered ciphertext and a ciphertext
/// moved onto another row all read the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// The ciphertext could not be authenticated or decoded.
    #[error("sealed credentials could not be opened")]
    Open,
    /// The ciphertext names a key that the keyring does not hold.
    #[error("sealed credentials name key id '{0}', which is not loaded")]
    UnknownKey(String),
    /// A data key could not be loaded or unwrapped, or no primary data key was found.
    /// The text names key ids, never key material.
    #[error("data key unavailable: {0}")]
    KeyUnavailable(String),
    /// Encryption failed.
    #[error("credentials could not be sealed")]
    Seal,
}

/// Seals and opens credential bytes.
///
/// `associated_data` must be the same at seal and open. It binds a ciphertext to its record, so a
/// ciphertext copied onto another row fails to open. The methods are async because a cipher may
/// have to load a data key from the database or ask a key provider to unwrap it.
#[async_trait]
pub trait CredentialCipher: Send + Sync + fmt::Debug {
    /// Encrypts `plaintext`, returning the sealed bytes.
    async fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CipherError>;

    /// Decrypts sealed bytes into a buffer that is wiped on drop.
    async fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError>;

    /// Checks that the cipher can seal now, for readiness probes. A cipher whose keys are all
    /// in memory is always ready.
    async fn check_ready(&self) -> Result<(), CipherError> {
        Ok(())
    }
}

/// A 256-bit master key. Wiped on drop; `Debug` prints only its id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl MasterKey {
    /// Wraps raw key bytes. The id is derived from the key so that it is stable across processes.
    pub fn from_bytes(mut bytes: [u8; MASTER_KEY_LEN]) -> Self {
        let key = Zeroizing::new(bytes);
        bytes.zeroize();
        let mut hasher = Sha256::new();
        hasher.update(b"integrations key id\0");
        hasher.update(key.as_slice());
        let digest = hasher.finalize();
        Self {
            id: hex::encode(&digest[..4]),
            bytes: key,
        }
    }

    /// Generates a random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Parses a key written as 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, InvalidMasterKey> {
        let text = text.trim();
        let mut bytes = [0u8; MASTER_KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| InvalidMasterKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses a key written as base64 of 32 bytes (standard or URL-safe alphabet, padding
    /// optional) or as 64 hexadecimal digits. Surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Self, InvalidMasterKey> {
        let text = text.trim();
        if text.len() == 2 * MASTER_KEY_LEN {
            return Self::from_hex(text);
        }
        let unpadded = text.trim_end_matches('=');
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
                .map_err(|_| InvalidMasterKey)?,
        );
        let bytes: [u8; MASTER_KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| InvalidMasterKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Returns the raw key bytes, for wrapping data keys.
    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }

    /// Returns the key as 64 hexadecimal digits, for writing a new key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_slice()))
    }

    /// Returns the key id: eight hexadecimal digits derived from the key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Error for master key text that is neither base64 of 32 bytes nor 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "master key must be 32 bytes written as base64 (44 characters) or as 64 hexadecimal digits"
)]
pub struct InvalidMasterKey;

/// AES-256-GCM cipher that seals directly with master keys (format version 1): seals with the
/// current key, opens with any loaded key.
///
/// Embedding programs and tests use it where a database of data keys is not wanted. The server
/// uses [`crate::keyring::EnvelopeCipher`], which also opens what this cipher sealed.
#[derive(Clone)]
pub struct Aes256GcmCipher {
    current: String,
    keys: Arc<BTreeMap<String, Aes256Gcm>>,
}

impl Aes256GcmCipher {
    /// Creates a cipher that seals and opens with one key.
    pub fn new(key: &MasterKey) -> Self {
        Self::with_retired_keys(key, &[])
    }

    /// Creates a cipher that seals with `current` and can still open values sealed by `retired`.
    pub fn with_retired_keys(current: &MasterKey, retired: &[MasterKey]) -> Self {
        let mut keys = BTreeMap::new();
        for key in retired.iter().chain(std::iter::once(current)) {
            keys.insert(key.id.clone(), aead_for(key.bytes.as_slice()));
        }
        Self {
            current: current.id.clone(),
            keys: Arc::new(keys),
        }
    }

    /// Returns the id of the key used for sealing.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `plaintext` with the current key, without the async trait.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CipherError> {
        let cipher = self.keys.get(&self.current).ok_or(CipherError::Seal)?;
        seal_with(
            cipher,
            MASTER_KEY_FORMAT,
            &self.current,
            plaintext,
            associated_data,
        )
    }

    /// Opens a value sealed by one of the loaded keys, without the async trait.
    pub fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let parsed = SealedValue::parse(sealed)?;
        if parsed.version != MASTER_KEY_FORMAT {
            return Err(CipherError::Open);
        }
        let cipher = self
            .keys
            .get(parsed.key_id)
            .ok_or_else(|| CipherError::UnknownKey(parsed.key_id.to_owned()))?;
        parsed.open_with(cipher, associated_data)
    }
}

impl fmt::Debug for Aes256GcmCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aes256GcmCipher")
            .field("current_key_id", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl CredentialCipher for Aes256GcmCipher {
    async fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CipherError> {
        Aes256GcmCipher::seal(self, plaintext, associated_data)
    }

    async fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        Aes256GcmCipher::open(self, sealed, associated_data)
    }
}

/// Builds an AES-256-GCM instance from 32 key bytes.
pub(crate) fn aead_for(key: &[u8]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// Encrypts with a fresh random nonce and writes the sealed format.
pub(crate) fn seal_with(
    cipher: &Aes256Gcm,
    version: u8,
    key_id: &str,
    plaintext: &[u8],
    associated_data: &[u8],
) -> Result<Vec<u8>, CipherError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad: associated_data,
    };
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), payload)
        .map_err(|_| CipherError::Seal)?;

    let key_id = key_id.as_bytes();
    let mut sealed = Vec::with_capacity(2 + key_id.len() + NONCE_LEN + ciphertext.len());
    sealed.push(version);
    sealed.push(u8::try_from(key_id.len()).map_err(|_| CipherError::Seal)?);
    sealed.extend_from_slice(key_id);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// The parts of a sealed value. Parsing checks only the framing; authenticity is checked when it
/// is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealedValue<'a> {
    pub(crate) version: u8,
    pub(crate) key_id: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> SealedValue<'a> {
    pub(crate) fn parse(sealed: &'a [u8]) -> Result<Self, CipherError> {
        let (&version, rest) = sealed.split_first().ok_or(CipherError::Open)?;
        if version != MASTER_KEY_FORMAT && version != DATA_KEY_FORMAT {
            return Err(CipherError::Open);
        }
        let (&id_len, rest) = rest.split_first().ok_or(CipherError::Open)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(CipherError::Open);
        }
        let (key_id, rest) = rest.split_at(id_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key_id = std::str::from_utf8(key_id).map_err(|_| CipherError::Open)?;
        Ok(Self {
            version,
            key_id,
            nonce,
            ciphertext,
        })
    }

    pub(crate) fn open_with(
        &self,
        cipher: &Aes256Gcm,
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let payload = Payload {
            msg: self.ciphertext,
            aad: associated_data,
        };
        cipher
            .decrypt(Nonce::from_slice(self.nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| CipherError::Open)
    }
}

/// Returns the format version and key id a sealed value names, without opening it.
pub fn sealed_key_id(sealed: &[u8]) -> Result<(u8, &str), CipherError> {
    let parsed = SealedValue::parse(sealed)?;
    Ok((parsed.version, parsed.key_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let cipher = Aes256GcmCipher::new(&MasterKey::generate());
        let sealed = cipher.seal(b"plaintext", b"row-1").unwrap();
        assert_eq!(
            cipher.open(&sealed, b"row-1").unwrap().as_slice(),
            b"plaintext"
        );
    }

    #[test]
    fn wrong_associated_data_fails() {
        let cipher = Aes256GcmCipher::new(&MasterKey::generate());
        let sealed = cipher.seal(b"plaintext", b"row-1").unwrap();
        assert_eq!(cipher.open(&sealed, b"row-2"), Err(CipherError::Open));
    }

    #[test]
    fn nonce_differs_per_seal() {
        let cipher = Aes256GcmCipher::new(&MasterKey::generate());
        let first = cipher.seal(b"plaintext", b"ad").unwrap();
        let second = cipher.seal(b"plaintext", b"ad").unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let cipher = Aes256GcmCipher::new(&MasterKey::generate());
        let mut sealed = cipher.seal(b"plaintext", b"ad").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(cipher.open(&sealed, b"ad"), Err(CipherError::Open));
        assert_eq!(cipher.open(&sealed[..5], b"ad"), Err(CipherError::Open));
    }

    #[test]
    fn other_key_cannot_open() {
        let sealed = Aes256GcmCipher::new(&MasterKey::generate())
            .seal(b"plaintext", b"ad")
            .unwrap();
        let other = Aes256GcmCipher::new(&MasterKey::generate());
        assert!(matches!(
            other.open(&sealed, b"ad"),
            Err(CipherError::UnknownKey(_))
        ));
    }

    #[test]
    fn retired_key_still_opens() {
        let old = MasterKey::generate();
        let sealed = Aes256GcmCipher::new(&old)
            .seal(b"plaintext", b"ad")
            .unwrap();
        let rotated = Aes256GcmCipher::with_retired_keys(&MasterKey::generate(), &[old]);
        assert_eq!(
            rotated.open(&sealed, b"ad").unwrap().as_slice(),
            b"plaintext"
        );
    }

    #[test]
    fn master_key_base64_accepted() {
        let key = MasterKey::from_bytes([7u8; MASTER_KEY_LEN]);
        let standard = base64::engine::general_purpose::STANDARD.encode([7u8; MASTER_KEY_LEN]);
        assert_eq!(MasterKey::from_text(&standard).unwrap().id(), key.id());
        assert_eq!(
            MasterKey::from_text(standard.trim_end_matches('='))
                .unwrap()
                .id(),
            key.id()
        );
        assert_eq!(
            MasterKey::from_text(&"07".repeat(32)).unwrap().id(),
            key.id()
        );
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        assert_eq!(MasterKey::from_text(&short).unwrap_err(), InvalidMasterKey);
        assert_eq!(
            MasterKey::from_text("not a key!").unwrap_err(),
            InvalidMasterKey
        );
    }

    #[test]
    fn master_key_hex_round_trip() {
        let key = MasterKey::generate();
        let parsed = MasterKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(parsed.id(), key.id());
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(!format!("{key:?}").contains(key.to_hex().as_str()));
    }
}
