//! Decisions gathered over one batch and written with one multi-row insert per table.
//!
//! Every write of the cluster waits for the `log_head` lock, so what a batch costs in round
//! trips is what the whole deployment can do. A decision's event seq, receipt and chain head
//! are all computed in memory; only the rows remain, and [`PendingDecisions::flush`] sends
//! them for the whole batch at once (three pipelined `INSERT … SELECT FROM UNNEST`). The
//! writer flushes before anything that could read them or roll them back: before a job in a
//! savepoint and before signing the batch's checkpoints. A deny's escalation count reads the
//! table and adds the gathered denies it would count ([`PendingDecisions::earlier_denies`]),
//! so a batch of denies costs one count each, not a flush and a count each.

use super::prepared;
use crate::records::SealedReceipt;
use crate::{NewDecision, StoreError, StoreResult};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

struct PendingDecision {
    event_seq: i64,
    decision: NewDecision,
    receipt: SealedReceipt,
}

pub(crate) struct PendingDecisions {
    rows: Vec<PendingDecision>,
    /// The batch's event time (`super::writer`); the decision rows keep the handler's time.
    event_at: i64,
}

impl PendingDecisions {
    /// Nothing gathered yet; events will be stamped `event_at`.
    pub fn stamped(event_at: i64) -> Self {
        PendingDecisions {
            rows: Vec::new(),
            event_at,
        }
    }

    pub fn push(&mut self, event_seq: i64, decision: NewDecision, receipt: SealedReceipt) {
        self.rows.push(PendingDecision {
            event_seq,
            decision,
            receipt,
        });
    }

    /// How many gathered decisions the escalation count of deny `d` takes, the agent's tier
    /// having last changed at `tier_changed_seq` (`records::counts_as_earlier_deny`): added
    /// to what the table holds, the count the query would give were they written.
    pub fn earlier_denies(&self, d: &NewDecision, tier_changed_seq: i64) -> i64 {
        let held = (self.rows.iter())
            .filter(|r| {
                crate::records::counts_as_earlier_deny(
                    &r.decision,
                    r.event_seq,
                    d,
                    tier_changed_seq,
                )
            })
            .count();
        i64::try_from(held).unwrap_or(i64::MAX)
    }

    /// Whether a gathered decision answers retries under this request id.
    pub fn holds_request(&self, tenant_id: &str, agent_id: &str, request_id: &str) -> bool {
        self.rows.iter().any(|r| {
            r.decision.tenant_id.as_str() == tenant_id
                && r.decision.agent_id == agent_id
                && crate::requests::replay_key(&r.decision) == Some(request_id)
        })
    }

