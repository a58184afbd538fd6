//! The stored types read back from their rows, once for both drivers: each reader takes a
//! row by column position ([`StoredRow`]), in the order of its column list (`crate::schema`
//! and each backend's `AGENT_COLUMNS`), and answers the store's own errors, so a value the
//! schema should not hold (an unknown enum, an out-of-range integer) is `Corrupt` on either
//! store.

use crate::chain::ChainSeal;
use crate::schema::{StoredRow, parse_column};
use crate::*;
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::policy::PolicyDocument;
use aegis_core::receipt::{
    ChainCut, ChainCutBody, ChainHead, Checkpoint, CheckpointBatch, CheckpointBody,
    RECEIPT_SCHEMA_VERSION, Receipt,
};
use std::str::FromStr;

/// A row of `SELECT {TENANT_COLUMNS}`.
pub(crate) fn tenant(row: &dyn StoredRow) -> StoreResult<TenantSettings> {
    Ok(TenantSettings {
        id: TenantId::new(row.required_text(0)?),
        risk_escalation: RiskEscalation {
            denial_threshold: narrow(row, 1)?,
            window_minutes: narrow(row, 2)?,
        },
        created_at_ms: row.required_int(3)?,
        autonomy_override: parsed_opt(row, 4)?,
        deny_storm: DenyStormOverride {
            threshold: narrow_opt(row, 5)?,
            window_secs: narrow_opt(row, 6)?,
        },
        exfiltration_reads: parsed_opt(row, 7)?.unwrap_or(ExfiltrationReads::Sensitive),
        approvals: crate::approvals::ApprovalSettings {
            ttl_secs: narrow(row, 8)?,
            approvals_required: narrow(row, 9)?,
        },
        rate_limits: RateLimits {
            per_sec: narrow_opt(row, 10)?,
            burst: narrow_opt(row, 11)?,
        },
        mutating_per_hour: narrow_opt(row, 12)?,
    })
}

/// A row of `SELECT {KEY_COLUMNS}`.
pub(crate) fn operator_key(row: &dyn StoredRow) -> StoreResult<OperatorKey> {
    Ok(OperatorKey {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        name: row.text(2)?,
        role: parsed(row, 3)?,
        created_at_ms: row.required_int(4)?,
        revoked_at_ms: row.int(5)?,
    })
}

/// A row of `SELECT {KEY_COLUMNS}, <hash>` found by the index on that hash: the key only if
/// the stored hash (column 6) equals `presented`, compared in constant time, since an index
/// lookup alone is not a constant-time comparison.
pub(crate) fn operator_key_if_hash_matches(
    row: &dyn StoredRow,
    presented: &[u8],
) -> StoreResult<Option<OperatorKey>> {
    if !crate::schema::constant_time_eq(&row.required_bytes(6)?, presented) {
        return Ok(None);
    }
    operator_key(row).map(Some)
}

/// A row of `SELECT {AGENT_COLUMNS}` (the backend's: each pages by its own ordinal).
pub(crate) fn agent(row: &dyn StoredRow) -> StoreResult<Agent> {
    Ok(Agent {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        name: row.required_text(2)?,
        status: parsed(row, 3)?,
        status_reason: row.text(4)?,
        risk_tier: parsed(row, 5)?,
        created_at_ms: row.required_int(6)?,
        updated_at_ms: row.required_int(7)?,
        cursor: row.required_int(8)?,
        version: row.required_int(9)?,
        rate_limits: RateLimits {
            per_sec: narrow_opt(row, 10)?,
            burst: narrow_opt(row, 11)?,
        },
    })
}

/// A row of `SELECT {DECISION_COLUMNS}`.
pub(crate) fn decision(row: &dyn StoredRow) -> StoreResult<DecisionRecord> {
    Ok(DecisionRecord {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        event_seq: row.required_int(2)?,
        agent_id: row.required_text(3)?,
        request_id: row.text(4)?,
        tool: row.required_text(5)?,
        action: row.required_text(6)?,
        resource: row.text(7)?,
        mutates_state: row.required_flag(8)?,
        risk: parsed(row, 9)?,
        source_trust: parsed(row, 10)?,
        verdict: parsed(row, 11)?,
        risk_score: narrow(row, 12)?,
        reason: row.required_text(13)?,
        matched_policies: serde_json::from_str(&row.required_text(14)?)
            .map_err(|e| StoreError::Corrupt(format!("matched policies: {e}")))?,
        action_hash: row.required_text(15)?,
        trace: TraceContext {
            run_id: row.text(16)?,
            trace_id: row.text(17)?,
            parent_run_id: row.text(18)?,
        },
        receipt_id: row.required_text(19)?,
        created_at_ms: row.required_int(20)?,
    })
}

