//! Retries of one tool call. An agent that repeats a call with the same `request_id` (a
//! client retrying after a lost answer, a timeout or a 503) gets the decision recorded the
//! first time, with its receipt, and nothing is recorded again.
//!
//! The check runs in the writer's transaction, behind the freshness fence, where writes are
//! serial (SQLite: the one writer; PostgreSQL: the `log_head` lock), so two concurrent
//! retries cannot both record; the primary key of `decision_requests` backs that up. It never
//! bypasses containment: the route decides every call afresh first, so a frozen agent's
//! retry, or one decided from an agent changed since, is a containment refusal
//! (`contained`), which is never answered from an earlier decision and is recorded anew (a
//! revoked agent's token is refused before any of this, with a 401). A `request_id` reused
//! for a different call (another action hash) is refused as a conflict.
//!
//! A retry of a call that met an approval (a `require_approval` waiting on one, an allow that
//! used one) is answered with that approval as it stands now, so a client whose first answer
//! was lost still learns which approval to wait for.
//!
//! Cost: nothing for a call without `request_id`; with one, one lookup over primary keys in
//! the writer's transaction (PostgreSQL: one round trip under the batch lock) and one row
//! in `decision_requests` (PostgreSQL: sent with the batch's decision rows); a retry that
//! met an approval reads it by primary key.

use crate::approvals::{ApprovalAnswer, ApprovalRecord};
use crate::{NewDecision, PriorDecision, RecordedDecision, StoreError, StoreResult};

/// The decision recorded for `(tenant_id, agent_id, request_id)`, with its receipt.
pub(crate) static PRIOR_DECISION_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT d.id, d.decision, d.risk_score, d.reason, d.matched_policies, d.action_hash,
                d.event_seq, r.id, r.seq, r.hash, r.body, e.payload,
                {RECEIPT_PREV_HASH}, d.receipt_approval, d.approval_id
             FROM decision_requests q
             JOIN decisions d ON d.id = q.decision_id
             JOIN receipts r ON r.id = d.receipt_id
             JOIN events e ON e.seq = d.event_seq
             WHERE q.tenant_id = $1 AND q.agent_id = $2 AND q.request_id = $3",
            RECEIPT_PREV_HASH = crate::schema::RECEIPT_PREV_HASH
        )
    });

/// Keys a recorded decision by its request id.
pub(crate) const REMEMBER_SQL: &str = "INSERT INTO decision_requests (tenant_id, agent_id, request_id, decision_id) VALUES ($1, $2, $3, $4)";

/// The request id a decision answers retries under, once decided and fenced: none without
/// one, and none for a containment refusal or a rate limit's or budget's deny, which every
/// retry must meet afresh.
pub(crate) fn replay_key(d: &NewDecision) -> Option<&str> {
    if d.contained || d.throttled {
        None
    } else {
        d.request_id.as_deref()
    }
}

/// One row of [`PRIOR_DECISION_SQL`], as either backend reads it.
pub(crate) struct PriorRow {
    pub decision_id: String,
    pub verdict: String,
    pub risk_score: i64,
    pub reason: String,
    pub matched_policies: String,
    pub action_hash: String,
    pub event_seq: i64,
    pub receipt_id: String,
    pub receipt_seq: i64,
    pub receipt_hash: String,
    /// The stored body of a receipt written before bodies were rebuilt from the decision
    /// row (`records::StoredReceipt`); `""` since, and then the two columns below hold what
    /// a retry's answer needs of it.
    pub receipt_body: String,
    /// The payload of a decision event written before it was rebuilt from the decision row
    /// (`records::StoredEvent`), which names the approval the decision met; `""` since, and
    /// then `approval_id` names it.
    pub event_payload: String,
    pub receipt_prev_hash: String,
    /// The approval the decision consumed, JSON.
    pub receipt_approval: Option<String>,
    pub approval_id: Option<String>,
}

impl PriorRow {
    /// Reads a row of [`PRIOR_DECISION_SQL`].
    pub(crate) fn read(row: &(impl crate::schema::StoredRow + ?Sized)) -> StoreResult<Self> {
        Ok(PriorRow {
            decision_id: row.required_text(0)?,
            verdict: row.required_text(1)?,
            risk_score: row.required_int(2)?,
            reason: row.required_text(3)?,
            matched_policies: row.required_text(4)?,
            action_hash: row.required_text(5)?,
            event_seq: row.required_int(6)?,
            receipt_id: row.required_text(7)?,
            receipt_seq: row.required_int(8)?,
            receipt_hash: row.required_text(9)?,
            receipt_body: row.required_text(10)?,
            event_payload: row.required_text(11)?,
            receipt_prev_hash: row.required_text(12)?,
            receipt_approval: row.text(13)?,
            approval_id: row.text(14)?,
        })
    }

    /// The approval the first call met (asked for or used), which the backend reads for
    /// [`PriorRow::answer`].
    pub(crate) fn approval_id(&self) -> StoreResult<Option<String>> {
        if self.event_payload.is_empty() {
            return Ok(self.approval_id.clone());
        }
        let event: serde_json::Value = serde_json::from_str(&self.event_payload).map_err(|e| {
            StoreError::Corrupt(format!("decision {}: event: {e}", self.decision_id))
        })?;
        Ok(event["approval_id"].as_str().map(str::to_owned))
    }

    /// The answer to `retry`: the stored decision, when it was made for the same call, with
    /// the `approval` it met as that stands now.
    pub(crate) fn answer(
        self,
        retry: &NewDecision,
        approval: Option<ApprovalRecord>,
    ) -> StoreResult<RecordedDecision> {
        if self.action_hash != retry.action_hash {
            return Err(StoreError::Conflict(format!(
                "request_id {:?} was already used for a different tool call (decision {}); use a new request_id for a new call",
                retry.request_id.as_deref().unwrap_or_default(),
                self.decision_id
            )));
        }
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("decision {}: {what}: {e}", self.decision_id))
        };
        let (prev_hash, consumed) = if self.receipt_body.is_empty() {
            let consumed: Option<aegis_core::receipt::ReceiptApproval> = self
                .receipt_approval
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("receipt approval", &e))?;
            (self.receipt_prev_hash, consumed)
        } else {
            let body: aegis_core::receipt::ReceiptBody =
                serde_json::from_str(&self.receipt_body)
                    .map_err(|e| corrupt("receipt body", &e))?;
            (body.prev_hash, body.approval)
        };
        let verdict = self
            .verdict
            .parse()
            .map_err(|_| corrupt("decision", &self.verdict))?;
        let risk_score = u8::try_from(self.risk_score).map_err(|e| corrupt("risk_score", &e))?;
        let matched_policies: Vec<String> = serde_json::from_str(&self.matched_policies)
            .map_err(|e| corrupt("matched_policies", &e))?;
        let receipt_seq =
            u64::try_from(self.receipt_seq).map_err(|e| corrupt("receipt seq", &e))?;
        Ok(RecordedDecision {
            event_seq: self.event_seq,
            receipt_id: self.receipt_id,
            receipt_seq,
            receipt_hash: self.receipt_hash,
            prev_hash,
            escalated_to: None,
            stale_agent: None,
            // A retry creates and uses no approval: it is shown the one its first call met,
            // and the receipt says whether that call used it.
            approval: approval.map(|approval| ApprovalAnswer {
                approval: approval.reference(),
                consumed,
            }),
            verdict,
            reason: self.reason.clone(),
            matched_policies: matched_policies.clone(),
            replayed: Some(PriorDecision {
                decision_id: self.decision_id,
                verdict,
                risk_score,
                reason: self.reason,
                matched_policies,
            }),
        })
    }
}
