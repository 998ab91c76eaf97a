//! The data directory and the key files in it: the master key that seals credentials and the
//! HS256 key that signs bearer tokens.
//!
//! Several processes may share one data directory. A key file is written to a temporary file and
//! then hard-linked to its final name, which fails when the name exists. Two processes that start
//! at once therefore both use the key of whichever linked first, and no process reads a
//! half-written file.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use integrations_core::MasterKey;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// File name of the generated master key in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// File name of the generated token signing key in the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Error while preparing the data directory or loading a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// Description of the failed step, such as `failed to read key file`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system error.
        source: io::Error,
    },
    /// A key is not in the expected format. The message never contains key material.
    #[error("{0}")]
    Malformed(String),
}

/// Source of the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `INTEGRATIONS_MASTER_KEY` environment variable.
    Environment,
    /// A key file that existed.
    File(PathBuf),
    /// A key file that this process created.
    Created(PathBuf),
}

/// Creates the data directory with mode 0700 when it does not exist.
pub fn prepare_data_dir(path: &Path) -> Result<(), KeyError> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| KeyError::Io {
            action: "failed to create data directory",
            path: path.to_owned(),
            source,
        })
}

/// Loads the master key from `INTEGRATIONS_MASTER_KEY`, else from the given key file, else from
/// `master.key` in the data directory, which is created on first start.
pub fn load_master_key(
    from_env: Option<&SecretString>,
    key_file: Option<&Path>,
    data_dir: &Path,
) -> Result<(MasterKey, KeySource), KeyError> {
    if let Some(text) = from_env {
        let key = parse_master_key_env("INTEGRATIONS_MASTER_KEY", text)?;
        return Ok((key, KeySource::Environment));
    }

    if let Some(path) = key_file {
        let key = read_master_key(path)?;
        return Ok((key, KeySource::File(path.to_owned())));
    }

    let path = data_dir.join(MASTER_KEY_FILE);
    let generated = MasterKey::generate();
    let (text, created) = read_or_create_key_file(&path, generated.to_hex().as_bytes())?;
    if !created {
        require_owner_only(&path)?;
    }
    let key = parse_master_key(&text, &path)?;
    let source = if created {
        KeySource::Created(path)
    } else {
        KeySource::File(path)
    };
    Ok((key, source))
}

/// Loads an existing master key, as [`load_master_key`] does, but never creates a key file:
/// for commands that must use the key the data was sealed with.
pub fn load_existing_master_key(
    from_env: Option<&SecretString>,
    key_file: Option<&Path>,
    data_dir: &Path,
) -> Result<(MasterKey, KeySource), KeyError> {
    if from_env.is_some() || key_file.is_some() {
        return load_master_key(from_env, key_file, data_dir);
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    let key = read_master_key(&path)?;
    Ok((key, KeySource::File(path)))
}

/// Parses a master key given in an environment variable named `variable`.
pub fn parse_master_key_env(variable: &str, text: &SecretString) -> Result<MasterKey, KeyError> {
    MasterKey::from_text(text.expose_secret()).map_err(|_| {
        KeyError::Malformed(format!(
            "{variable} is invalid: it must be 32 bytes written as base64 (44 characters, such as the output of `openssl rand -base64 32`) or as 64 hexadecimal digits"
        ))
    })
}

/// Reads a master key file, refusing one that group or others can read.
pub fn read_master_key(path: &Path) -> Result<MasterKey, KeyError> {
    require_owner_only(path)?;
    let text = read_key_file(path)?;
    parse_master_key(&text, path)
}

/// Refuses a key file that anyone but its owner can read, write or execute.
fn require_owner_only(path: &Path) -> Result<(), KeyError> {
    let metadata = fs::metadata(path).map_err(|source| KeyError::Io {
        action: "failed to read key file",
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Malformed(format!(
            "master key file {} has mode {mode:o}, so other users can read it; restrict it with chmod 600",
            path.display()
        )));
    }
    Ok(())
}

fn parse_master_key(text: &str, path: &Path) -> Result<MasterKey, KeyError> {
    MasterKey::from_text(text).map_err(|_| {
        KeyError::Malformed(format!(
            "master key file {} is malformed: it must hold 32 bytes written as base64 or as 64 hexadecimal digits",
            path.display()
        ))
    })
}

/// Loads `signing.key` from the data directory, creating it on first use. The HS256 secret is
/// the file's text (64 hexadecimal digits, 256 random bits) without surrounding whitespace.
pub fn load_signing_key(data_dir: &Path) -> Result<(SecretString, bool), KeyError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let mut random = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(random.as_mut());
    let generated = Zeroizing::new(hex::encode(random.as_ref()));
    let (text, created) = read_or_create_key_file(&path, generated.as_bytes())?;
    if !created {
        warn_if_readable_by_others(&path);
    }
    let secret = text.trim();
    if secret.len() < 32 {
        return Err(KeyError::Malformed(format!(
            "{} is invalid: it must hold at least 32 characters; delete it to create a new one (tokens signed with it stop working)",
            path.display()
        )));
    }
    Ok((SecretString::from(secret), created))
}

