//! The administration roles ([`AdminStore`], [`TenantReads`]) for both stores at once: each
//! write runs its rule (`tenants`, `settings`, `agents`, `catalog`, `approvals`, `notify`) in
//! the writer's transaction, each read runs its SQL on a pooled read connection, through a
//! [`Backend`].

use crate::approvals::{self, ApprovalDecision, ApprovalFilter, ApprovalRecord};
use crate::backend::Backend;
use crate::schema::{KEY_COLUMNS, TENANT_COLUMNS};
use crate::tx::{ReadRows, SqlValue};
use crate::{
    AdminStore, Agent, AgentChange, CatalogChange, NewAgent, NewOperatorKey, NewWebhook,
    OperatorKey, Page, SecretHash, SettingsChange, StoreError, StoreResult, TenantId, TenantReads,
    TenantSettings, Webhook, now_ms, secrets,
};
use async_trait::async_trait;
use std::sync::LazyLock;

#[async_trait]
impl<B: Backend> TenantReads for B {
    async fn tenant(&self, tenant: &TenantId) -> StoreResult<TenantSettings> {
        static BY_ID: LazyLock<String> =
            LazyLock::new(|| format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"));
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                rows.query_opt(
                    &BY_ID,
                    &[SqlValue::text(tenant.as_str())],
                    crate::rows::tenant,
                )
                .await?
                .ok_or(StoreError::NotFound("tenant"))
            })
        })
        .await
    }
}

