//! What registering a tool and putting or deleting a policy write, once for both stores
//! ([`crate::tx::WriteTx`]): the rows, what is refused, and the event that records each. A
//! backend only runs a [`CatalogChange`] in its writer transaction
//! ([`crate::AdminStore::change_catalog`]).

use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{PolicyDocument, StoreError, StoreResult, ToolAction, event_kind};
use aegis_core::canonical::sha256_hex;
use serde_json::json;

/// A change to what a tenant's agents may call: its tool actions and its policies.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    RegisterTool {
        tool: String,
        actions: Vec<ToolAction>,
    },
    PutPolicy {
        policy: PolicyDocument,
        actor: String,
    },
    DeletePolicy {
        policy_id: String,
        actor: String,
    },
}

impl CatalogChange {
    /// Applies the change to the tenant's catalog in `tx`, at `at`; whether it added
    /// something new (a policy id the tenant did not have).
    pub(crate) async fn apply(
        &self,
        tx: &mut impl WriteTx,
        tenant_id: &str,
        at: i64,
    ) -> StoreResult<bool> {
        match self {
            CatalogChange::RegisterTool { tool, actions } => {
                register_tool(tx, tenant_id, tool, actions, at).await?;
                Ok(false)
            }
            CatalogChange::PutPolicy { policy, actor } => {
                put_policy(tx, tenant_id, policy, actor, at).await
            }
            CatalogChange::DeletePolicy { policy_id, actor } => {
                delete_policy(tx, tenant_id, policy_id, actor).await?;
                Ok(false)
            }
        }
    }
}

/// Registers (or re-registers) `actions` of `tool`: each is inserted or has its metadata
/// replaced; one `tool.registered` event records them all.
async fn register_tool(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    tool: &str,
    actions: &[ToolAction],
    at: i64,
) -> StoreResult<()> {
    for action in actions {
        tx.execute(
            "INSERT INTO tool_actions (tenant_id, tool, action, mutates_state, risk, egress, sensitive, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, tool, action) DO UPDATE
             SET mutates_state = excluded.mutates_state, risk = excluded.risk, egress = excluded.egress,
                 sensitive = excluded.sensitive, updated_at = excluded.updated_at",
            &[
                SqlValue::text(tenant_id),
                SqlValue::text(tool),
                SqlValue::text(&action.action),
                SqlValue::Bool(action.mutates_state),
                SqlValue::text(action.risk.as_str()),
                SqlValue::Bool(action.egress),
                SqlValue::Bool(action.sensitive),
                SqlValue::int(at),
            ],
        )
        .await?;
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::TOOL_REGISTERED,
        agent_id: None,
        subject_id: Some(tool),
        payload: json!({"tool": tool, "actions": actions}),
    })
    .await?;
    Ok(())
}

/// Puts `policy` (a new id, or new text for an existing one); whether it is new. The event
/// names the policy and the SHA-256 of its text, not the text.
async fn put_policy(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    policy: &PolicyDocument,
    actor: &str,
    at: i64,
) -> StoreResult<bool> {
    let key = [SqlValue::text(tenant_id), SqlValue::text(&policy.id)];
    let existed = tx
        .query_opt(
            "SELECT 1 FROM policies WHERE tenant_id = $1 AND id = $2",
            &key,
            |_| Ok(()),
        )
        .await?
        .is_some();
    tx.execute(
        "INSERT INTO policies (tenant_id, id, text, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, id) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
        &[key[0], key[1], SqlValue::text(&policy.text), SqlValue::int(at)],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::POLICY_PUT,
        agent_id: None,
        subject_id: Some(&policy.id),
        payload: json!({
            "policy_id": policy.id,
            "actor": actor,
            "sha256": sha256_hex(policy.text.as_bytes()),
        }),
    })
    .await?;
    Ok(!existed)
}

/// Deletes the tenant's policy `policy_id`; `NotFound` if it has none.
async fn delete_policy(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    policy_id: &str,
    actor: &str,
) -> StoreResult<()> {
    let deleted = tx
        .execute(
            "DELETE FROM policies WHERE tenant_id = $1 AND id = $2",
            &[SqlValue::text(tenant_id), SqlValue::text(policy_id)],
        )
        .await?;
    if deleted == 0 {
        return Err(StoreError::NotFound("policy"));
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::POLICY_DELETED,
        agent_id: None,
        subject_id: Some(policy_id),
        payload: json!({"policy_id": policy_id, "actor": actor}),
    })
    .await?;
    Ok(())
}
