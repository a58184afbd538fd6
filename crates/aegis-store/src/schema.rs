//! What both backends read and write alike: column lists, SQL text written once, and how a
//! stored value is read back. A backend adds only its driver's plumbing (placeholder style,
//! row access); nothing here belongs to one of them.

use crate::{StoreError, StoreResult};
use std::str::FromStr;
use std::sync::LazyLock;
use subtle::ConstantTimeEq;

pub(crate) const TENANT_COLUMNS: &str = "id, denial_threshold, escalation_window_minutes, created_at, \
     soc_autonomy_level, deny_storm_n, deny_storm_window_secs, exfiltration_reads, \
     approval_ttl_secs, approvals_required, rate_per_sec, rate_burst, mutating_per_hour";
pub(crate) const INCIDENT_COLUMNS: &str = "id, tenant_id, kind, severity, status, agent_id, summary, \
     recommended_action, opened_at, updated_at, acknowledged_at, acknowledged_by, closed_at, closed_by, \
     close_reason, event_seq, (SELECT COUNT(*) FROM incident_evidence e WHERE e.incident_id = incidents.id)";
pub(crate) const RESPONSE_ACTION_COLUMNS: &str =
    "id, incident_id, agent_id, action, mode, actor, detail, event_seq, created_at";
pub(crate) const ALERT_COLUMNS: &str =
    "id, tenant_id, kind, severity, agent_id, source_seq, summary, event_seq, created_at, count";
pub(crate) const KEY_COLUMNS: &str = "id, tenant_id, name, role, created_at, revoked_at";
pub(crate) const DECISION_COLUMNS: &str = "id, tenant_id, event_seq, agent_id, request_id, tool, action, resource, \
     mutates_state, risk, source_trust, decision, risk_score, reason, matched_policies, action_hash, \
     run_id, trace_id, parent_run_id, receipt_id, created_at";
/// Every agent's saved correlation windows (`crate::rows::correlator_state`).
pub(crate) const CORRELATOR_STATE_SQL: &str =
    "SELECT tenant_id, agent_id, state FROM correlator_state";

/// A checkpoint row (`crate::rows::checkpoint`). The three `batch_` columns are NULL on a
/// checkpoint signed alone, before commit batches were signed as one.
pub(crate) const CHECKPOINT_COLUMNS: &str =
    "tenant_id, seq, head_hash, key_id, signed_at, signature, batch_index, batch_size, batch_path";

/// A chain's last checkpoint, its last receipt and the public key stored under the
/// checkpoint's key id, in one statement (so one snapshot); read by `crate::rows::chain_seal`.
pub(crate) static SEAL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {checkpoint}, r.id, r.seq, r.hash, k.public_key
         FROM (SELECT 1) AS one
         LEFT JOIN (SELECT id, seq, hash FROM receipts WHERE tenant_id = $1
                    ORDER BY seq DESC LIMIT 1) r ON true
         LEFT JOIN (SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                    WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1) c ON true
         LEFT JOIN signing_keys k ON k.key_id = c.key_id",
        checkpoint = qualified(CHECKPOINT_COLUMNS, "c"),
    )
});

/// A column list such as [`DECISION_COLUMNS`] under the table alias `alias`, for joins.
pub(crate) fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of a decision row that a receipt body is rebuilt from
/// ([`crate::records::StoredReceipt`]).
pub(crate) const RECEIPT_DECISION_COLUMNS: &str = "agent_id, tool, action, decision, risk_score, \
     matched_policies, action_hash, created_at, receipt_approval, tool_definition_hash";

/// The `prev_hash` of receipt `r`: its column, or else the hash of the receipt before it in
/// its chain, or else the genesis `""`. A receipt row stores no `prev_hash` (since
/// `records::seal_receipt`'s writers stopped storing it): it is the hash of the row before,
/// and pruning writes it out for the first receipt it keeps (`archive::PRUNE`), so the
/// column is NULL only while the receipt before is stored. A receipt whose predecessor was
/// deleted behind the store's back reads with `""`, which no sealed body past seq 1 holds:
/// the audit reports it as broken.
pub(crate) const RECEIPT_PREV_HASH: &str = "COALESCE(r.prev_hash,
        (SELECT p.hash FROM receipts p WHERE p.tenant_id = r.tenant_id AND p.seq = r.seq - 1), '')";

/// The reads of receipts, each row with the decision row it records, in one backend's
/// spelling: the receipts are chosen first (by the index on `(tenant_id, seq)` or the primary
/// key) and then each looks up its decision by primary key, so a read costs the same however
/// many decisions the tenant has, whatever the planner's statistics say.
pub(crate) struct ReceiptQueries {
    pub with_id: String,
    pub at_seq: String,
    /// `seq > $2`, oldest first, at most `$3`.
    pub after_seq: String,
    /// `seq < $2`, newest first, at most `$3`.
    pub newest_before_seq: String,
    join: String,
    spell: fn(&str) -> String,
}

