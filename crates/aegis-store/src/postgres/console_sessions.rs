//! [`ConsoleSessions`] on PostgreSQL: the shared SQL run on the writer and the pool.

use super::prepared;
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
        crate::rows::operator_key_if_hash_matches(&row, &id_hash)
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
