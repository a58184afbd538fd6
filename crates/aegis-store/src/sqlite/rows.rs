//! How the SQLite store reads rows: the driver's side of [`crate::schema::StoredRow`], and
//! queries run through the readers written once for both stores (`crate::rows`).

use crate::schema::StoredRow;
use crate::*;
use rusqlite::{Connection, Row};

pub(crate) const AGENT_COLUMNS: &str = "id, tenant_id, name, status, status_reason, risk_tier, created_at, updated_at, rowid, version, \
     rate_per_sec, rate_burst";

impl StoredRow for Row<'_> {
    fn text(&self, index: usize) -> StoreResult<Option<String>> {
        get(self, index)
    }

    fn int(&self, index: usize) -> StoreResult<Option<i64>> {
        get(self, index)
    }

    fn flag(&self, index: usize) -> StoreResult<Option<bool>> {
        get(self, index)
    }

    fn bytes(&self, index: usize) -> StoreResult<Option<Vec<u8>>> {
        get(self, index)
    }
}

/// Column `index` as a `T`. A stored value that is not one (a BLOB where text belongs, text
/// that is not UTF-8) is corrupt data, as on PostgreSQL (`postgres/rows.rs::get`): the
/// database answered, so it is not unavailable, and retrying will not make the row read.
fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> StoreResult<T> {
    row.get(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

/// Runs `sql` and reads each row with `read`, a reader written once for both backends (over
/// [`crate::schema::StoredRow`]), so that its errors are the store's, not the driver's.
pub(super) fn read_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    read: impl Fn(&dyn StoredRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut values = Vec::new();
    while let Some(row) = rows.next()? {
        values.push(read(row)?);
    }
    Ok(values)
}

/// The one row `sql` returns by a unique key, read by `read`; `None` if none.
pub(super) fn read_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    read: impl Fn(&dyn StoredRow) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    Ok(read_rows(conn, sql, params, read)?.into_iter().next())
}

/// Runs a read of [`EVENT_SQL`] (or of its `matching`).
pub(super) fn read_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Event>> {
    read_rows(conn, sql, params, crate::rows::event)
}

/// The event reads in SQLite's placeholders; SQLite looks each event's decision up by the
/// unique index on `event_seq`.
pub(super) static EVENT_SQL: std::sync::LazyLock<crate::schema::EventQueries> =
    std::sync::LazyLock::new(|| {
        crate::schema::EventQueries::new(
            "LEFT JOIN decisions d ON e.payload = '' AND d.event_seq = e.seq".to_owned(),
            "SELECT value FROM json_each($3)",
            super::numbered_placeholders,
        )
    });

/// The receipt reads in SQLite's placeholders. SQLite looks a decision up by its primary key
/// for each receipt chosen, so a plain join does.
pub(super) static RECEIPT_SQL: std::sync::LazyLock<crate::schema::ReceiptQueries> =
    std::sync::LazyLock::new(|| {
        crate::schema::ReceiptQueries::new(
            "LEFT JOIN decisions d ON d.id = r.decision_id AND d.tenant_id = r.tenant_id"
                .to_owned(),
            super::numbered_placeholders,
        )
    });

/// The listings of decisions in SQLite's spelling: `CROSS JOIN` keeps the events the outer
/// loop, so a tenant's page walks `events_tenant` and probes the unique index on `event_seq`
/// once per event.
pub(super) static DECISION_LISTINGS: std::sync::LazyLock<crate::schema::DecisionListings> =
    std::sync::LazyLock::new(|| {
        crate::schema::DecisionListings::new(
            "events e CROSS JOIN decisions d ON d.event_seq = e.seq",
        )
    });