#[async_trait]
impl<B: Backend> AdminStore for B {
    async fn change_tenant_settings(
        &self,
        tenant: &TenantId,
        change: SettingsChange,
    ) -> StoreResult<TenantSettings> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move { crate::settings::apply(tx, tenant.as_str(), change).await })
        })
        .await
    }

    async fn create_tenant(
        &self,
        tenant: &TenantId,
        admin_key: NewOperatorKey,
    ) -> StoreResult<OperatorKey> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(
                async move { crate::tenants::create_tenant(tx, tenant.as_str(), &admin_key).await },
            )
        })
        .await
    }

    async fn create_operator_key(
        &self,
        tenant: &TenantId,
        key: NewOperatorKey,
    ) -> StoreResult<OperatorKey> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move { crate::tenants::create_key(tx, tenant.as_str(), &key).await })
        })
        .await
    }

    async fn operator_key_by_hash(
        &self,
        secret_hash: SecretHash,
    ) -> StoreResult<Option<OperatorKey>> {
        static BY_HASH: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {KEY_COLUMNS}, secret_hash FROM operator_keys WHERE secret_hash = $1")
        });
        self.run_read(move |rows| {
            Box::pin(async move {
                let found = rows
                    .query_opt(&BY_HASH, &[SqlValue::Bytes(&secret_hash)], |row| {
                        crate::rows::operator_key_if_hash_matches(row, &secret_hash)
                    })
                    .await?;
                Ok(found.flatten())
            })
        })
        .await
    }

    async fn list_operator_keys(&self, tenant: &TenantId) -> StoreResult<Vec<OperatorKey>> {
        static OF_TENANT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {KEY_COLUMNS} FROM operator_keys WHERE tenant_id = $1
                 ORDER BY created_at DESC, id DESC"
            )
        });
        self.tenant_rows(OF_TENANT.as_str(), tenant, crate::rows::operator_key)
            .await
    }

    async fn revoke_operator_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> StoreResult<OperatorKey> {
        let (tenant, key_id) = (tenant.clone(), key_id.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                crate::tenants::revoke_key(tx, tenant.as_str(), &key_id, now_ms()).await
            })
        })
        .await
    }

    async fn create_agent(&self, tenant: &TenantId, agent: NewAgent) -> StoreResult<Agent> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move { crate::agents::create_agent(tx, tenant.as_str(), &agent).await })
        })
        .await
    }

    async fn agent(&self, tenant: &TenantId, agent_id: &str) -> StoreResult<Agent> {
        let (tenant, agent_id) = (tenant.clone(), agent_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {} FROM agents WHERE tenant_id = $1 AND id = $2",
                    B::AGENT_COLUMNS
                );
                let key = [SqlValue::text(tenant.as_str()), SqlValue::text(&agent_id)];
                rows.query_opt(&sql, &key, crate::rows::agent)
                    .await?
                    .ok_or(StoreError::NotFound("agent"))
            })
        })
        .await
    }

    async fn list_agents(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Agent>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {columns} FROM agents WHERE tenant_id = $1 AND {ordinal} < $2
                     ORDER BY {ordinal} DESC LIMIT $3",
                    columns = B::AGENT_COLUMNS,
                    ordinal = B::ORDINAL,
                );
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(page.before.unwrap_or(i64::MAX)),
                    SqlValue::int(i64::from(page.limit)),
                ];
                rows.query_rows(&sql, &params, crate::rows::agent).await
            })
        })
        .await
    }

    async fn change_agent(
        &self,
        tenant: &TenantId,
        agent_id: &str,
        change: AgentChange,
    ) -> StoreResult<Agent> {
        let (tenant, agent_id) = (tenant.clone(), agent_id.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                crate::agents::change_agent(tx, tenant.as_str(), &agent_id, &change).await
            })
        })
        .await
    }

    async fn change_catalog(&self, tenant: &TenantId, change: CatalogChange) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move { change.apply(tx, tenant.as_str(), now_ms()).await })
        })
        .await
    }

    async fn approval(&self, tenant: &TenantId, approval_id: &str) -> StoreResult<ApprovalRecord> {
        let (tenant, approval_id) = (tenant.clone(), approval_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                approvals::load(rows, tenant.as_str(), &approval_id, now_ms())
                    .await?
                    .ok_or(StoreError::NotFound("approval"))
            })
        })
        .await
    }

    async fn list_approvals(
        &self,
        tenant: &TenantId,
        filter: ApprovalFilter,
    ) -> StoreResult<Vec<ApprovalRecord>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move { approvals::list(rows, tenant.as_str(), &filter, now_ms()).await })
        })
        .await
    }

    async fn decide_approval(
        &self,
        tenant: &TenantId,
        approval_id: &str,
        decision: ApprovalDecision,
    ) -> StoreResult<ApprovalRecord> {
        let (tenant, approval_id) = (tenant.clone(), approval_id.to_owned());
        self.run_rule(move |tx| {
            Box::pin(
                async move { approvals::decide(tx, tenant.as_str(), &approval_id, decision).await },
            )
        })
        .await
    }

    async fn expire_approvals(&self, now_ms: i64, limit: u32) -> StoreResult<usize> {
        self.run_rule(move |tx| Box::pin(async move { approvals::expire(tx, now_ms, limit).await }))
            .await
    }

    async fn put_slack_approver(
        &self,
        tenant: &TenantId,
        slack_user_id: &str,
        key_id: &str,
    ) -> StoreResult<()> {
        let (tenant, user, key) = (tenant.clone(), slack_user_id.to_owned(), key_id.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                approvals::put_slack_approver(tx, tenant.as_str(), &user, &key, now_ms()).await
            })
        })
        .await
    }

    async fn slack_approver(
        &self,
        tenant: &TenantId,
        slack_user_id: &str,
    ) -> StoreResult<Option<OperatorKey>> {
        let (tenant, user) = (tenant.clone(), slack_user_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let key = [SqlValue::text(tenant.as_str()), SqlValue::text(&user)];
                rows.query_opt(
                    approvals::SLACK_APPROVER_KEY,
                    &key,
                    crate::rows::operator_key,
                )
                .await
            })
        })
        .await
    }

    async fn create_webhook(&self, tenant: &TenantId, webhook: NewWebhook) -> StoreResult<Webhook> {
        let sealed = secrets::seal_new(self.secrets(), tenant, &webhook)?;
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move {
                crate::notify::create_webhook(tx, &tenant, &webhook, sealed.as_deref()).await
            })
        })
        .await
    }

    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        actor: &str,
    ) -> StoreResult<()> {
        let (tenant, id, actor) = (tenant.clone(), webhook_id.to_owned(), actor.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                crate::notify::delete_webhook(tx, &tenant, &id, &actor, now_ms()).await
            })
        })
        .await
    }
}
