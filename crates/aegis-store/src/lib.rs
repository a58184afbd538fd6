//! Durable storage for AegisAgent behind one trait, [`Store`].
//!
//! Every method that touches tenant data takes a [`TenantId`] first: tenant scoping is a
//! parameter that cannot be forgotten, and the only way to get a `TenantId` in the server is
//! from an authenticated credential. State changes and the event that describes them are
//! written in one transaction; decisions are also bound to their receipt in that transaction.
//!
//! [`sqlite::SqliteStore`] is the embedded default: one dedicated writer thread that commits
//! many requests per transaction (group commit) and a small pool of read-only connections.

pub mod sqlite;
mod types;

pub use types::*;

use aegis_core::policy::PolicyDocument;
use aegis_core::receipt::{Checkpoint, Receipt};
use async_trait::async_trait;

/// Errors a store reports; the server maps each to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage contract shared by the SQLite and PostgreSQL implementations.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Waits until every queued write is committed (graceful shutdown).
    async fn flush(&self) -> StoreResult<()>;

    // Tenants.
    /// Creates a tenant with its first admin key; `Conflict` if it exists.
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        admin_key: NewOperatorKey,
    ) -> StoreResult<OperatorKey>;
    async fn tenant(&self, tenant: &TenantId) -> StoreResult<TenantSettings>;
    async fn set_risk_escalation(
        &self,
        tenant: &TenantId,
        escalation: RiskEscalation,
    ) -> StoreResult<TenantSettings>;

    // Operator keys.
    async fn create_operator_key(
        &self,
        tenant: &TenantId,
        key: NewOperatorKey,
    ) -> StoreResult<OperatorKey>;
    /// Looks a key up by the SHA-256 of its secret, across tenants (the key names its tenant).
    async fn operator_key_by_hash(
        &self,
        secret_hash: SecretHash,
    ) -> StoreResult<Option<OperatorKey>>;
    async fn list_operator_keys(&self, tenant: &TenantId) -> StoreResult<Vec<OperatorKey>>;
    async fn revoke_operator_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> StoreResult<OperatorKey>;

    // Agents.
    async fn create_agent(&self, tenant: &TenantId, agent: NewAgent) -> StoreResult<Agent>;
    async fn agent(&self, tenant: &TenantId, agent_id: &str) -> StoreResult<Agent>;
    async fn list_agents(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Agent>>;
    /// Resolves an agent token by the SHA-256 of its secret, across tenants.
    async fn agent_by_token_hash(&self, secret_hash: SecretHash)
    -> StoreResult<Option<TokenOwner>>;
    /// Applies a lifecycle change and records its event; `Conflict` when the change is not
    /// allowed from the agent's current state (e.g. unfreezing a revoked agent).
    async fn change_agent(
        &self,
        tenant: &TenantId,
        agent_id: &str,
        change: AgentChange,
    ) -> StoreResult<Agent>;

    // Tools.
    async fn register_tool(
        &self,
        tenant: &TenantId,
        tool: &str,
        actions: Vec<ToolAction>,
    ) -> StoreResult<()>;
    async fn tool_actions(&self, tenant: &TenantId) -> StoreResult<Vec<RegisteredToolAction>>;

    // Policies.
    async fn policies(&self, tenant: &TenantId) -> StoreResult<Vec<PolicyDocument>>;
    /// Inserts or replaces; returns whether it was new.
    async fn put_policy(
        &self,
        tenant: &TenantId,
        policy: PolicyDocument,
        actor: &str,
    ) -> StoreResult<bool>;
    async fn delete_policy(
        &self,
        tenant: &TenantId,
        policy_id: &str,
        actor: &str,
    ) -> StoreResult<()>;

    // Decisions.
    /// Records a decision, its event and its receipt in one transaction, durably, before
    /// returning. Denies also feed risk-tier escalation in the same transaction.
    async fn record_decision(&self, decision: NewDecision) -> StoreResult<RecordedDecision>;
    async fn decision(&self, tenant: &TenantId, decision_id: &str) -> StoreResult<DecisionRecord>;
    async fn list_decisions(
        &self,
        tenant: &TenantId,
        filter: DecisionFilter,
    ) -> StoreResult<Vec<DecisionRecord>>;

    // Receipts.
    /// Tenants that have a receipt chain.
    async fn receipt_tenants(&self) -> StoreResult<Vec<TenantId>>;
    /// Receipts of one tenant's chain with `seq > after_seq`, in order.
    async fn receipts(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Receipt>>;
    async fn checkpoints(&self, tenant: &TenantId) -> StoreResult<Vec<Checkpoint>>;
    /// Every public key that ever signed a checkpoint, by key id.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;

    // Event log.
    /// Events of one tenant with `seq > after_seq`, in order.
    async fn events(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;
}
