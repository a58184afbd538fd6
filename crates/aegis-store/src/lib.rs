//! Durable storage for AegisAgent behind role traits (one per plane that uses it), joined in
//! [`Store`].
//!
//! Every method that touches tenant data takes a [`TenantId`] first: tenant scoping is a
//! parameter that cannot be forgotten, and the only way to get a `TenantId` in the server is
//! from an authenticated credential. State changes and the event that describes them are
//! written in one transaction; decisions are also bound to their receipt in that transaction.
//!
//! [`sqlite::SqliteStore`] is the embedded default: one dedicated writer thread that commits
//! many requests per transaction (group commit) and a small pool of read-only connections.
//! [`postgres::PgStore`] keeps the same guarantees for several gateway replicas sharing one
//! PostgreSQL database (see that module for how).

mod admin;
mod agents;
pub mod approvals;
pub mod archive;
mod backend;
mod catalog;
pub mod chain;
mod console_sessions;
mod event_log;
mod evidence;
mod fence;
pub mod mcp;
mod notify;
mod operations;
pub mod postgres;
mod receipts;
mod records;
mod requests;
mod rows;
mod schema;
mod secrets;
mod settings;
mod soc;
pub mod sqlite;
mod tenants;
mod tx;
mod types;

pub use catalog::CatalogChange;
pub use console_sessions::{ConsoleSessions, NewConsoleSession};
pub use mcp::{
    FIRST_LISTING_RISK, McpObservation, McpRegistry, McpServer, NewMcpServer, ObservedTool,
    PinStatus, STDIO_ADDRESS, ToolPin,
};
pub use operations::{ConsumerPosition, DeliveryBacklog, OperationsSnapshot};
pub use secrets::SecretsKey;
pub use settings::SettingsChange;
pub use types::*;

/// Wall-clock time in Unix milliseconds: the timestamp of every record. The one place the
/// gateway reads the clock (the core never does).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

use aegis_core::correlate::ExfiltrationReads;
use aegis_core::model::AutonomyLevel;
use aegis_core::policy::PolicyDocument;
use aegis_core::receipt::{ChainCut, Checkpoint, KeyRing, Receipt};
use async_trait::async_trait;

