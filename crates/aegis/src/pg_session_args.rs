//! Bounds of the PostgreSQL sessions that take the cluster's write lock (the writer's and
//! the leader's), so that one paused or partitioned replica stalls the others' writes for at
//! most these bounds (`aegis_store::postgres::SessionBounds`, `docs/replicas.md`).

use aegis_store::postgres::SessionBounds;
use clap::Args;
use std::time::Duration;

/// Parses a bound in milliseconds: at least 1 (0 would switch the server's timeout off).
fn bound_ms() -> clap::builder::RangedU64ValueParser {
    clap::builder::RangedU64ValueParser::new().range(1..=86_400_000)
}

#[derive(Args)]
pub struct PgSessionArgs {
    /// PostgreSQL: end a writer or leader session that sits idle inside a transaction this
    /// long (a paused or cut-off replica holding the write lock), in milliseconds.
    #[arg(long, env = "AEGIS_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
          default_value_t = SessionBounds::default().idle_in_transaction.as_millis() as u64,
          value_parser = bound_ms())]
    pg_idle_in_transaction_timeout_ms: u64,
    /// PostgreSQL: a write waiting this long for the write lock fails (503) instead of
    /// waiting on, in milliseconds.
    #[arg(long, env = "AEGIS_PG_LOCK_TIMEOUT_MS",
          default_value_t = SessionBounds::default().lock_wait.as_millis() as u64,
          value_parser = bound_ms())]
    pg_lock_timeout_ms: u64,
    /// PostgreSQL: the longest one statement of a write may run, in milliseconds.
    #[arg(long, env = "AEGIS_PG_STATEMENT_TIMEOUT_MS",
          default_value_t = SessionBounds::default().statement.as_millis() as u64,
          value_parser = bound_ms())]
    pg_statement_timeout_ms: u64,
}

impl PgSessionArgs {
    pub fn bounds(&self) -> SessionBounds {
        SessionBounds {
            idle_in_transaction: Duration::from_millis(self.pg_idle_in_transaction_timeout_ms),
            lock_wait: Duration::from_millis(self.pg_lock_timeout_ms),
            statement: Duration::from_millis(self.pg_statement_timeout_ms),
        }
    }
}
