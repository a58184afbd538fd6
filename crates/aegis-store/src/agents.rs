//! What registering or changing an agent writes, once for both stores
//! ([`crate::tx::WriteTx`]): a new agent with its token, an operator's freeze, unfreeze, revoke, token rotation, tier or rate-limit change, and the
//! SOC's automatic responses, which are the same changes made by the response engine.

use crate::records;
use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{Agent, AgentChange, AgentChangeKind, NewAgent, StoreResult, event_kind};
use serde_json::json;

/// Registers the agent, active, with its first token (stored only as a hash) and the event
/// that records it; the agent as stored.
pub(crate) async fn create_agent(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    agent: &NewAgent,
) -> StoreResult<Agent> {
    let (tenant, id, at) = (
        SqlValue::text(tenant_id),
        SqlValue::text(&agent.id),
        SqlValue::int(agent.created_at_ms),
    );
    tx.execute(
        "INSERT INTO agents (id, tenant_id, name, status, risk_tier, created_at, updated_at)
         VALUES ($1, $2, $3, 'active', $4, $5, $5)",
        &[
            id,
            tenant,
            SqlValue::text(&agent.name),
            SqlValue::text(agent.risk_tier.as_str()),
            at,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO agent_tokens (secret_hash, tenant_id, agent_id, created_at) VALUES ($1, $2, $3, $4)",
        &[SqlValue::Bytes(&agent.token_hash[..]), tenant, id, at],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::AGENT_CREATED,
        agent_id: Some(&agent.id),
        subject_id: Some(&agent.id),
        payload: json!({"name": agent.name, "risk_tier": agent.risk_tier, "actor": agent.actor}),
    })
    .await?;
    tx.load_agent(tenant_id, &agent.id).await
}

/// Applies `change` to the tenant's agent with the event that records it; the agent after
/// it. A change that would not change anything (freezing a frozen agent) writes nothing; any
/// change to a revoked agent is a `Conflict` ([`records::agent_change_applies`]).
pub(crate) async fn change_agent(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    agent_id: &str,
    change: &AgentChange,
) -> StoreResult<Agent> {
    let agent = tx.load_agent(tenant_id, agent_id).await?;
    if !records::agent_change_applies(&agent, change)? {
        return Ok(agent);
    }
    let at = SqlValue::int(change.at_ms);
    let id = SqlValue::text(agent_id);
    let (kind, payload) = records::agent_change_event(&agent, change);
    // The tier change's own seq marks where escalation counting restarts, so the event
    // comes first.
    let seq = tx
        .append_event(EventDraft {
            tenant_id,
            kind,
            agent_id: Some(agent_id),
            subject_id: Some(agent_id),
            payload,
        })
        .await?;
    match &change.kind {
        AgentChangeKind::Freeze { reason } => {
            tx.execute(
                "UPDATE agents SET status = 'frozen', status_reason = $1, updated_at = $2 WHERE id = $3",
                &[SqlValue::text(reason), at, id],
            )
            .await?;
        }
        AgentChangeKind::Unfreeze => {
            tx.execute(
                "UPDATE agents SET status = 'active', status_reason = NULL, updated_at = $1 WHERE id = $2",
                &[at, id],
            )
            .await?;
        }
        AgentChangeKind::Revoke { reason } => {
            tx.execute(
                "UPDATE agents SET status = 'revoked', status_reason = $1, updated_at = $2 WHERE id = $3",
                &[SqlValue::Text(reason.as_deref()), at, id],
            )
            .await?;
            retire_tokens(tx, at, id).await?;
        }
        AgentChangeKind::RotateToken { new_token_hash } => {
            retire_tokens(tx, at, id).await?;
            tx.execute(
                "INSERT INTO agent_tokens (secret_hash, tenant_id, agent_id, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    SqlValue::Bytes(&new_token_hash[..]),
                    SqlValue::text(tenant_id),
                    id,
                    at,
                ],
            )
            .await?;
            tx.execute("UPDATE agents SET updated_at = $1 WHERE id = $2", &[at, id])
                .await?;
        }
        AgentChangeKind::SetRiskTier { risk_tier } => {
            tx.execute(
                "UPDATE agents SET risk_tier = $1, risk_tier_changed_seq = $2, updated_at = $3 WHERE id = $4",
                &[SqlValue::text(risk_tier.as_str()), SqlValue::int(seq), at, id],
            )
            .await?;
        }
        AgentChangeKind::SetRateLimits { rate_limits } => {
            tx.execute(
                "UPDATE agents SET rate_per_sec = $1, rate_burst = $2, updated_at = $3 WHERE id = $4",
                &[
                    SqlValue::Int(rate_limits.per_sec.map(i64::from)),
                    SqlValue::Int(rate_limits.burst.map(i64::from)),
                    at,
                    id,
                ],
            )
            .await?;
        }
    }
    tx.load_agent(tenant_id, agent_id).await
}

/// Retires the agent's current token: it no longer authenticates from `at` on.
async fn retire_tokens(
    tx: &mut impl WriteTx,
    at: SqlValue<'_>,
    agent_id: SqlValue<'_>,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE agent_tokens SET retired_at = $1 WHERE agent_id = $2 AND retired_at IS NULL",
        &[at, agent_id],
    )
    .await?;
    Ok(())
}
