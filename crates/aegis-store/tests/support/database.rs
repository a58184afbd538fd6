//! The database behind a store, for the store tests that edit it directly. A test file
//! includes it beside `support` (`#[path = "support/database.rs"] mod database;`).

// Each test file uses a part of this module.
#![allow(dead_code, unused_macros, unused_imports)]

use crate::support::{secrets, signer};
use aegis_store::Store;
use aegis_store::postgres::PgStore;
use aegis_store::sqlite::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;

/// The database behind a store, reached directly as someone with write access would.
pub enum Database {
    Sqlite(PathBuf),
    Postgres(aegis_testdb::FreshDatabase),
}

impl Database {
    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(path) => {
                Arc::new(SqliteStore::open(path, signer(), secrets()).unwrap())
            }
            Database::Postgres(db) => Arc::new(
                PgStore::connect(db.url(), signer(), secrets())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs `sql` (parameters `$1`, `$2`, … as text) and returns the first column of the
    /// first row as text, if any.
    pub async fn run(&self, sql: &str, params: &[&str]) -> Option<String> {
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                let mut statement = conn.prepare(sql).unwrap();
                let mut rows = statement
                    .query(rusqlite::params_from_iter(params.iter()))
                    .unwrap();
                rows.next().unwrap().map(|row| row.get(0).unwrap())
            }
            Database::Postgres(db) => {
                let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows = client.query(sql, &params).await.unwrap();
                rows.first().map(|row| row.get(0))
            }
        }
    }
}

/// Runs `async fn $rule(db: Database)` as two tests, `$rule::sqlite` on a fresh SQLite file
/// and `$rule::postgres` on a fresh PostgreSQL database: [`crate::support::on_both_stores`]
/// for a test that also reaches the database directly.
macro_rules! on_both_databases {
    ($rule:ident) => {
        mod $rule {
            use $crate::database::Database;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$rule(Database::Sqlite(dir.path().join("aegis.db"))).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$rule(Database::Postgres(
                    aegis_testdb::FreshDatabase::create().await,
                ))
                .await;
            }
        }
    };
}
pub(crate) use on_both_databases;
