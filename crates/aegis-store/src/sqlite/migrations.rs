//! The SQLite schema's migrations, applied in one transaction when the writer opens the
//! database: the SQL files of `migrations/sqlite/`, and a step in code where SQL cannot
//! make the change (migration 24).

use crate::schema::SCHEMA_VERSION_SQL;
use crate::{StoreError, StoreResult, now_ms};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

/// One step of the schema.
enum Migration {
    Sql(&'static str),
    /// A change that SQL alone cannot make; the function says why.
    Code(fn(&Transaction) -> StoreResult<()>),
}

/// A migration written in SQL, from its file in `migrations/sqlite/`.
macro_rules! sql {
    ($file:literal) => {
        Migration::Sql(include_str!(concat!("../../migrations/sqlite/", $file)))
    };
}

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[Migration] = &[
    sql!("0001_initial.sql"),
    sql!("0002_soc.sql"),
    sql!("0003_evidence.sql"),
    sql!("0004_notifications.sql"),
    sql!("0005_evidence_cache.sql"),
    sql!("0006_storms.sql"),
    sql!("0007_sealed_webhook_secrets.sql"),
    sql!("0008_decision.sql"),
    sql!("0009_fence.sql"),
    sql!("0010_decision_requests.sql"),
    sql!("0011_console_sessions.sql"),
    sql!("0012_approvals.sql"),
    sql!("0013_mcp.sql"),
    sql!("0014_rate_limits.sql"),
    sql!("0015_chain_cuts.sql"),
    sql!("0016_mcp_resource_argument.sql"),
    sql!("0017_deny_index.sql"),
    sql!("0018_coalesce_from_seq.sql"),
    sql!("0019_receipt_from_decision.sql"),
    sql!("0020_decision_event_from_decision.sql"),
    sql!("0021_evidence_by_event.sql"),
    sql!("0022_checkpoint_batches.sql"),
    sql!("0023_decisions_through_events.sql"),
    Migration::Code(decision_check_as_equalities),
];

/// The schema version this binary migrates to.
const KNOWN: usize = MIGRATIONS.len();

/// The oldest schema version this binary's reads run on: a reader never migrates
/// ([`crate::schema::readable_schema`]), and migration 24 changes only how a CHECK is
/// written, which no read sees. So `aegis receipts verify --db` reads a database that an
/// older gateway wrote, before this version's `aegis serve` has migrated it.
pub(super) const OLDEST_READABLE: usize = 23;
const _: () = assert!(OLDEST_READABLE <= KNOWN);

pub(super) fn apply(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row(SCHEMA_VERSION_SQL, [], |r| r.get(0))?;
    if current > KNOWN as i64 {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this binary knows ({KNOWN})"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(change) => change(&tx)?,
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![index as i64 + 1, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The `decisions` table's CHECK as migration 1 wrote it, and as this migration writes it.
const DECISION_CHECK_AS_LIST: &str = "CHECK (decision IN ('allow', 'deny', 'require_approval'))";
const DECISION_CHECK_AS_EQUALITIES: &str =
    "CHECK (decision = 'allow' OR decision = 'deny' OR decision = 'require_approval')";

/// Migration 24. SQLite tests `x IN (a, b, c)` against a list of more than two constants by
/// building an ephemeral B-tree of the list, once each time the statement runs: the
/// `decisions` CHECK built and freed one on every decision's insert, on the writer thread
/// (3 % of its CPU time in a perf profile, 12 % of its instructions). The same check
/// written as equalities compiles to comparisons.
///
/// SQLite changes a CHECK only by rebuilding the table, which would copy every decision
/// once on the first start after an upgrade, or by editing the table's stored definition,
/// which its `ALTER TABLE` documentation allows when every stored row still satisfies the
/// new one: with `writable_schema` on, rewrite the text, then bump `schema_version` so
/// every connection parses the schema again. Both forms hold for exactly the same values
/// (NULL included, which NOT NULL refuses anyway), so no row can break the new check, and
/// the documented closing `integrity_check` (which would read every decision) is left to
/// the migration's test.
fn decision_check_as_equalities(tx: &Transaction) -> StoreResult<()> {
    let schema_version: i64 = tx.pragma_query_value(None, "schema_version", |row| row.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    let rewritten = tx.execute(
        "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2)
         WHERE type = 'table' AND name = 'decisions' AND instr(sql, ?1) > 0",
        params![DECISION_CHECK_AS_LIST, DECISION_CHECK_AS_EQUALITIES],
    );
    // Off whatever the edit did: the setting belongs to the connection, not the
    // transaction, and the writer keeps this connection.
    tx.pragma_update(None, "writable_schema", false)?;
    if rewritten? != 1 {
        return Err(StoreError::Unavailable(format!(
            "migration 24: the decisions table does not hold `{DECISION_CHECK_AS_LIST}` as \
             migration 1 wrote it; its definition was changed by hand"
        )));
    }
    tx.pragma_update(None, "schema_version", schema_version + 1)?;
    // Parses the edited schema now, inside the transaction: a definition SQLite could not
    // read fails the migration, which rolls back, rather than a later statement.
    tx.query_row(
        "SELECT count(*) FROM pragma_table_info('decisions')",
        [],
        |row| row.get::<_, i64>(0),
    )?;
    Ok(())
}
