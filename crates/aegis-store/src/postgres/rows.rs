//! How the PostgreSQL store reads rows: the driver's side of [`crate::schema::StoredRow`]
//! (the readers themselves are written once, in `crate::rows`), and its spelling of the
//! shared reads. Column lists are shared (`crate::schema`) where the schemas agree.

use crate::*;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

pub(super) use crate::schema::constant_time_eq;

/// Agents page by `ordinal` here (SQLite pages by its rowid).
pub(super) const AGENT_COLUMNS: &str = "id, tenant_id, name, status, status_reason, risk_tier, created_at, updated_at, ordinal, version, rate_per_sec, rate_burst";

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

/// The event reads in PostgreSQL's placeholders, as written. The decision is joined through
/// a fenced (`OFFSET 0`) lateral subquery for the reason [`RECEIPT_SQL`] is: one probe of the
/// unique index on `event_seq` per event read, whatever the statistics say.
pub(super) static EVENT_SQL: std::sync::LazyLock<crate::schema::EventQueries> =
    std::sync::LazyLock::new(|| {
        let join = format!(
            "LEFT JOIN LATERAL (SELECT {} FROM decisions
                                WHERE e.payload = '' AND event_seq = e.seq OFFSET 0) d ON true",
            crate::schema::EVENT_DECISION_COLUMNS
        );
        crate::schema::EventQueries::new(
            join,
            "SELECT jsonb_array_elements_text(CAST(CAST($3 AS TEXT) AS jsonb))",
            str::to_owned,
        )
    });

impl crate::schema::StoredRow for Row {
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

/// The receipt reads in PostgreSQL's placeholders, as written. The decision is joined
/// through a fenced (`OFFSET 0`) lateral subquery so that the planner probes the decision's
/// primary key once per receipt: with a plain join and statistics that lag a growing table,
/// it hashed every decision of the tenant for a page of 500 receipts.
pub(super) static RECEIPT_SQL: std::sync::LazyLock<crate::schema::ReceiptQueries> =
    std::sync::LazyLock::new(|| {
        let join = format!(
            "LEFT JOIN LATERAL (SELECT {} FROM decisions
                                WHERE id = r.decision_id AND tenant_id = r.tenant_id OFFSET 0) d ON true",
            crate::schema::RECEIPT_DECISION_COLUMNS
        );
        crate::schema::ReceiptQueries::new(join, str::to_owned)
    });

/// The listings of decisions in PostgreSQL's spelling, the decision joined through a fenced
/// (`OFFSET 0`) lateral subquery for the reason [`RECEIPT_SQL`] is: each of the tenant's
/// events probes the unique index on `event_seq` once, whatever the statistics say. A plain
/// join let the planner merge the tenant's events with every tenant's decisions in
/// `event_seq` order, which a small tenant's page would walk through.
pub(super) static DECISION_LISTINGS: std::sync::LazyLock<crate::schema::DecisionListings> =
    std::sync::LazyLock::new(|| {
        crate::schema::DecisionListings::new(&format!(
            "events e CROSS JOIN LATERAL (SELECT {} FROM decisions
                                          WHERE event_seq = e.seq OFFSET 0) d",
            crate::schema::DECISION_COLUMNS
        ))
    });