/// A row of `SELECT {ALERT_COLUMNS}`.
pub(crate) fn alert(row: &dyn StoredRow) -> StoreResult<AlertRecord> {
    Ok(AlertRecord {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        kind: row.required_text(2)?,
        severity: parsed(row, 3)?,
        agent_id: row.text(4)?,
        source_seq: row.required_int(5)?,
        summary: row.required_text(6)?,
        event_seq: row.required_int(7)?,
        created_at_ms: row.required_int(8)?,
        count: row.required_int(9)?,
    })
}

/// A row of `SELECT {INCIDENT_COLUMNS}`.
pub(crate) fn incident(row: &dyn StoredRow) -> StoreResult<IncidentRecord> {
    Ok(IncidentRecord {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        kind: row.required_text(2)?,
        severity: parsed(row, 3)?,
        status: row.required_text(4)?,
        agent_id: row.required_text(5)?,
        summary: row.required_text(6)?,
        recommended_action: row
            .text(7)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("recommended action: {e}")))
            })
            .transpose()?,
        opened_at_ms: row.required_int(8)?,
        updated_at_ms: row.required_int(9)?,
        acknowledged_at_ms: row.int(10)?,
        acknowledged_by: row.text(11)?,
        closed_at_ms: row.int(12)?,
        closed_by: row.text(13)?,
        close_reason: row.text(14)?,
        event_seq: row.required_int(15)?,
        evidence_count: row.required_int(16)?,
    })
}

/// A row of `SELECT {RESPONSE_ACTION_COLUMNS}`.
pub(crate) fn response_action(row: &dyn StoredRow) -> StoreResult<ResponseActionRecord> {
    Ok(ResponseActionRecord {
        id: row.required_text(0)?,
        incident_id: row.required_text(1)?,
        agent_id: row.required_text(2)?,
        action: row.required_text(3)?,
        mode: row.required_text(4)?,
        actor: row.required_text(5)?,
        detail: row.required_text(6)?,
        event_seq: row.required_int(7)?,
        created_at_ms: row.required_int(8)?,
    })
}

/// A row of `SELECT {CHECKPOINT_COLUMNS}`.
pub(crate) fn checkpoint(row: &dyn StoredRow) -> StoreResult<Checkpoint> {
    let batch = match (row.int(6)?, row.int(7)?, row.bytes(8)?) {
        (None, None, None) => None,
        (Some(index), Some(size), Some(path)) if path.len() % 32 == 0 => Some(CheckpointBatch {
            index: u64::try_from(index).map_err(|_| corrupt_batch())?,
            size: u64::try_from(size).map_err(|_| corrupt_batch())?,
            path: path.chunks(32).map(hex::encode).collect(),
        }),
        _ => return Err(corrupt_batch()),
    };
    Ok(Checkpoint {
        body: CheckpointBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: row.required_text(0)?,
            seq: narrow(row, 1)?,
            head_hash: row.required_text(2)?,
            key_id: row.required_text(3)?,
            signed_at: row.required_text(4)?,
        },
        batch,
        signature: row.required_text(5)?,
    })
}

fn corrupt_batch() -> StoreError {
    StoreError::Corrupt("a checkpoint's batch columns are not an index, a size and a path".into())
}

/// A batch path as stored: its hashes, 32 bytes each, one after the other.
pub(crate) fn stored_batch_path(batch: &CheckpointBatch) -> StoreResult<Vec<u8>> {
    let mut path = Vec::with_capacity(batch.path.len() * 32);
    for node in &batch.path {
        path.extend(hex::decode(node).map_err(|_| corrupt_batch())?);
    }
    Ok(path)
}

