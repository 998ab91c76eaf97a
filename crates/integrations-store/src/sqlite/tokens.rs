//! Application tokens in SQLite.

use chrono::{DateTime, Utc};
use integrations_core::tokens::{
    ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash,
};
use integrations_core::{AuditEvent, StoreError};
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use super::{insert_audit, SqliteStore};
use crate::codec;
use crate::error::{self, TxError};

/// Token columns in the order [`decode_token`] reads them.
const TOKEN_COLUMNS: &str = "id, name, token_hash, created_by, created_at, expires_at, revoked_at";

impl SqliteStore {
    pub(super) async fn insert_application_token_once(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), TxError> {
        let token = &record.token;
        let mut transaction = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO application_tokens (id, name, token_hash, created_by, created_at, \
             expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(&token.name)
        .bind(record.token_hash.as_slice())
        .bind(&token.created_by)
        .bind(codec::time_to_text(token.created_at))
        .bind(codec::time_to_text(token.expires_at))
        .bind(token.revoked_at.map(codec::time_to_text))
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if error::database_kind(&error) == Some(ErrorKind::UniqueViolation) {
                return Err(duplicate_token(token.id).into());
            }
            return Err(error.into());
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub(super) async fn list_application_tokens_once(
        &self,
    ) -> Result<Vec<ApplicationToken>, TxError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM application_tokens ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let tokens = rows
            .iter()
            .map(|row| decode_token(row).map(|record| record.token))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(tokens)
    }

    pub(super) async fn find_application_token_by_hash_once(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApplicationTokenRecord>, TxError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM application_tokens WHERE token_hash = ?");
        let row = sqlx::query(&sql)
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(decode_token).transpose()?)
    }

    pub(super) async fn revoke_application_token_once(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<RevokeResult, TxError> {
        let mut transaction = self.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE application_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(codec::time_to_text(at))
        .bind(id.to_string())
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if revoked == 0 {
            let exists = sqlx::query("SELECT 1 FROM application_tokens WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *transaction)
                .await?
                .is_some();
            return Ok(if exists {
                RevokeResult::AlreadyRevoked
            } else {
                RevokeResult::NotFound
            });
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(RevokeResult::Revoked)
    }
}

/// Builds the error for a token whose id or hash is taken, leaving the hash out of the message.
fn duplicate_token(id: Uuid) -> StoreError {
    StoreError::Conflict(format!("application token {id} or its hash already exists"))
}

fn decode_token(row: &SqliteRow) -> Result<ApplicationTokenRecord, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    let hash: Vec<u8> = row.try_get(2).map_err(error::map_error)?;
    let revoked_at: Option<String> = row.try_get(6).map_err(error::map_error)?;
    let token = ApplicationToken {
        id: codec::parse_uuid("application_tokens.id", &text(0)?)?,
        name: text(1)?,
        created_by: text(3)?,
        created_at: codec::time_from_text("application_tokens.created_at", &text(4)?)?,
        expires_at: codec::time_from_text("application_tokens.expires_at", &text(5)?)?,
        revoked_at: revoked_at
            .map(|at| codec::time_from_text("application_tokens.revoked_at", &at))
            .transpose()?,
    };
    Ok(ApplicationTokenRecord {
        token,
        token_hash: codec::token_hash("application_tokens.token_hash", hash)?,
    })
}
