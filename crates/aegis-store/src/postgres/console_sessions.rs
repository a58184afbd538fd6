//! [`ConsoleSessions`] on PostgreSQL: the shared SQL run on the writer and the pool.

use super::prepared;
use super::rows::{constant_time_eq, get};
use crate::console_sessions::{DROP_EXPIRED, END, INSERT, KEY_OF_SESSION};
use crate::*;
use async_trait::async_trait;

#[async_trait]
impl ConsoleSessions for super::PgStore {
    async fn open_console_session(&self, session: NewConsoleSession) -> StoreResult<()> {
        self.writer()?
            .write(move |tx, _| {
                Box::pin(async move {
                    tx.execute(
                        &prepared(tx, DROP_EXPIRED).await?,
                        &[&session.created_at_ms],
                    )
                    .await?;
                    tx.execute(
                        &prepared(tx, INSERT).await?,
                        &[
                            &&session.id_hash[..],
                            &session.tenant_id.as_str(),
                            &session.key_id,
                            &session.created_at_ms,
                            &session.expires_at_ms,
                        ],
                    )
                    .await?;
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
        let Some(row) = self
            .query_opt(KEY_OF_SESSION, &[&&id_hash[..], &now_ms])
            .await?
        else {
            return Ok(None);
        };
        let stored: Vec<u8> = get(&row, 6)?;
        // The index lookup found the row; confirm in constant time before trusting it.
        if !constant_time_eq(&stored, &id_hash) {
            return Ok(None);
        }
        crate::rows::operator_key(&row).map(Some)
    }

    async fn end_console_session(&self, id_hash: SecretHash) -> StoreResult<()> {
        self.writer()?
            .write(move |tx, _| {
                Box::pin(async move {
                    tx.execute(&prepared(tx, END).await?, &[&&id_hash[..]])
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}