/// A row of [`crate::schema::SEAL_SQL`].
pub(crate) fn chain_seal(row: &dyn StoredRow) -> StoreResult<ChainSeal> {
    let last_checkpoint = match row.int(1)? {
        Some(_) => Some(checkpoint(row)?),
        None => None,
    };
    let head = match row.text(9)? {
        Some(receipt_id) => Some(ChainHead {
            receipt_id,
            seq: narrow(row, 10)?,
            hash: row.required_text(11)?,
        }),
        None => None,
    };
    Ok(ChainSeal {
        head,
        last_checkpoint,
        public_key: row.text(12)?,
    })
}

/// A row of [`crate::schema::CORRELATOR_STATE_SQL`].
pub(crate) fn correlator_state(row: &dyn StoredRow) -> StoreResult<CorrelatorStateRecord> {
    Ok(CorrelatorStateRecord {
        tenant_id: TenantId::new(row.required_text(0)?),
        agent_id: row.required_text(1)?,
        state: row.required_text(2)?,
    })
}

/// A row of `SELECT {WEBHOOK_COLUMNS}`. An event filter that no longer parses reads as no
/// filter, as it always has.
/// A row of [`crate::archive::CUT_OF`], the cut of `tenant_id`'s chain.
pub(crate) fn chain_cut(row: &dyn StoredRow, tenant_id: &str) -> StoreResult<ChainCut> {
    Ok(ChainCut {
        body: ChainCutBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: tenant_id.to_owned(),
            pruned_through_seq: narrow(row, 0)?,
            pruned_through_hash: row.required_text(1)?,
            key_id: row.required_text(2)?,
            cut_at: row.required_text(3)?,
        },
        signature: row.required_text(4)?,
    })
}

/// A row of `SELECT {EVIDENCE_ITEM_COLUMNS}`.
pub(crate) fn evidence_item(row: &dyn StoredRow) -> StoreResult<EvidenceItem> {
    Ok(EvidenceItem {
        event_seq: row.required_int(0)?,
        decision_id: row.text(1)?,
        recorded_at_ms: row.required_int(2)?,
    })
}

/// A row of [`crate::schema::NARRATIVE_SQL`].
pub(crate) fn narrative(row: &dyn StoredRow) -> StoreResult<NarrativeRecord> {
    crate::records::narrative_from_columns(
        row.required_text(0)?,
        row.required_text(1)?,
        row.required_text(2)?,
        &row.required_text(3)?,
        row.required_int(4)?,
        row.text(5)?.as_deref(),
    )
}

/// A row of [`crate::schema::COALESCE_STATES_SQL`].
pub(crate) fn coalesce_record(row: &dyn StoredRow) -> StoreResult<CoalesceRecord> {
    Ok(CoalesceRecord {
        tenant_id: TenantId::new(row.required_text(0)?),
        agent_id: row.required_text(1)?,
        last_sent_at_ms: row.required_int(2)?,
        pending_from_seq: row.int(3)?,
    })
}

pub(crate) fn webhook(row: &dyn StoredRow) -> StoreResult<Webhook> {
    Ok(Webhook {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        url: row.required_text(2)?,
        format: row.required_text(3)?,
        events: row
            .text(4)?
            .and_then(|events| serde_json::from_str(&events).ok()),
        created_at_ms: row.required_int(5)?,
    })
}

/// A row of the backend's `SELECT {DELIVERY_COLUMNS}` (each ends in its own ordinal).
pub(crate) fn delivery(row: &dyn StoredRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        sink: row.required_text(2)?,
        agent_id: row.text(3)?,
        body: row.required_text(4)?,
        status: row.required_text(5)?,
        attempts: row.required_int(6)?,
        next_attempt_at_ms: row.required_int(7)?,
        last_error: row.text(8)?,
        created_at_ms: row.required_int(9)?,
        delivered_at_ms: row.int(10)?,
        cursor: row.required_int(11)?,
    })
}

/// A row of `SELECT {DELIVERY_SUMMARY_COLUMNS}, <ordinal>`
/// ([`crate::schema::DELIVERY_SUMMARY_COLUMNS`]).
pub(crate) fn delivery_summary(row: &dyn StoredRow) -> StoreResult<DeliverySummary> {
    Ok(DeliverySummary {
        id: row.required_text(0)?,
        status: row.required_text(1)?,
        attempts: row.required_int(2)?,
        next_attempt_at_ms: row.required_int(3)?,
        last_error: row.text(4)?,
        created_at_ms: row.required_int(5)?,
        delivered_at_ms: row.int(6)?,
        cursor: row.required_int(7)?,
    })
}

