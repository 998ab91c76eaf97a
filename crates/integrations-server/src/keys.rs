//! The data directory and the key files in it: the master key that seals credentials and the
//! HS256 key that signs bearer tokens.
//!
//! Several processes may share one data directory. A key file is written to a temporary file and
//! then hard-linked to its final name, which fails when the name exists. Two processes that start
//! at once therefore both use the key of whichever linked first, and no process reads a
//! half-written file.

use std::fs;
use std::io::{self, Write};
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
        let key = MasterKey::from_hex(text.expose_secret()).map_err(|_| {
            KeyError::Malformed(
                "INTEGRATIONS_MASTER_KEY is invalid: it must be 64 hexadecimal digits (32 bytes)"
                    .into(),
            )
        })?;
        return Ok((key, KeySource::Environment));
    }

    if let Some(path) = key_file {
        let key = read_master_key(path)?;
        return Ok((key, KeySource::File(path.to_owned())));
    }

    let path = data_dir.join(MASTER_KEY_FILE);
    let generated = MasterKey::generate();
    let (text, created) = read_or_create_key_file(&path, generated.to_hex().as_bytes())?;
    let key = parse_master_key(&text, &path)?;
    let source = if created {
        KeySource::Created(path)
    } else {
        KeySource::File(path)
    };
    Ok((key, source))
}

/// Parses retired master keys, comma-separated, each 64 hexadecimal digits.
pub fn parse_retired_keys(text: Option<&SecretString>) -> Result<Vec<MasterKey>, KeyError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    text.expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            MasterKey::from_hex(entry).map_err(|_| {
                KeyError::Malformed(format!(
                    "INTEGRATIONS_RETIRED_MASTER_KEYS entry {} is invalid: each key must be 64 hexadecimal digits",
                    index + 1
                ))
            })
        })
        .collect()
}

/// Loads `signing.key` from the data directory, creating it on first use. The HS256 secret is
/// the file's text (64 hexadecimal digits, 256 random bits) without surrounding whitespace.
pub fn load_signing_key(data_dir: &Path) -> Result<(SecretString, bool), KeyError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let mut random = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(random.as_mut());
    let generated = Zeroizing::new(hex::encode(random.as_ref()));
    let (text, created) = read_or_create_key_file(&path, generated.as_bytes())?;
    let secret = text.trim();
    if secret.len() < 32 {
        return Err(KeyError::Malformed(format!(
            "{} is invalid: it must hold at least 32 characters; delete it to create a new one (tokens signed with it stop working)",
            path.display()
        )));
    }
    Ok((SecretString::from(secret), created))
}

fn read_master_key(path: &Path) -> Result<MasterKey, KeyError> {
    let text = read_key_file(path)?;
    parse_master_key(&text, path)
}

fn parse_master_key(text: &str, path: &Path) -> Result<MasterKey, KeyError> {
    MasterKey::from_hex(text).map_err(|_| {
        KeyError::Malformed(format!(
            "master key file {} is malformed: it must hold 64 hexadecimal digits (32 bytes)",
            path.display()
        ))
    })
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

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| KeyError::Io {
        action: "failed to read key file",
        path: path.to_owned(),
        source,
    })?);
    warn_if_readable_by_others(path);
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

    #[test]
    fn malformed_master_key_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MASTER_KEY_FILE), "not hex").unwrap();
        let error = load_master_key(None, None, dir.path()).unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
    }

    #[test]
    fn env_key_must_be_hex() {
        let dir = tempfile::tempdir().unwrap();
        let text = SecretString::from("abc");
        let error = load_master_key(Some(&text), None, dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("64 hexadecimal digits"),
            "{error}"
        );
    }

    #[test]
    fn retired_keys_parsed() {
        let text = SecretString::from(format!("{},{}", "11".repeat(32), "22".repeat(32)));
        assert_eq!(parse_retired_keys(Some(&text)).unwrap().len(), 2);
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
