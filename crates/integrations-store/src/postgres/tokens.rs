//! Application tokens in PostgreSQL.

use chrono::{DateTime, Utc};
use integrations_core::tokens::{
    ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash,
};
use integrations_core::{AuditEvent, StoreError};
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::{insert_audit, PostgresStore};
use crate::codec;
use crate::error::{self, TxError};

/// Token columns in the order [`decode_token`] reads them.
const TOKEN_COLUMNS: &str = "id, name, token_hash, created_by, created_at, expires_at, revoked_at";

impl PostgresStore {
    pub(super) async fn insert_application_token_once(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), TxError> {
        let token = &record.token;
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO application_tokens (id, name, token_hash, created_by, created_at, \
             expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token.id)
        .bind(&token.name)
        .bind(record.token_hash.as_slice())
        .bind(&token.created_by)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.revoked_at)
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if error::database_kind(&error) == Some(ErrorKind::UniqueViolation) {
                return Err(StoreError::Conflict(format!(
                    "application token {} or its hash already exists",
                    token.id
                ))
                .into());
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
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM application_tokens WHERE token_hash = $1");
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
        let mut transaction = self.pool.begin().await?;
        // The update locks the row, so of two concurrent revocations only one finds it unrevoked
        // and writes the audit event.
        let revoked = sqlx::query(
            "UPDATE application_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if revoked == 0 {
            let exists = sqlx::query("SELECT 1 FROM application_tokens WHERE id = $1")
                .bind(id)
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

fn decode_token(row: &PgRow) -> Result<ApplicationTokenRecord, StoreError> {
    let hash: Vec<u8> = row.try_get(2).map_err(error::map_error)?;
    let token = ApplicationToken {
        id: row.try_get(0).map_err(error::map_error)?,
        name: row.try_get(1).map_err(error::map_error)?,
        created_by: row.try_get(3).map_err(error::map_error)?,
        created_at: row.try_get(4).map_err(error::map_error)?,
        expires_at: row.try_get(5).map_err(error::map_error)?,
        revoked_at: row.try_get(6).map_err(error::map_error)?,
    };
    Ok(ApplicationTokenRecord {
        token,
        token_hash: codec::token_hash("application_tokens.token_hash", hash)?,
    })
}