/// A row of the backend's `SELECT {DELIVERY_COLUMNS}` in a claim: one that does not read is
/// set aside by its ordinal (column 11), not an error of the claim.
pub(crate) fn claimed_delivery(
    row: &dyn StoredRow,
) -> StoreResult<Result<Delivery, crate::records::UnreadableDelivery>> {
    crate::records::UnreadableDelivery::or_else(row, 11, delivery)
}

/// A row of `mcp::sql::LIST_SERVERS`, `SERVER_BY_ID` and `SERVER_BY_NAME`.
pub(crate) fn mcp_server(row: &dyn StoredRow) -> StoreResult<McpServer> {
    Ok(McpServer {
        id: row.required_text(0)?,
        tenant_id: TenantId::new(row.required_text(1)?),
        name: row.required_text(2)?,
        url: row.required_text(3)?,
        created_at_ms: row.required_int(4)?,
    })
}

/// A row of `mcp::sql::PIN` and `PINS` (and the first ten columns of
/// `DEFINITIONS_OF_SERVERS`).
pub(crate) fn tool_pin(row: &dyn StoredRow) -> StoreResult<ToolPin> {
    let status = row.required_text(4)?;
    Ok(ToolPin {
        server_id: row.required_text(0)?,
        tool: row.required_text(1)?,
        definition_hash: row.required_text(2)?,
        read_only: row.required_flag(3)?,
        status: PinStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("pin status {status:?}")))?,
        changed_hash: row.text(5)?,
        accepted_by: row.text(6)?,
        accepted_at_ms: row.int(7)?,
        pinned_at_ms: row.required_int(8)?,
        resource_argument: row.text(9)?,
    })
}

/// A row of `mcp::sql::DEFINITIONS_OF_SERVERS`: a tool's pin with the tenant's server.
pub(crate) fn defined_tool(
    row: &dyn StoredRow,
    tenant: &TenantId,
) -> StoreResult<(McpServer, ToolPin)> {
    let server = McpServer {
        id: row.required_text(0)?,
        tenant_id: tenant.clone(),
        name: row.required_text(10)?,
        url: row.required_text(11)?,
        created_at_ms: row.required_int(12)?,
    };
    Ok((server, tool_pin(row)?))
}

/// A row of `SELECT tool, action, mutates_state, risk, egress, sensitive` of `tool_actions`.
pub(crate) fn tool_action(row: &dyn StoredRow) -> StoreResult<RegisteredToolAction> {
    Ok(RegisteredToolAction {
        tool: row.required_text(0)?,
        action: ToolAction {
            action: row.required_text(1)?,
            mutates_state: row.required_flag(2)?,
            risk: parsed(row, 3)?,
            egress: row.required_flag(4)?,
            sensitive: row.required_flag(5)?,
        },
    })
}

/// A row of `SELECT id, text` of `policies`.
pub(crate) fn policy(row: &dyn StoredRow) -> StoreResult<PolicyDocument> {
    Ok(PolicyDocument {
        id: row.required_text(0)?,
        text: row.required_text(1)?,
    })
}

/// A row of `SELECT key_id, public_key, created_at` of `signing_keys`.
pub(crate) fn signing_key(row: &dyn StoredRow) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        key_id: row.required_text(0)?,
        public_key: row.required_text(1)?,
        created_at_ms: row.required_int(2)?,
    })
}

/// A row of an event read (`schema::EventQueries`).
pub(crate) fn event(row: &dyn StoredRow) -> StoreResult<Event> {
    Ok(crate::records::StoredEvent::read(row)?.into_event())
}

/// A row of a receipt read (`schema::ReceiptQueries`).
pub(crate) fn receipt(row: &dyn StoredRow) -> StoreResult<Receipt> {
    crate::records::StoredReceipt::read(row)?.into_receipt()
}

/// A text column holding one of an enum's names.
fn parsed<T: FromStr>(row: &dyn StoredRow, index: usize) -> StoreResult<T> {
    parse_column(&row.required_text(index)?)
}

fn parsed_opt<T: FromStr>(row: &dyn StoredRow, index: usize) -> StoreResult<Option<T>> {
    row.text(index)?.map(|text| parse_column(&text)).transpose()
}

