//! Console sign-ins: the server side of a browser session. The browser holds a random
//! session id in a cookie; the store keeps only its SHA-256, the operator key it was opened
//! with, and its expiry. A session is worth exactly what its key is: the key's role and
//! revocation are read through the session on every request, never copied into it.
//!
//! The rules (which rows a lookup accepts, what housekeeping an opening does) are the SQL
//! below, written once and run by any [`Backend`].

use crate::backend::Backend;
use crate::tx::{ReadRows, SqlValue, WriteTx};
use crate::{OperatorKey, SecretHash, StoreResult, TenantId};
use async_trait::async_trait;

/// A session to open: the hash of its id, and who opened it until when.
#[derive(Debug, Clone)]
pub struct NewConsoleSession {
    pub id_hash: SecretHash,
    pub tenant_id: TenantId,
    pub key_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Where console sessions live: the same database as everything else, so a session
/// survives a restart and is valid on every replica.
#[async_trait]
pub trait ConsoleSessions: Send + Sync {
    /// Records a new session (and drops sessions that expired before it was opened).
    async fn open_console_session(&self, session: NewConsoleSession) -> StoreResult<()>;
    /// The operator key behind an unexpired session, revoked or not (the caller decides
    /// what a revoked key may do: nothing).
    async fn console_session_key(
        &self,
        id_hash: SecretHash,
        now_ms: i64,
    ) -> StoreResult<Option<OperatorKey>>;
    /// Ends a session (sign-out); ending an unknown or ended session is not an error.
    async fn end_console_session(&self, id_hash: SecretHash) -> StoreResult<()>;
}

#[async_trait]
impl<B: Backend> ConsoleSessions for B {
    async fn open_console_session(&self, session: NewConsoleSession) -> StoreResult<()> {
        self.run_rule(move |tx| {
            Box::pin(async move {
                tx.execute(DROP_EXPIRED, &[SqlValue::int(session.created_at_ms)])
                    .await?;
                let row = [
                    SqlValue::Bytes(&session.id_hash),
                    SqlValue::text(session.tenant_id.as_str()),
                    SqlValue::text(&session.key_id),
                    SqlValue::int(session.created_at_ms),
                    SqlValue::int(session.expires_at_ms),
                ];
                tx.execute(INSERT, &row).await?;
                Ok(())
            })
        })
        .await
    }

    async fn console_session_key(
        &self,
        id_hash: SecretHash,
        now_ms: i64,
    ) -> StoreResult<Option<OperatorKey>> {
        self.run_read(move |rows| {
            Box::pin(async move {
                let key = [SqlValue::Bytes(&id_hash), SqlValue::int(now_ms)];
                let found = rows
                    .query_opt(KEY_OF_SESSION, &key, |row| {
                        crate::rows::operator_key_if_hash_matches(row, &id_hash)
                    })
                    .await?;
                Ok(found.flatten())
            })
        })
        .await
    }

    async fn end_console_session(&self, id_hash: SecretHash) -> StoreResult<()> {
        self.run_rule(move |tx| {
            Box::pin(async move {
                tx.execute(END, &[SqlValue::Bytes(&id_hash)]).await?;
                Ok(())
            })
        })
        .await
    }
}

/// Housekeeping done with every opening: `$1` is the new session's creation time.
pub(crate) const DROP_EXPIRED: &str = "DELETE FROM console_sessions WHERE expires_at <= $1";

/// `$1` id hash, `$2` tenant, `$3` key id, `$4` created at, `$5` expires at.
pub(crate) const INSERT: &str = "INSERT INTO console_sessions (id_hash, tenant_id, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";

/// The key of session `$1` if the session expires after `$2`, in the column order of the
/// backends' operator-key row readers, then the stored hash (compared in constant time).
pub(crate) const KEY_OF_SESSION: &str =
    "SELECT k.id, k.tenant_id, k.name, k.role, k.created_at, k.revoked_at, s.id_hash
     FROM console_sessions s JOIN operator_keys k ON k.id = s.key_id AND k.tenant_id = s.tenant_id
     WHERE s.id_hash = $1 AND s.expires_at > $2";

/// `$1` id hash.
pub(crate) const END: &str = "DELETE FROM console_sessions WHERE id_hash = $1";