impl ReceiptQueries {
    /// `join` joins a receipt `r` to its decision `d` (with [`RECEIPT_DECISION_COLUMNS`]);
    /// `spell` turns the `$N` placeholders into the backend's.
    pub fn new(join: String, spell: fn(&str) -> String) -> Self {
        let mut queries = ReceiptQueries {
            with_id: String::new(),
            at_seq: String::new(),
            after_seq: String::new(),
            newest_before_seq: String::new(),
            join,
            spell,
        };
        queries.with_id = queries.matching("id = $2", "");
        queries.at_seq = queries.matching("seq = $2", "");
        queries.after_seq = queries.matching("seq > $2 ORDER BY seq LIMIT $3", "");
        queries.newest_before_seq = queries.matching("seq < $2 ORDER BY seq DESC LIMIT $3", "DESC");
        queries
    }

    /// The receipts of tenant `$1` that meet `filter` (over the receipts table; it may end in
    /// `ORDER BY … LIMIT`), each with its decision, ordered by seq in `direction`, read into
    /// [`crate::records::StoredReceipt`].
    pub fn matching(&self, filter: &str, direction: &str) -> String {
        let decision_columns = qualified(RECEIPT_DECISION_COLUMNS, "d");
        (self.spell)(&format!(
            "SELECT r.body, r.hash, r.id, r.tenant_id, r.seq, r.decision_id, {RECEIPT_PREV_HASH},
                    {decision_columns}
             FROM (SELECT id, tenant_id, seq, decision_id, body, hash, prev_hash FROM receipts
                   WHERE tenant_id = $1 AND {filter}) r
             {join}
             ORDER BY r.seq {direction}",
            join = self.join,
        ))
    }
}

/// The number of migrations a database has applied.
pub(crate) const SCHEMA_VERSION_SQL: &str =
    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";

/// Whether a database opened for reading only can be read by this binary, whose reads run
/// on schema version `oldest` and later: a reader never migrates, and its reads name columns
/// an older schema lacks (`receipts.prev_hash` since `0019_receipt_from_decision` on
/// SQLite, `0016` on PostgreSQL), so an older database is refused with what to do instead.
pub(crate) fn readable_schema(stored: i64, oldest: usize) -> StoreResult<()> {
    if stored < oldest as i64 {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {stored}, older than this binary reads ({oldest}): \
             verify it with the aegis version that wrote it, or migrate it by starting this \
             version's `aegis serve` on it (or on a copy) once"
        )));
    }
    Ok(())
}

/// A stored row read by column position, whichever driver read it: the rules that read rows
/// (e.g. [`crate::records::StoredReceipt`]) are written once against it.
pub(crate) trait StoredRow {
    fn text(&self, index: usize) -> StoreResult<Option<String>>;
    fn int(&self, index: usize) -> StoreResult<Option<i64>>;
    fn flag(&self, index: usize) -> StoreResult<Option<bool>>;
    fn bytes(&self, index: usize) -> StoreResult<Option<Vec<u8>>>;

    /// A column that is never NULL.
    fn required_text(&self, index: usize) -> StoreResult<String> {
        self.text(index)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {index} is NULL")))
    }

    fn required_int(&self, index: usize) -> StoreResult<i64> {
        self.int(index)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {index} is NULL")))
    }

    fn required_flag(&self, index: usize) -> StoreResult<bool> {
        self.flag(index)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {index} is NULL")))
    }

    fn required_bytes(&self, index: usize) -> StoreResult<Vec<u8>> {
        self.bytes(index)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {index} is NULL")))
    }
}

/// The decisions `d` a listing keeps: `$1` tenant, `$2` before this event seq, `$3` agent,
/// `$4` verdict, `$5` tool, `$6` action, `$7` run, `$8` since and `$9` until (ms), where a
/// `NULL` filter keeps every row.
const LISTING_FILTERS: &str = "d.tenant_id = $1 AND d.event_seq < $2
       AND (CAST($3 AS TEXT) IS NULL OR d.agent_id = $3)
       AND (CAST($4 AS TEXT) IS NULL OR d.decision = $4)
       AND (CAST($5 AS TEXT) IS NULL OR d.tool = $5)
       AND (CAST($6 AS TEXT) IS NULL OR d.action = $6)
       AND (CAST($7 AS TEXT) IS NULL OR d.run_id = $7)
       AND (CAST($8 AS BIGINT) IS NULL OR d.created_at >= $8)
       AND (CAST($9 AS BIGINT) IS NULL OR d.created_at < $9)";

