//! What administering a tenant writes, once for both stores ([`crate::tx::WriteTx`]): the
//! tenant with its first admin key, and an operator key created or revoked. (Its settings
//! are `crate::settings`.)

use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{NewOperatorKey, OperatorKey, StoreError, StoreResult, TenantId, event_kind};
use serde_json::json;

/// Creates the tenant with its first admin key; `Conflict` if the id is taken.
pub(crate) async fn create_tenant(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    admin_key: &NewOperatorKey,
) -> StoreResult<OperatorKey> {
    let inserted = tx
        .execute(
            "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[
                SqlValue::text(tenant_id),
                SqlValue::int(admin_key.created_at_ms),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "tenant {tenant_id} already exists"
        )));
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::TENANT_CREATED,
        agent_id: None,
        subject_id: None,
        payload: json!({}),
    })
    .await?;
    create_key(tx, tenant_id, admin_key).await
}

/// Stores a new operator key (its secret only as a hash) with the event that records it.
pub(crate) async fn create_key(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    key: &NewOperatorKey,
) -> StoreResult<OperatorKey> {
    tx.execute(
        "INSERT INTO operator_keys (id, tenant_id, name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            SqlValue::text(&key.id),
            SqlValue::text(tenant_id),
            SqlValue::Text(key.name.as_deref()),
            SqlValue::text(key.role.as_str()),
            SqlValue::Bytes(&key.secret_hash[..]),
            SqlValue::int(key.created_at_ms),
        ],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::KEY_CREATED,
        agent_id: None,
        subject_id: Some(&key.id),
        payload: json!({"key_id": key.id, "role": key.role, "name": key.name}),
    })
    .await?;
    Ok(OperatorKey {
        id: key.id.clone(),
        tenant_id: TenantId::new(tenant_id),
        name: key.name.clone(),
        role: key.role,
        created_at_ms: key.created_at_ms,
        revoked_at_ms: None,
    })
}

/// Revokes the tenant's key at `at` (revoking it again keeps the first time) with the event
/// that records it; the key after it. Refuses to revoke the tenant's last active admin key
/// (`LastAdminKey`), which would leave it with no way to manage itself. The count and the
/// update run in the writer's transaction, so no other revoke runs between them, on any
/// replica.
pub(crate) async fn revoke_key(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    key_id: &str,
    at: i64,
) -> StoreResult<OperatorKey> {
    let (tenant, key) = (SqlValue::text(tenant_id), SqlValue::text(key_id));
    let other_admins = tx
        .query_opt(
            "SELECT (SELECT COUNT(*) FROM operator_keys o
                     WHERE o.tenant_id = k.tenant_id AND o.id <> k.id
                       AND o.role = 'admin' AND o.revoked_at IS NULL)
             FROM operator_keys k
             WHERE k.tenant_id = $1 AND k.id = $2 AND k.role = 'admin' AND k.revoked_at IS NULL",
            &[tenant, key],
            |row| row.required_int(0),
        )
        .await?;
    if other_admins == Some(0) {
        return Err(StoreError::LastAdminKey);
    }
    let changed = tx
        .execute(
            "UPDATE operator_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
            &[SqlValue::int(at), tenant, key],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound("key"));
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::KEY_REVOKED,
        agent_id: None,
        subject_id: Some(key_id),
        payload: json!({"key_id": key_id}),
    })
    .await?;
    tx.query_opt(&KEY_BY_ID, &[tenant, key], crate::rows::operator_key)
        .await?
        .ok_or(StoreError::NotFound("key"))
}

static KEY_BY_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM operator_keys WHERE tenant_id = $1 AND id = $2",
        crate::schema::KEY_COLUMNS
    )
});