    /// Writes the gathered rows (events, decisions, receipts, request keys) in one round
    /// trip.
    pub async fn flush(&mut self, tx: &Transaction<'_>) -> StoreResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        // Columns borrow from the rows: nothing is copied but the pointers.
        let text = |f: for<'r> fn(&'r PendingDecision) -> &'r str| -> Vec<&str> {
            rows.iter().map(f).collect()
        };
        let optional =
            |f: for<'r> fn(&'r PendingDecision) -> Option<&'r str>| -> Vec<Option<&str>> {
                rows.iter().map(f).collect()
            };
        let int = |f: fn(&PendingDecision) -> i64| -> Vec<i64> { rows.iter().map(f).collect() };

        let event_seqs = int(|r| r.event_seq);
        let tenant_ids = text(|r| r.decision.tenant_id.as_str());
        let kinds = text(|_| crate::event_kind::DECISION);
        let agent_ids = text(|r| &r.decision.agent_id);
        let decision_ids = text(|r| &r.decision.id);
        let event_at = vec![self.event_at; rows.len()];
        let created_at = int(|r| r.decision.created_at_ms);
        // The payload and subject are rebuilt from the decision row when read
        // (`records::StoredEvent`).
        let insert_events = prepared(
            tx,
            "INSERT INTO events (seq, tenant_id, kind, agent_id, payload, created_at)
             SELECT seq, tenant_id, kind, agent_id, '', created_at
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                  AS e (seq, tenant_id, kind, agent_id, created_at)",
        )
        .await?;
        let events_columns: [&(dyn ToSql + Sync); 5] =
            [&event_seqs, &tenant_ids, &kinds, &agent_ids, &event_at];
        let events = tx.execute(&insert_events, &events_columns);

        let request_ids = optional(|r| r.decision.request_id.as_deref());
        let tools = text(|r| &r.decision.tool);
        let actions = text(|r| &r.decision.action);
        let resources = optional(|r| r.decision.resource.as_deref());
        let mutates_state: Vec<bool> = rows.iter().map(|r| r.decision.mutates_state).collect();
        let contained: Vec<bool> = rows.iter().map(|r| r.decision.contained).collect();
        let risks = text(|r| r.decision.risk.as_str());
        let source_trusts = text(|r| r.decision.source_trust.as_str());
        let verdicts = text(|r| r.decision.verdict.as_str());
        let risk_scores = int(|r| i64::from(r.decision.risk_score));
        let reasons = text(|r| &r.decision.reason);
        let matched_policies: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(&r.decision.matched_policies))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Corrupt(format!("matched policies: {e}")))?;
        let action_hashes = text(|r| &r.decision.action_hash);
        let run_ids = optional(|r| r.decision.trace.run_id.as_deref());
        let trace_ids = optional(|r| r.decision.trace.trace_id.as_deref());
        let parent_run_ids = optional(|r| r.decision.trace.parent_run_id.as_deref());
        let receipt_ids = text(|r| &r.receipt.body.id);
        let receipt_approvals: Vec<Option<String>> = rows
            .iter()
            .map(|r| crate::records::receipt_approval_column(&r.receipt))
            .collect::<StoreResult<_>>()?;
        let tool_definition_hashes = optional(|r| r.receipt.body.tool_definition_hash.as_deref());
        let egress: Vec<bool> = rows.iter().map(|r| r.decision.egress).collect();
        let sensitive: Vec<bool> = rows.iter().map(|r| r.decision.sensitive).collect();
        let approval_ids = optional(|r| crate::records::met_approval_id(&r.decision));
        let insert_decisions = prepared(
            tx,
            "INSERT INTO decisions (id, tenant_id, event_seq, agent_id, request_id, tool, action, resource,
                mutates_state, risk, source_trust, decision, risk_score, reason, matched_policies, action_hash,
                run_id, trace_id, parent_run_id, receipt_id, created_at, contained, receipt_approval,
                tool_definition_hash, egress, sensitive, approval_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::boolean[], $10::text[], $11::text[], $12::text[],
                                  $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                                  $19::text[], $20::text[], $21::bigint[], $22::boolean[], $23::text[],
                                  $24::text[], $25::boolean[], $26::boolean[], $27::text[])",
        )
        .await?;
        let decisions_columns: [&(dyn ToSql + Sync); 27] = [
            &decision_ids,
            &tenant_ids,
            &event_seqs,
            &agent_ids,
            &request_ids,
            &tools,
            &actions,
            &resources,
            &mutates_state,
            &risks,
            &source_trusts,
            &verdicts,
            &risk_scores,
            &reasons,
            &matched_policies,
            &action_hashes,
            &run_ids,
            &trace_ids,
            &parent_run_ids,
            &receipt_ids,
            &created_at,
            &contained,
            &receipt_approvals,
            &tool_definition_hashes,
            &egress,
            &sensitive,
            &approval_ids,
        ];
        let decisions = tx.execute(&insert_decisions, &decisions_columns);

        let receipt_seqs = int(|r| r.receipt.body.seq as i64);
        let hashes = text(|r| &r.receipt.hash);
        // The body is rebuilt from the decision row and `prev_hash` is the hash of the receipt
        // before when read (`records::StoredReceipt`, `schema::RECEIPT_PREV_HASH`).
        let insert_receipts = prepared(
            tx,
            "INSERT INTO receipts (id, tenant_id, seq, decision_id, body, hash)
             SELECT id, tenant_id, seq, decision_id, '', hash
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
                  AS r (id, tenant_id, seq, decision_id, hash)",
        )
        .await?;
        let receipts_columns: [&(dyn ToSql + Sync); 5] = [
            &receipt_ids,
            &tenant_ids,
            &receipt_seqs,
            &decision_ids,
            &hashes,
        ];
        let receipts = tx.execute(&insert_receipts, &receipts_columns);

        let keyed: Vec<&PendingDecision> = rows
            .iter()
            .filter(|r| crate::requests::replay_key(&r.decision).is_some())
            .collect();
        let keyed_text = |f: for<'r> fn(&'r PendingDecision) -> &'r str| -> Vec<&str> {
            keyed.iter().map(|r| f(r)).collect()
        };
        let key_tenants = keyed_text(|r| r.decision.tenant_id.as_str());
        let key_agents = keyed_text(|r| &r.decision.agent_id);
        let key_requests =
            keyed_text(|r| crate::requests::replay_key(&r.decision).unwrap_or_default());
        let key_decisions = keyed_text(|r| &r.decision.id);
        let insert_keys = prepared(
            tx,
            "INSERT INTO decision_requests (tenant_id, agent_id, request_id, decision_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])",
        )
        .await?;
        let keys_columns: [&(dyn ToSql + Sync); 4] =
            [&key_tenants, &key_agents, &key_requests, &key_decisions];
        let keys = async {
            if keyed.is_empty() {
                return Ok(0);
            }
            tx.execute(&insert_keys, &keys_columns).await
        };
        tokio::try_join!(
            async { events.await.map_err(StoreError::from) },
            async { decisions.await.map_err(StoreError::from) },
            async { receipts.await.map_err(StoreError::from) },
            async { keys.await.map_err(StoreError::from) },
        )?;
        Ok(())
    }
}