/// The listings of a tenant's decisions (`crate::ReceiptStore::list_decisions`) in one
/// backend's spelling: [`LISTING_FILTERS`]' decisions, newest first, at most `$10`, each
/// listing read through the index of what its filter names. SQLite plans a statement once
/// for every value of its parameters (`sqlite/mod.rs::plan_each_statement_once`), and
/// PostgreSQL may (a generic plan); a filter that may be `NULL` then narrows no index, so
/// each access path is a statement of its own: one agent's decisions by `decisions_agent`,
/// one run's by `decisions_run`, and otherwise the tenant's events newest first
/// (`events_tenant`), each looking its decision up by the unique `event_seq`. Decisions have
/// no index by tenant alone: it would repeat `events_tenant` (SQLite's migration
/// `0023_decisions_through_events`, PostgreSQL's `0020`).
pub(crate) struct DecisionListings {
    of_agent: String,
    of_run: String,
    of_tenant: String,
}

impl DecisionListings {
    /// `decision_of_event` is the `FROM` item of events `e`, each joined to its decision `d`
    /// ([`DECISION_COLUMNS`]) so that the events are read first, in the order of `e.seq`.
    pub fn new(decision_of_event: &str) -> Self {
        let listing = |from: &str, access: &str, newest_first: &str| {
            format!(
                "SELECT {columns} FROM {from} WHERE {access} AND {LISTING_FILTERS}
                 ORDER BY {newest_first} DESC LIMIT $10",
                columns = qualified(DECISION_COLUMNS, "d"),
            )
        };
        DecisionListings {
            of_agent: listing("decisions d", "d.agent_id = $3", "d.event_seq"),
            of_run: listing("decisions d", "d.run_id = $7", "d.event_seq"),
            of_tenant: listing(
                decision_of_event,
                "e.tenant_id = $1 AND e.seq < $2",
                "e.seq",
            ),
        }
    }

    /// The listing of `filter`'s decisions.
    pub fn for_filter(&self, filter: &crate::DecisionFilter) -> &str {
        if filter.agent_id.is_some() {
            &self.of_agent
        } else if filter.run_id.is_some() {
            &self.of_run
        } else {
            &self.of_tenant
        }
    }
}

/// The columns of a decision row that its event's payload is rebuilt from
/// ([`crate::records::StoredEvent`]) and its subject, the decision's id; `id` first, never NULL
/// in a joined row.
pub(crate) const EVENT_DECISION_COLUMNS: &str = "id, decision, tool, action, mutates_state, egress, \
     sensitive, contained, risk, risk_score, source_trust, run_id, approval_id";

/// The reads of the event log in one backend's spelling, each event with the decision row
/// its payload is rebuilt from when it was stored without one: the events are chosen first
/// (by the primary key or the index on `(tenant_id, seq)`) and each then looks its decision
/// up by `event_seq`, so a page costs the same however long the log is.
pub(crate) struct EventQueries {
    /// Tenant `$1`, `seq > $2`, oldest first, at most `$3`.
    pub of_tenant_after: String,
    /// `seq > $1`, oldest first, at most `$2`.
    pub after: String,
    /// `$1 < seq <= $2` whose kind is one of the JSON array of names `$3`, oldest first, at
    /// most `$4`.
    pub of_kinds: String,
    /// As `of_kinds`, but without the allowed decisions: each event is kept unless a
    /// decision row, probed by the unique `event_seq`, says it was an `allow`.
    pub of_kinds_except_allows: String,
    join: String,
    spell: fn(&str) -> String,
}