/// The right to run the work that only one replica may do at a time: the log consumers
/// (SOC, notifications, deliveries). [`EventLog::lead`] waits for it.
pub struct Leadership {
    lost: tokio::sync::watch::Receiver<bool>,
    /// Whatever keeps the leadership alive (a database session holding a lock); dropping it
    /// gives the leadership up.
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Leadership {
    /// Leadership that is never lost: one process owns the database (SQLite).
    pub fn sole() -> Self {
        let (keep, lost) = tokio::sync::watch::channel(false);
        // The sender lives as long as the leadership, so `lost` never fires.
        Leadership {
            lost,
            _held: Some(Box::new(keep)),
        }
    }

    /// Leadership held by `held`; `lost` turns true (or closes) when it is gone.
    pub fn held_by(
        held: Box<dyn std::any::Any + Send + Sync>,
        lost: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Leadership {
            lost,
            _held: Some(held),
        }
    }

    /// Resolves when the leadership is lost; the holder must stop its exclusive work.
    pub async fn lost(&mut self) {
        // A closed channel also means the keeper is gone.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

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
    /// The writer refuses to append to a receipt chain it cannot prove intact
    /// ([`chain`]); raised before the job writes anything.
    #[error("receipt chain broken: {0}")]
    ChainBroken(String),
    /// Revoking this key would leave its tenant without an active admin key, and so
    /// without any way to manage itself ([`AdminStore::revoke_operator_key`]).
    #[error("the tenant's last active admin key cannot be revoked")]
    LastAdminKey,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Evidence reads that answer a whole batch with one query each, so a graph, a bundle or a
/// receipt check costs the same number of queries for five decisions as for a thousand.
#[async_trait]
pub trait EvidenceReads: Send + Sync {
    /// The decisions behind an incident, newest first (`page.before` is an exclusive event
    /// seq), only those at or after `since_ms` when given. `NotFound` if the tenant has no
    /// such incident.
    async fn incident_decisions(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        since_ms: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<DecisionRecord>>;
    /// Which of these decisions are evidence of which of the tenant's incidents.
    async fn evidence_links(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<EvidenceLink>>;
    /// The response actions taken on these incidents of the tenant, in log order.
    async fn response_actions(
        &self,
        tenant: &TenantId,
        incident_ids: &[String],
    ) -> StoreResult<Vec<ResponseActionRecord>>;
    /// The tenant's receipts with these ids, in seq order (unknown ids are left out).
    async fn receipts_by_id(&self, tenant: &TenantId, ids: &[String]) -> StoreResult<Vec<Receipt>>;
    /// The tenant's receipts at these seqs, in seq order (missing seqs are left out).
    async fn receipts_at(&self, tenant: &TenantId, seqs: &[u64]) -> StoreResult<Vec<Receipt>>;
    /// The tenant's approvals requested or consumed by these decisions, in request order.
    async fn approvals_of_decisions(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<approvals::ApprovalRecord>>;
    /// The pins of the tenant's MCP servers with these names (decisions' `tool`), each with
    /// its server: what the evidence graph links an MCP call's decision to.
    async fn mcp_definitions(
        &self,
        tenant: &TenantId,
        server_names: &[String],
    ) -> StoreResult<Vec<(McpServer, ToolPin)>>;
    /// For each seq, the first checkpoint of the tenant's chain at or after it; each
    /// checkpoint once, in seq order.
    async fn covering_checkpoints(
        &self,
        tenant: &TenantId,
        seqs: &[u64],
    ) -> StoreResult<Vec<Checkpoint>>;
    /// The tenant's recorded cut, if its chain was ever archived (`archive.rs`).
    async fn chain_cut(&self, tenant: &TenantId) -> StoreResult<Option<ChainCut>>;
}

/// The event log every plane appends to and the log consumers follow, with their cursors
/// and the leadership that lets one replica run them.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Waits until this process may run the log consumers, then holds that right until the
    /// returned [`Leadership`] is dropped or reports it lost.
    async fn lead(&self) -> StoreResult<Leadership>;
    /// The backlogs an operator watches: consumer cursors and undelivered notifications
    /// (read when `/metrics` is scraped; see `operations.rs`).
    async fn operations(&self) -> StoreResult<OperationsSnapshot>;
    /// Events of one tenant with `seq > after_seq`, in order.
    async fn events(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;
    /// Appends an event that describes no stored state change (e.g. a dead token used).
    async fn record_event(
        &self,
        tenant: &TenantId,
        kind: &str,
        agent_id: Option<&str>,
        payload: serde_json::Value,
    ) -> StoreResult<i64>;
    /// Events of every tenant with `seq > after_seq`, in order: the SOC consumer's feed.
    async fn events_after(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<Event>>;
    /// Events of every tenant with `after_seq < seq <= up_to` that `kinds` selects, in order
    /// (the cache-coherence feed; the notifier's, without the allows).
    async fn events_of_kinds(
        &self,
        after_seq: i64,
        up_to: i64,
        kinds: EventKinds,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;
    /// The highest committed event seq, updated after every commit (on PostgreSQL also
    /// after other replicas' commits).
    fn committed_seq(&self) -> tokio::sync::watch::Receiver<i64>;
    /// Where the named consumer stands (0 before its first batch).
    async fn consumer_cursor(&self, consumer: &str) -> StoreResult<i64>;
}

/// A tenant's settings, which the action plane, the SOC and the notifier all apply.
#[async_trait]
pub trait TenantReads: Send + Sync {
    /// The tenant's settings; `NotFound` if there is no such tenant.
    async fn tenant(&self, tenant: &TenantId) -> StoreResult<TenantSettings>;
}

/// What deciding a tool call needs: its caller, the tenant's tools and policies, the durable
/// record of the decision, and the readiness checks that say whether it can be recorded.
#[async_trait]
pub trait ActionPlaneStore: TenantReads + Send + Sync {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Waits until every queued write is committed (graceful shutdown).
    async fn flush(&self) -> StoreResult<()>;
    /// Commits a transaction that writes, through the writer and after every write queued
    /// before it, so it fails (or waits) exactly when the writer's commits do: a full disk, a
    /// read-only database, a write lock another process holds (`/readyz`).
    async fn check_commit(&self) -> StoreResult<()>;
    /// Resolves an agent token by the SHA-256 of its secret, across tenants.
    async fn agent_by_token_hash(&self, secret_hash: SecretHash)
    -> StoreResult<Option<TokenOwner>>;
    /// The tenant's registered tool actions (its tool catalog).
    async fn tool_actions(&self, tenant: &TenantId) -> StoreResult<Vec<RegisteredToolAction>>;
    /// The tenant's policies.
    async fn policies(&self, tenant: &TenantId) -> StoreResult<Vec<PolicyDocument>>;
    /// Records a decision, its event and its receipt in one transaction, durably, before
    /// returning. Denies also feed risk-tier escalation in the same transaction.
    async fn record_decision(&self, decision: NewDecision) -> StoreResult<RecordedDecision>;
}

/// What operators manage: tenants and their settings, keys, agents, tools, policy changes,
/// webhooks and approvals.
#[async_trait]
pub trait AdminStore: TenantReads + Send + Sync {
    /// Creates a tenant with its first admin key; `Conflict` if it exists.
    async fn create_tenant(
        &self,
        tenant: &TenantId,
        admin_key: NewOperatorKey,
    ) -> StoreResult<OperatorKey>;

    /// Sets tenant columns and records the change as a `tenant.settings_changed` event, in
    /// one writer transaction; returns the settings after it. `NotFound` if there is no such
    /// tenant. The setters below are the changes (`settings.rs`); a backend only runs them.
    async fn change_tenant_settings(
        &self,
        tenant: &TenantId,
        change: SettingsChange,
    ) -> StoreResult<TenantSettings>;
    /// Sets the tenant's risk-tier escalation (`tenants.denial_threshold`,
    /// `escalation_window_minutes`).
    async fn set_risk_escalation(
        &self,
        tenant: &TenantId,
        escalation: RiskEscalation,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(tenant, SettingsChange::risk_escalation(escalation))
            .await
    }
    /// Sets or clears (`None`) `tenants.soc_autonomy_level`.
    async fn set_autonomy_override(
        &self,
        tenant: &TenantId,
        level: Option<AutonomyLevel>,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(tenant, SettingsChange::autonomy_override(level, actor))
            .await
    }
    /// Sets the tenant's deny-storm threshold and window (`tenants.deny_storm_n`,
    /// `deny_storm_window_secs`; `None` keeps the gateway's default).
    async fn set_deny_storm_override(
        &self,
        tenant: &TenantId,
        deny_storm: DenyStormOverride,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(
            tenant,
            SettingsChange::deny_storm_override(deny_storm, actor),
        )
        .await
    }
    /// Sets the tenant's per-agent token bucket (`tenants.rate_per_sec`, `rate_burst`).
    async fn set_rate_limits(
        &self,
        tenant: &TenantId,
        rate_limits: RateLimits,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(tenant, SettingsChange::rate_limits(rate_limits, actor))
            .await
    }
    /// Sets the tenant's per-agent budget of calls that change state
    /// (`tenants.mutating_per_hour`).
    async fn set_mutating_budget(
        &self,
        tenant: &TenantId,
        mutating_per_hour: Option<u32>,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(
            tenant,
            SettingsChange::mutating_budget(mutating_per_hour, actor),
        )
        .await
    }
    /// Sets `tenants.exfiltration_reads`: which actions are reads for `data_exfiltration`.
    async fn set_exfiltration_reads(
        &self,
        tenant: &TenantId,
        reads: ExfiltrationReads,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(tenant, SettingsChange::exfiltration_reads(reads, actor))
            .await
    }
    /// Sets how long the tenant's approvals stay open and how many operators must approve
    /// (`tenants.approval_ttl_secs`, `approvals_required`).
    async fn set_approval_settings(
        &self,
        tenant: &TenantId,
        settings: approvals::ApprovalSettings,
        actor: &str,
    ) -> StoreResult<TenantSettings> {
        self.change_tenant_settings(tenant, SettingsChange::approval_settings(settings, actor))
            .await
    }
    /// Sets (or clears, `None`) the tenant's retention (`tenants.retention_min_days`, read
    /// by [`archive::ChainArchive::retention_min_days`]).
    async fn set_retention_min_days(
        &self,
        tenant: &TenantId,
        min_days: Option<u32>,
        actor: &str,
    ) -> StoreResult<()> {
        self.change_tenant_settings(tenant, SettingsChange::retention(min_days, actor))
            .await
            .map(drop)
    }

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
    /// Revokes a key (revoking a revoked key changes nothing). `LastAdminKey` if it is the
    /// tenant's last active admin key: checked inside the writer's transaction, so two
    /// concurrent revokes of the last two admin keys cannot both succeed.
    async fn revoke_operator_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> StoreResult<OperatorKey>;

    async fn create_agent(&self, tenant: &TenantId, agent: NewAgent) -> StoreResult<Agent>;
    async fn agent(&self, tenant: &TenantId, agent_id: &str) -> StoreResult<Agent>;
    async fn list_agents(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Agent>>;
    /// Applies a lifecycle change and records its event; `Conflict` when the change is not
    /// allowed from the agent's current state (e.g. unfreezing a revoked agent).
    async fn change_agent(
        &self,
        tenant: &TenantId,
        agent_id: &str,
        change: AgentChange,
    ) -> StoreResult<Agent>;

    /// Applies a change to the tenant's tool actions or policies with the event that records
    /// it, in one writer transaction; whether it added something new. The methods below are
    /// the changes (`catalog.rs`); a backend only runs them.
    async fn change_catalog(&self, tenant: &TenantId, change: CatalogChange) -> StoreResult<bool>;
    /// Registers a tool's actions (inserted, or their metadata replaced).
    async fn register_tool(
        &self,
        tenant: &TenantId,
        tool: &str,
        actions: Vec<ToolAction>,
    ) -> StoreResult<()> {
        let tool = tool.to_owned();
        self.change_catalog(tenant, CatalogChange::RegisterTool { tool, actions })
            .await
            .map(drop)
    }
    /// Inserts or replaces; returns whether it was new.
    async fn put_policy(
        &self,
        tenant: &TenantId,
        policy: PolicyDocument,
        actor: &str,
    ) -> StoreResult<bool> {
        let actor = actor.to_owned();
        self.change_catalog(tenant, CatalogChange::PutPolicy { policy, actor })
            .await
    }
    /// Deletes a policy; `NotFound` if the tenant has none with this id.
    async fn delete_policy(
        &self,
        tenant: &TenantId,
        policy_id: &str,
        actor: &str,
    ) -> StoreResult<()> {
        let (policy_id, actor) = (policy_id.to_owned(), actor.to_owned());
        self.change_catalog(tenant, CatalogChange::DeletePolicy { policy_id, actor })
            .await
            .map(drop)
    }

    // Approvals (`approvals`). Statuses are as of the read: time expires approvals.
    /// One of the tenant's approvals; `NotFound` if the tenant has none with this id.
    async fn approval(
        &self,
        tenant: &TenantId,
        approval_id: &str,
    ) -> StoreResult<approvals::ApprovalRecord>;
    /// The tenant's approvals newest first (`page.before` is an exclusive `requested_seq`).
    async fn list_approvals(
        &self,
        tenant: &TenantId,
        filter: approvals::ApprovalFilter,
    ) -> StoreResult<Vec<approvals::ApprovalRecord>>;
    /// Applies an operator's approval or rejection with its event, under the rules of
    /// `aegis_core::approval`, in the writer's transaction (so concurrent votes are
    /// serialised); `Conflict` when the rules refuse it.
    async fn decide_approval(
        &self,
        tenant: &TenantId,
        approval_id: &str,
        decision: approvals::ApprovalDecision,
    ) -> StoreResult<approvals::ApprovalRecord>;
    /// Stores `expired` on up to `limit` approvals whose time ran out, each with its
    /// `approval.expired` event, in one transaction; returns how many.
    async fn expire_approvals(&self, now_ms: i64, limit: u32) -> StoreResult<usize>;

    /// Lets a Slack user of the tenant decide approvals as the operator key `key_id`
    /// (replacing the user's earlier key).
    async fn put_slack_approver(
        &self,
        tenant: &TenantId,
        slack_user_id: &str,
        key_id: &str,
    ) -> StoreResult<()>;
    /// The operator key a Slack user of the tenant acts as, if one was registered.
    async fn slack_approver(
        &self,
        tenant: &TenantId,
        slack_user_id: &str,
    ) -> StoreResult<Option<OperatorKey>>;
    async fn create_webhook(&self, tenant: &TenantId, webhook: NewWebhook) -> StoreResult<Webhook>;
    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        actor: &str,
    ) -> StoreResult<()>;
}

/// What the SOC consumer and the incident views need: its batches, correlator states,
/// alerts, incidents and their narratives.
#[async_trait]
pub trait SocStore: EventLog + TenantReads + Send + Sync {
    /// Applies a consumer's findings and advances its cursor in one transaction.
    /// Incidents whose dedup key exists are skipped with their responses, so replays and
    /// concurrent consumers produce nothing twice.
    async fn apply_soc_batch(&self, batch: SocBatch) -> StoreResult<SocApplied>;
    /// Every saved correlator state (one per agent seen).
    async fn correlator_states(&self) -> StoreResult<Vec<CorrelatorStateRecord>>;
    async fn list_alerts(
        &self,
        tenant: &TenantId,
        filter: AlertFilter,
    ) -> StoreResult<Vec<AlertRecord>>;
    async fn list_incidents(
        &self,
        tenant: &TenantId,
        filter: IncidentFilter,
    ) -> StoreResult<Vec<IncidentRecord>>;
    async fn incident(&self, tenant: &TenantId, incident_id: &str) -> StoreResult<IncidentDetail>;
    /// Acknowledge, close, or apply the recommendation; returns the incident and the agent
    /// when the step changed it. Invalid transitions are `Conflict`.
    async fn step_incident(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        step: IncidentStep,
        actor: &str,
    ) -> StoreResult<(IncidentDetail, Option<Agent>)>;
    /// Keeps the latest narrative of an incident (replacing the previous one).
    async fn put_narrative(&self, tenant: &TenantId, narrative: NarrativeRecord)
    -> StoreResult<()>;
    async fn narrative(
        &self,
        tenant: &TenantId,
        incident_id: &str,
    ) -> StoreResult<Option<NarrativeRecord>>;
}

/// What the notifier and the delivery worker need: queued deliveries, coalescing state and
/// the webhooks they deliver to.
#[async_trait]
pub trait NotificationStore: EventLog + TenantReads + Send + Sync {
    /// Queues deliveries, saves coalescing state and advances the consumer's cursor in one
    /// transaction.
    async fn apply_notify_batch(&self, batch: NotifyBatch) -> StoreResult<()>;
    /// Every saved coalescing state.
    async fn coalesce_states(&self) -> StoreResult<Vec<CoalesceRecord>>;
    /// Claims due pending deliveries for the delivery worker, shared fairly between tenants
    /// (see `records::fair_claim`): at most `claim.limit`, none of `claim.in_flight`, and no
    /// tenant above `claim.per_tenant` in flight. The caller starts every delivery returned.
    /// PostgreSQL also leases them for a minute, so two replicas never send one at once;
    /// SQLite's one process relies on `in_flight`.
    async fn claim_deliveries(&self, claim: DeliveryClaim) -> StoreResult<Vec<Delivery>>;
    /// Records the outcome of one delivery attempt.
    async fn finish_delivery(&self, id: &str, outcome: DeliveryOutcome) -> StoreResult<()>;
    /// Postpones pending deliveries without counting an attempt (paused endpoint), in one
    /// write.
    async fn defer_deliveries(&self, ids: Vec<String>, next_attempt_at_ms: i64) -> StoreResult<()>;
    /// Queues one delivery outside the consumer (test deliveries).
    async fn enqueue_delivery(&self, delivery: NewDelivery) -> StoreResult<()>;
    /// The tenant's deliveries to `sink`, newest first, without their bodies: a row whose
    /// body does not read still lists.
    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        sink: &str,
        page: Page,
    ) -> StoreResult<Vec<DeliverySummary>>;
    /// The tenant's live (not deleted) subscriptions.
    async fn list_webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<Webhook>>;
    /// A live subscription by id, in any tenant (the delivery worker's lookup).
    async fn webhook_by_id(&self, webhook_id: &str) -> StoreResult<Option<Webhook>>;
    /// The signing secret of one of the tenant's live subscriptions, opened with the
    /// secrets key; `Corrupt` when it does not decrypt for this row.
    async fn webhook_signing_secret(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
    ) -> StoreResult<Option<String>>;
}

/// Decisions and the receipt chains that bind them: reading, auditing, closing a broken
/// chain, and the heads this process signed (for anchoring).
#[async_trait]
pub trait ReceiptStore: EventLog + Send + Sync {
    async fn decision(&self, tenant: &TenantId, decision_id: &str) -> StoreResult<DecisionRecord>;
    async fn list_decisions(
        &self,
        tenant: &TenantId,
        filter: DecisionFilter,
    ) -> StoreResult<Vec<DecisionRecord>>;

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
    /// Verifies a stretch of the tenant's chain against `keys`, reading receipts and
    /// checkpoints from one consistent snapshot (so a chain being extended meanwhile is
    /// never seen half-written).
    async fn audit_chain(
        &self,
        tenant: &TenantId,
        walk: chain::ChainWalk,
        keys: &KeyRing,
    ) -> StoreResult<chain::ChainAudit>;
    /// Closes the tenant's chain until the process restarts: every decision of the tenant
    /// fails with `ChainBroken` (the gateway answers 503) instead of extending a chain found
    /// broken.
    async fn close_chain(&self, tenant: &TenantId) -> StoreResult<()>;
    /// The last checkpoint this process signed, per chain it extended (the anchors kept
    /// outside the database).
    fn signed_heads(&self) -> Vec<Checkpoint>;

    /// One receipt of the tenant's chain by id.
    async fn receipt(&self, tenant: &TenantId, receipt_id: &str) -> StoreResult<Receipt>;
    /// Receipts of the tenant's chain newest first; `page.before` is an exclusive `seq`.
    async fn receipts_newest(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Receipt>>;
    /// Checkpoints of the tenant's chain with `seq >= from_seq`, in order (the first one
    /// covers the receipt at `from_seq`).
    async fn checkpoints_from(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>>;
}
/// The whole storage contract, every role above, for what really needs all of it (the
/// server's state, the binary that wires the planes together). The SQLite and PostgreSQL
/// stores implement each role; this union follows.
pub trait Store:
    EventLog
    + TenantReads
    + ActionPlaneStore
    + AdminStore
    + SocStore
    + NotificationStore
    + ReceiptStore
    + EvidenceReads
    + McpRegistry
    + ConsoleSessions
    + archive::ChainArchive
    + 'static
{
}

impl<T> Store for T where
    T: EventLog
        + TenantReads
        + ActionPlaneStore
        + AdminStore
        + SocStore
        + NotificationStore
        + ReceiptStore
        + EvidenceReads
        + McpRegistry
        + ConsoleSessions
        + archive::ChainArchive
        + 'static
{
}
