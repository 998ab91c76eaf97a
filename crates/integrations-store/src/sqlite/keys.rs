//! Data keys and re-encryption on SQLite.

use integrations_core::store::{DataKeyState, SealedRow};
use integrations_core::{StoreError, StoredDataKey};
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use super::{clamp, is_retryable, SqliteStore};
use crate::codec;
use crate::error::{self, TxError};
use crate::{check_all_named, check_same_wrapping};

const DATA_KEY_COLUMNS: &str = "id, wrapped, wrapping_key_id, is_primary, state, created_at";

impl SqliteStore {
    pub(super) async fn list_data_keys_sql(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        let sql = format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(self.pool())
            .await
            .map_err(error::map_error)?;
        rows.iter().map(decode_data_key).collect()
    }

    pub(super) async fn find_data_key_sql(
        &self,
        condition: &str,
        value: Option<&str>,
    ) -> Result<Option<StoredDataKey>, StoreError> {
        let sql = format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE {condition}");
        let mut query = sqlx::query(&sql);
        if let Some(value) = value {
            query = query.bind(value);
        }
        let row = query
            .fetch_optional(self.pool())
            .await
            .map_err(error::map_error)?;
        row.as_ref().map(decode_data_key).transpose()
    }

    pub(super) async fn insert_data_key_sql(&self, key: &StoredDataKey) -> Result<(), StoreError> {
        error::retry("insert data key", is_retryable, || async {
            let mut transaction = self.begin_write().await?;
            let wrapping: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT wrapping_key_id FROM data_keys")
                    .fetch_all(&mut *transaction)
                    .await?;
            check_same_wrapping(key, &wrapping)?;
            if key.is_primary {
                sqlx::query("UPDATE data_keys SET is_primary = 0 WHERE is_primary = 1")
                    .execute(&mut *transaction)
                    .await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO data_keys (id, wrapped, wrapping_key_id, is_primary, state, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&key.id)
            .bind(key.wrapped.as_slice())
            .bind(&key.wrapping_key_id)
            .bind(key.is_primary)
            .bind(key.state.as_str())
            .bind(codec::time_to_text(key.created_at))
            .execute(&mut *transaction)
            .await;
            if let Err(error) = inserted {
                if error::database_kind(&error) == Some(ErrorKind::UniqueViolation) {
                    return Err(TxError::from(StoreError::Conflict(format!(
                        "data key {} or another unfinished rotation was added at the same time",
                        key.id
                    ))));
                }
                return Err(error.into());
            }
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn set_data_key_state_sql(
        &self,
        id: &str,
        state: DataKeyState,
    ) -> Result<bool, StoreError> {
        error::retry("set data key state", is_retryable, || async {
            let mut transaction = self.begin_write().await?;
            let changed = sqlx::query("UPDATE data_keys SET state = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
            transaction.commit().await?;
            Ok(changed > 0)
        })
        .await
    }

    pub(super) async fn rewrap_data_keys_sql(
        &self,
        keys: &[StoredDataKey],
    ) -> Result<(), StoreError> {
        error::retry("rewrap data keys", is_retryable, || async {
            let mut transaction = self.begin_write().await?;
            let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM data_keys")
                .fetch_all(&mut *transaction)
                .await?;
            check_all_named(keys, &stored)?;
            for key in keys {
                let changed = sqlx::query(
                    "UPDATE data_keys SET wrapped = ?, wrapping_key_id = ? WHERE id = ?",
                )
                .bind(key.wrapped.as_slice())
                .bind(&key.wrapping_key_id)
                .bind(&key.id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Err(TxError::from(StoreError::Conflict(format!(
                        "data key {} not found",
                        key.id
                    ))));
                }
            }
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn list_sealed_sql(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, provider, auth_type, sealed_credentials FROM integrations \
             WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
        )
        .bind(after.map(|id| id.to_string()))
        .bind(clamp(limit))
        .fetch_all(self.pool())
        .await
        .map_err(error::map_error)?;
        rows.iter().map(decode_sealed_row).collect()
    }

    pub(super) async fn replace_sealed_sql(
        &self,
        id: Uuid,
        expected: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        error::retry("replace sealed credentials", is_retryable, || async {
            let mut transaction = self.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE integrations SET sealed_credentials = ? \
                 WHERE id = ? AND sealed_credentials = ?",
            )
            .bind(sealed)
            .bind(id.to_string())
            .bind(expected)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            transaction.commit().await?;
            Ok(changed > 0)
        })
        .await
    }
}

fn decode_data_key(row: &SqliteRow) -> Result<StoredDataKey, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(StoredDataKey {
        id: text(0)?,
        wrapped: row.try_get(1).map_err(error::map_error)?,
        wrapping_key_id: text(2)?,
        is_primary: row.try_get(3).map_err(error::map_error)?,
        state: codec::parse_name("data_keys.state", &text(4)?)?,
        created_at: codec::time_from_text("data_keys.created_at", &text(5)?)?,
    })
}

fn decode_sealed_row(row: &SqliteRow) -> Result<SealedRow, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(SealedRow {
        id: codec::parse_uuid("integrations.id", &text(0)?)?,
        provider: codec::parse_name("integrations.provider", &text(1)?)?,
        auth_type: codec::parse_name("integrations.auth_type", &text(2)?)?,
        sealed_credentials: row.try_get(3).map_err(error::map_error)?,
    })
}
