//! [`ConsoleSessions`] on SQLite: the shared SQL run on the writer and the read pool.

use super::rows::read_opt;
use crate::console_sessions::{DROP_EXPIRED, END, INSERT, KEY_OF_SESSION};
use crate::*;
use async_trait::async_trait;
use rusqlite::params;

#[async_trait]
impl ConsoleSessions for super::SqliteStore {
    async fn open_console_session(&self, session: NewConsoleSession) -> StoreResult<()> {
        self.writer()?
            .write(move |conn, _| {
                conn.execute(DROP_EXPIRED, [session.created_at_ms])?;
                conn.execute(
                    INSERT,
                    params![
                        &session.id_hash[..],
                        session.tenant_id.as_str(),
                        session.key_id,
                        session.created_at_ms,
                        session.expires_at_ms
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn console_session_key(
        &self,
        id_hash: SecretHash,
        now_ms: i64,
    ) -> StoreResult<Option<OperatorKey>> {
        self.read(move |conn| {
            let found = read_opt(conn, KEY_OF_SESSION, params![&id_hash[..], now_ms], |row| {
                crate::rows::operator_key_if_hash_matches(row, &id_hash)
            })?;
            Ok(found.flatten())
        })
        .await
    }

    async fn end_console_session(&self, id_hash: SecretHash) -> StoreResult<()> {
        self.writer()?
            .write(move |conn, _| {
                conn.execute(END, [&id_hash[..]])?;
                Ok(())
            })
            .await
    }
}
