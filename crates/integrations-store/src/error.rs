//! Mapping of sqlx errors to [`StoreError`] and the bounded retry of write transactions.

use std::future::Future;
use std::time::Duration;

use integrations_core::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};

/// Attempts a write transaction makes before a retryable failure becomes a conflict.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// Failure inside a transaction: a database error that may be retried, or a final store error.
#[derive(Debug)]
pub(crate) enum TxError {
    /// A database error, classified by the backend after the transaction rolled back.
    Sql(sqlx::Error),
    /// A store error that no retry can change, such as a missing project.
    Store(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(error: sqlx::Error) -> Self {
        TxError::Sql(error)
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        TxError::Store(error)
    }
}

/// Runs `attempt` until it succeeds, fails for good, or fails retryably [`MAX_ATTEMPTS`] times.
///
/// Each attempt must open and finish its own transaction, so a failed attempt has rolled back
/// before the next one starts. A retryable failure left after the last attempt becomes
/// [`StoreError::Conflict`].
pub(crate) async fn retry<T, F, Fut>(
    operation: &'static str,
    is_retryable: fn(&sqlx::Error) -> bool,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Store(error)) => return Err(error),
            Err(TxError::Sql(error)) => error,
        };
        if !is_retryable(&error) {
            return Err(map_error(error));
        }
        if attempts >= MAX_ATTEMPTS {
            tracing::warn!(
                operation,
                attempts,
                "write transaction kept conflicting, giving up"
            );
            return Err(StoreError::Conflict(format!(
                "{operation} failed after {attempts} attempts: {}",
                describe(&error)
            )));
        }
        tracing::debug!(
            operation,
            attempts,
            "write transaction conflicted, retrying"
        );
        tokio::time::sleep(backoff(attempts)).await;
    }
}

/// Delay before the next attempt: grows with each attempt and varies a little so that
/// transactions that collided do not collide again in lockstep.
fn backoff(attempts: u32) -> Duration {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 10);
    Duration::from_millis(10 * u64::from(attempts) + jitter)
}

/// Maps a sqlx error to a store error whose text names no bound value.
pub(crate) fn map_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if is_unavailable_code(database.as_ref()) => {
            StoreError::Unavailable(describe(&error))
        }
        sqlx::Error::Database(_) => StoreError::Database(describe(&error)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => StoreError::Unavailable(describe(&error)),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(describe(&error)),
        _ => StoreError::Database(describe(&error)),
    }
}

/// Describes an error without bound values.
///
/// A PostgreSQL error's `detail` can quote row values, so only its primary message, code and
/// constraint name are kept. SQLite messages name tables, columns and constraints only.
pub(crate) fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            match database.constraint() {
                Some(constraint) => format!(
                    "{} (code {code}, constraint {constraint})",
                    database.message()
                ),
                None => format!("{} (code {code})", database.message()),
            }
        }
        // The configuration error of a URL that failed to parse may quote the URL, password
        // included.
        sqlx::Error::Configuration(_) => "invalid database URL or connection options".to_owned(),
        other => other.to_string(),
    }
}

/// Reports whether a database error means the server cannot serve this connection at all.
fn is_unavailable_code(error: &dyn DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    // PostgreSQL SQLSTATE classes: connection exception (08), insufficient resources (53),
    // operator intervention such as a shutdown (57P), invalid authorization (28), and a
    // missing database (3D000). Also a database that does not accept connections (55000), and a
    // statement cancelled by `statement_timeout` (57014) or `lock_timeout` (55P03), which the
    // store sets so that a locked table cannot hold a request for long. SQLSTATEs have five
    // characters, but SQLite codes have at most four digits, so none of them matches.
    if code.len() != 5 {
        return false;
    }
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("28")
        || matches!(code.as_ref(), "3D000" | "55000" | "55P03" | "57014")
}

/// Maps an error met while connecting or migrating: every failure there is
/// [`StoreError::Unavailable`], because the store never came up.
pub(crate) fn map_connect_error(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

/// Returns the kind of a database error, `None` for any other error.
pub(crate) fn database_kind(error: &sqlx::Error) -> Option<ErrorKind> {
    match error {
        sqlx::Error::Database(database) => Some(database.kind()),
        _ => None,
    }
}

/// Returns the code of a database error, empty for any other error.
pub(crate) fn database_code(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => database.code().unwrap_or_default().into_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn always_retryable(_: &sqlx::Error) -> bool {
        true
    }

    fn never_retryable(_: &sqlx::Error) -> bool {
        false
    }

    #[tokio::test]
    async fn retry_gives_up_with_conflict() {
        let attempts = AtomicU32::new(0);

        let result: Result<(), StoreError> = retry("test", always_retryable, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(TxError::Sql(sqlx::Error::PoolTimedOut))
        })
        .await;

        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn retry_stops_on_final_error() {
        let attempts = AtomicU32::new(0);

        let result: Result<(), StoreError> = retry("test", never_retryable, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(TxError::Sql(sqlx::Error::PoolTimedOut))
        })
        .await;

        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_returns_later_success() {
        let attempts = AtomicU32::new(0);

        let result = retry("test", always_retryable, || async {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt < 3 {
                return Err(TxError::Sql(sqlx::Error::PoolTimedOut));
            }
            Ok(attempt)
        })
        .await;

        assert_eq!(result.ok(), Some(3));
    }

    #[test]
    fn describe_hides_configuration() {
        let source = "invalid URL postgres://app:s3cret@host".into();
        let text = describe(&sqlx::Error::Configuration(source));
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn map_error_pool_timeout_unavailable() {
        let error = map_error(sqlx::Error::PoolTimedOut);
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }
}