/// An integer column read into a narrower type (both schemas store integers as 64 bits).
fn narrow<T: TryFrom<i64>>(row: &dyn StoredRow, index: usize) -> StoreResult<T> {
    narrowed(row.required_int(index)?, index)
}

fn narrow_opt<T: TryFrom<i64>>(row: &dyn StoredRow, index: usize) -> StoreResult<Option<T>> {
    row.int(index)?
        .map(|value| narrowed(value, index))
        .transpose()
}

fn narrowed<T: TryFrom<i64>>(value: i64, index: usize) -> StoreResult<T> {
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {index}: {value} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::model::Role;
    use rusqlite::Connection;

    fn read_one<T>(
        select: &str,
        read: impl Fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let conn = Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare(select).unwrap();
        let mut rows = statement.query([]).unwrap();
        read(rows.next().unwrap().unwrap())
    }

    #[test]
    fn a_key_row_reads_with_its_optional_columns() {
        let key = read_one("SELECT 'k1', 'acme', NULL, 'admin', 7, NULL", operator_key).unwrap();
        assert_eq!(
            (key.id.as_str(), key.tenant_id.as_str(), key.name, key.role),
            ("k1", "acme", None, Role::Admin)
        );
        assert_eq!((key.created_at_ms, key.revoked_at_ms), (7, None));
    }

    #[test]
    fn a_key_is_trusted_only_when_its_stored_hash_matches() {
        let row = "SELECT 'k1', 'acme', NULL, 'admin', 7, NULL, X'0102'";
        let matching = read_one(row, |row| operator_key_if_hash_matches(row, &[1, 2])).unwrap();
        assert_eq!(matching.map(|key| key.id), Some("k1".to_owned()));
        for other in [&[1, 3][..], &[1], &[1, 2, 0]] {
            let refused = read_one(row, |row| operator_key_if_hash_matches(row, other)).unwrap();
            assert_eq!(refused, None, "{other:?}");
        }
    }

    #[test]
    fn a_checkpoint_reads_alone_or_with_its_place_in_a_batch() {
        let alone = read_one(
            "SELECT 'acme', 4, 'h', 'k', 't', 's', NULL, NULL, NULL",
            checkpoint,
        )
        .unwrap();
        assert_eq!((alone.body.seq, alone.batch), (4, None));
        let path = format!("{}{}", "01".repeat(32), "02".repeat(32));
        let batched = read_one(
            &format!("SELECT 'acme', 4, 'h', 'k', 't', 's', 2, 3, X'{path}'"),
            checkpoint,
        )
        .unwrap();
        let batch = batched.batch.clone().unwrap();
        assert_eq!((batch.index, batch.size), (2, 3));
        assert_eq!(batch.path, vec!["01".repeat(32), "02".repeat(32)]);
        assert_eq!(
            stored_batch_path(&batch).unwrap(),
            hex::decode(path).unwrap()
        );
        for broken in ["2, NULL, X''", "2, 3, NULL", "2, 3, X'0102'", "-1, 3, X''"] {
            let read = read_one(
                &format!("SELECT 'acme', 4, 'h', 'k', 't', 's', {broken}"),
                checkpoint,
            );
            assert!(
                matches!(read, Err(StoreError::Corrupt(_))),
                "{broken}: {read:?}"
            );
        }
    }

    #[test]
    fn values_the_schema_cannot_hold_read_as_corrupt_not_unavailable() {
        let negative_seq = read_one(
            "SELECT 'acme', -1, 'h', 'k', 't', 's', NULL, NULL, NULL",
            checkpoint,
        );
        assert!(
            matches!(negative_seq, Err(StoreError::Corrupt(_))),
            "{negative_seq:?}"
        );
        for (what, key_row) in [
            ("unknown role", "SELECT 'k1', 'acme', NULL, 'root', 7, NULL"),
            ("missing id", "SELECT NULL, 'acme', NULL, 'admin', 7, NULL"),
            (
                "id not text",
                "SELECT x'00ff', 'acme', NULL, 'admin', 7, NULL",
            ),
            (
                "time not an integer",
                "SELECT 'k1', 'acme', NULL, 'admin', 'x', NULL",
            ),
        ] {
            let read = read_one(key_row, operator_key);
            assert!(
                matches!(read, Err(StoreError::Corrupt(_))),
                "{what}: {read:?}"
            );
        }
    }
}