/// Reads the key file at `path`, or creates it with `content` when it does not exist. Returns the
/// text and whether this call created the file.
fn read_or_create_key_file(
    path: &Path,
    content: &[u8],
) -> Result<(Zeroizing<String>, bool), KeyError> {
    match read_key_file(path) {
        Ok(text) => return Ok((text, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }

    match create_key_file(path, content) {
        Ok(()) => Ok((
            Zeroizing::new(String::from_utf8_lossy(content).into_owned()),
            true,
        )),
        // Another process created the file first; use its key so both agree.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Ok((read_key_file(path)?, false))
        }
        Err(source) => Err(KeyError::Io {
            action: "failed to create key file",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Largest key file read, in bytes. Every key format fits in far less, and the bound keeps a
/// path such as `/dev/zero` from being read without end.
const MAX_KEY_FILE_BYTES: u64 = 4096;

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io_error = |source| KeyError::Io {
        action: "failed to read key file",
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io_error)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Malformed(format!(
            "key file {} is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold one key",
            path.display()
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        KeyError::Malformed(format!("key file {} is not valid UTF-8", path.display()))
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "key file is accessible to other users; restrict it with chmod 600"
            );
        }
    }
}

/// Writes `content` to a temporary file with mode 0600 and hard-links it to `path`, which fails
/// with `AlreadyExists` when `path` exists.
fn create_key_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let directory = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = directory.join(format!(
        ".{file_name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));

    let result = write_new_file(&temporary, content).and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    result?;

    // Persist the new directory entry; a failure here leaves a valid file behind, so it is
    // only logged.
    if let Err(error) = fs::File::open(directory).and_then(|dir| dir.sync_all()) {
        tracing::warn!(path = %directory.display(), error = %error, "failed to sync data directory");
    }
    Ok(())
}

fn write_new_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = load_master_key(None, None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::Created(_)));
        let (second, source) = load_master_key(None, None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::File(_)));
        assert_eq!(first.id(), second.id());
    }

    #[test]
    fn master_key_file_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        load_master_key(None, None, dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = dir.path().to_owned();
                std::thread::spawn(move || load_master_key(None, None, &path).unwrap().0)
            })
            .collect();
        let ids: Vec<String> = handles
            .into_iter()
            .map(|handle| handle.join().unwrap().id().to_owned())
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }

    fn write_key(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn malformed_master_key_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_key(&dir.path().join(MASTER_KEY_FILE), "not hex", 0o600);
        let error = load_master_key(None, None, dir.path()).unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
    }

    #[test]
    fn env_key_must_be_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["abc", "AAAA", &"ab".repeat(31)] {
            let error = load_master_key(Some(&SecretString::from(text)), None, dir.path())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("INTEGRATIONS_MASTER_KEY is invalid"),
                "{error}"
            );
            assert!(error.contains("base64"), "{error}");
            assert!(
                !error.contains(text),
                "the message repeats the key: {error}"
            );
        }
    }

    #[test]
    fn env_key_base64_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file_key, _) = load_master_key(None, None, dir.path()).unwrap();
        let text = SecretString::from("ERERERERERERERERERERERERERERERERERERERERERE=");
        let (key, source) = load_master_key(Some(&text), None, dir.path()).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert_eq!(key.id(), MasterKey::from_bytes([0x11; 32]).id());
        assert_ne!(key.id(), file_key.id());
    }

    #[test]
    fn key_file_readable_by_others_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("elsewhere.key");
        let text = "22".repeat(32);
        for mode in [0o644, 0o640, 0o604, 0o660] {
            write_key(&path, &text, mode);
            let error = load_master_key(None, Some(&path), dir.path())
                .unwrap_err()
                .to_string();
            assert!(error.contains("chmod 600"), "{mode:o}: {error}");
        }
        write_key(&path, &text, 0o400);
        let (key, source) = load_master_key(None, Some(&path), dir.path()).unwrap();
        assert_eq!(source, KeySource::File(path.clone()));
        assert_eq!(key.id(), MasterKey::from_bytes([0x22; 32]).id());
    }

    #[test]
    fn oversized_key_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.key");
        write_key(&path, &"a".repeat(5000), 0o600);
        let error = load_master_key(None, Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("larger than 4096 bytes"), "{error}");
    }

    #[test]
    fn existing_key_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_existing_master_key(None, None, dir.path()).unwrap_err();
        assert!(error.to_string().contains("master.key"), "{error}");
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn signing_key_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_signing_key(dir.path()).unwrap();
        assert!(created);
        let (second, created) = load_signing_key(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.expose_secret(), second.expose_secret());
    }

    #[test]
    fn data_dir_mode_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("data");
        prepare_data_dir(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