impl EventQueries {
    /// `join` joins an event `e` to its decision `d` (with [`EVENT_DECISION_COLUMNS`]) when
    /// `e.payload = ''`; `names_in` is the backend's set of the names in the JSON array `$3`;
    /// `spell` turns the `$N` placeholders into the backend's.
    pub fn new(join: String, names_in: &str, spell: fn(&str) -> String) -> Self {
        let mut queries = EventQueries {
            of_tenant_after: String::new(),
            after: String::new(),
            of_kinds: String::new(),
            of_kinds_except_allows: String::new(),
            join,
            spell,
        };
        queries.of_tenant_after =
            queries.matching("tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        queries.after = queries.matching("seq > $1 ORDER BY seq LIMIT $2");
        let of_kinds = format!("seq > $1 AND seq <= $2 AND kind IN ({names_in})");
        queries.of_kinds = queries.matching(&format!("{of_kinds} ORDER BY seq LIMIT $4"));
        // A scalar subquery, not `NOT EXISTS`: PostgreSQL would turn that into an anti-join
        // or a hashed subplan, either of which reads every allowed decision of the database.
        queries.of_kinds_except_allows = queries.matching(&format!(
            "{of_kinds}
             AND COALESCE((SELECT allowed.decision FROM decisions allowed
                           WHERE allowed.event_seq = events.seq), '') <> 'allow'
             ORDER BY seq LIMIT $4"
        ));
        queries
    }

    /// The events that meet `filter` (over the events table; it may end in
    /// `ORDER BY seq LIMIT …`), oldest first, read into [`crate::records::StoredEvent`].
    pub fn matching(&self, filter: &str) -> String {
        let decision_columns = qualified(EVENT_DECISION_COLUMNS, "d");
        (self.spell)(&format!(
            "SELECT e.seq, e.tenant_id, e.kind, e.agent_id, e.subject_id, e.payload, e.created_at,
                    {decision_columns}
             FROM (SELECT seq, tenant_id, kind, agent_id, subject_id, payload, created_at
                   FROM events WHERE {filter}) e
             {join}
             ORDER BY e.seq",
            join = self.join,
        ))
    }
}

/// An incident's evidence item `e` read with its event `ev`, in
/// [`crate::EvidenceItem`]'s field order: the decision is the event's subject when the
/// event is a decision's, read from the decision row when the event does not store it
/// ([`crate::records::StoredEvent`]).
pub(crate) const EVIDENCE_ITEM_COLUMNS: &str = "e.event_seq,
    CASE WHEN ev.kind = 'decision'
         THEN COALESCE(ev.subject_id, (SELECT d.id FROM decisions d WHERE d.event_seq = ev.seq)) END,
    ev.created_at";

/// The columns of a webhook subscription.
pub(crate) const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, format, events, created_at";

/// The columns of `crate::rows::delivery_summary` but its last, the ordinal, which a listing
/// appends in the backend's spelling ([`crate::backend::Backend::ORDINAL`]). No body: the
/// listing does not show it, so a body that no longer reads must not fail the listing (the
/// delivery worker's claim reads it, in each backend's `notify::DELIVERY_COLUMNS`).
pub(crate) const DELIVERY_SUMMARY_COLUMNS: &str =
    "id, status, attempts, next_attempt_at, last_error, created_at, delivered_at";

/// The actor named on automatic responses.
pub const RESPONSE_ENGINE: &str = "soc:response-engine";

/// The agent's risk tier (`$1` its id), its denies that count towards escalation, logged
/// after its last tier change and at or after `$2` (ms), counted up to `$3`, and the seq of
/// that tier change: what [`RiskTier::after_deny`](aegis_core::model::RiskTier::after_deny)
/// needs, read before the deny at hand is stored (a writer holding rows back adds those the
/// same filter takes, `records::counts_as_earlier_deny`). The partial index
/// `decisions_agent_denies` holds exactly the rows counted.
pub(crate) const TIER_AND_EARLIER_DENIES_SQL: &str = "SELECT a.risk_tier,
    (SELECT COUNT(*) FROM (SELECT 1 FROM decisions
        WHERE agent_id = a.id AND decision = 'deny' AND NOT contained
          AND event_seq > a.risk_tier_changed_seq AND created_at >= $2
        LIMIT $3) AS earlier),
    a.risk_tier_changed_seq
 FROM agents a WHERE a.id = $1";

/// Saves one agent's notification coalescing state ([`crate::CoalesceRecord`]).
pub(crate) const SAVE_COALESCE_SQL: &str = "INSERT INTO notify_coalesce (tenant_id, agent_id, last_sent_at, pending_from_seq)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (tenant_id, agent_id)
     DO UPDATE SET last_sent_at = excluded.last_sent_at, pending_from_seq = excluded.pending_from_seq";

/// Every saved coalescing state, read in [`crate::CoalesceRecord`]'s field order.
/// An incident's narrative (`crate::rows::narrative`): `$1` tenant, `$2` incident.
pub(crate) const NARRATIVE_SQL: &str =
    "SELECT incident_id, generated_by, narrative, evidence, generated_at, basis
     FROM incident_narratives WHERE tenant_id = $1 AND incident_id = $2";

pub(crate) const COALESCE_STATES_SQL: &str =
    "SELECT tenant_id, agent_id, last_sent_at, pending_from_seq FROM notify_coalesce";

/// Parses a stored enum spelling; an unknown spelling means the row is corrupt.
pub(crate) fn parse_column<T: FromStr>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("unexpected stored value {text:?}")))
}

/// Compares a stored secret hash with a presented one in constant time.
pub(crate) fn constant_time_eq(stored: &[u8], presented: &[u8]) -> bool {
    stored.ct_eq(presented).into()
}
