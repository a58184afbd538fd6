//! Shared state of the gateway and the in-memory views that keep `/v1/authorize` free of
//! database reads: the agent directory (token hash → agent) and, per tenant, the compiled
//! policy engine, the tool catalog and the escalation settings. The Cedar entities a decision
//! needs live in these views too, built once with what they describe and dropped with it: an
//! agent's in its snapshot, a registered tool action's in the catalog.
//!
//! The database stays the source of truth. Every change made through this process updates
//! these views right after its commit; changes committed by other replicas reach them through
//! the event log ([`crate::coherence`]); a view loaded from the database never overwrites a
//! newer change (see [`AgentDirectory::insert`]). A changed agent is dropped from the
//! directory, never written into it, so the directory holds only rows read from the database
//! after their last change.

use crate::live_feed::LiveFeed;
use crate::rate_limit::{budget_quota, rate_quota};
use crate::telemetry::{DecisionCounters, TenantLabels};
use aegis_core::decision::RegisteredAction;
use aegis_core::policy::{PolicyEngine, PolicyPrincipal, PolicyResource};
use aegis_mcp::rmcp_http::{LocalSessionManager, StreamableHttpService};
use aegis_store::{
    ActionPlaneStore, Agent, RiskEscalation, SecretHash, Store, StoreError, StoreResult, TenantId,
};
use arc_swap::ArcSwap;
use governor::Quota;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub type SharedState = Arc<AppState>;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// `AEGIS_SOC_AUTONOMY_LEVEL`, when set: the level of tenants without an override.
    pub env_autonomy: Option<aegis_core::model::AutonomyLevel>,
    /// `AEGIS_WEBHOOK_ALLOW_PRIVATE`: webhook subscriptions may target internal addresses.
    pub webhook_allow_private: bool,
    /// `AEGIS_NARRATOR_*`: the optional LLM narrator of `GET /v1/incidents/{id}/narrate`.
    pub narrator: Option<crate::evidence::NarratorConfig>,
    /// `AEGIS_WS_MAX_PER_KEY`, `AEGIS_WS_MAX_PER_TENANT`: caps of the live feed.
    pub live_feed: crate::live_feed::FeedSettings,
    /// `AEGIS_PUBLIC_URL`, else `http://` and the listen address: where operators reach the
    /// gateway, as written in incident narratives' next-step commands (no trailing `/`).
    pub public_url: String,
    /// `AEGIS_MCP_*`: limits of MCP gateway mode (`/mcp/{server}`).
    pub mcp: aegis_mcp::McpSettings,
    /// `AEGIS_SLACK_SIGNING_SECRET`: authenticates Slack's button clicks
    /// (`POST /v1/callbacks/slack`, which answers 404 without it).
    pub slack_signing_secret: Option<String>,
    /// The installed Prometheus recorder, when `GET /metrics` on this listener serves it
    /// (none: 404, as without `AEGIS_METRICS` or with `AEGIS_METRICS_LISTEN`).
    pub metrics: Option<Arc<crate::telemetry::Metrics>>,
    /// `AEGIS_METRICS_MAX_TENANTS`: tenants labelled by name in metrics (see
    /// [`crate::telemetry::TenantLabels`]).
    pub metrics_max_tenants: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 1 << 20,
            env_autonomy: None,
            webhook_allow_private: false,
            narrator: None,
            live_feed: crate::live_feed::FeedSettings::default(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            mcp: aegis_mcp::McpSettings::default(),
            slack_signing_secret: None,
            metrics: None,
            metrics_max_tenants: crate::telemetry::DEFAULT_MAX_TENANT_LABELS,
        }
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub agents: AgentDirectory,
    pub tenants: TenantRuntimes,
    pub dead_tokens: DeadTokenLog,
    /// The agents' rate and budget buckets ([`crate::rate_limit`]).
    pub limiters: crate::rate_limit::Limiters,
    /// Fans committed events out to the live feed's sessions.
    pub live_feed: Arc<LiveFeed>,
    /// MCP gateway mode: the MCP server and its streamable-HTTP transport.
    pub mcp: crate::mcp_gateway::Gateway,
    pub mcp_http: StreamableHttpService<crate::mcp_gateway::Gateway, LocalSessionManager>,
    pub settings: Settings,
}

/// Throttles `auth.dead_token` events: a client retrying a dead token in a loop must not
/// turn each 401 into a write.
#[derive(Default)]
pub struct DeadTokenLog {
    last_recorded: parking_lot::Mutex<HashMap<String, i64>>,
}

impl DeadTokenLog {
    const INTERVAL_MS: i64 = 10_000;
    const MAX_TRACKED: usize = 10_000;

    /// Whether to record a dead-token event for `agent_id` now.
    pub fn should_record(&self, agent_id: &str, now_ms: i64) -> bool {
        let mut last = self.last_recorded.lock();
        if last
            .get(agent_id)
            .is_some_and(|at| now_ms - at < Self::INTERVAL_MS)
        {
            return false;
        }
        if last.len() >= Self::MAX_TRACKED {
            last.retain(|_, at| now_ms - *at < Self::INTERVAL_MS);
        }
        last.insert(agent_id.to_owned(), now_ms);
        true
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> SharedState {
        let head = *store.committed_seq().borrow();
        Arc::new_cyclic(|state| {
            let mcp = crate::mcp_gateway::Gateway::new(
                Arc::clone(&store),
                crate::mcp_gateway::ServerGate(state.clone()),
                settings.mcp.clone(),
            );
            AppState {
                live_feed: LiveFeed::new(head, settings.live_feed),
                store,
                agents: AgentDirectory::default(),
                tenants: TenantRuntimes::new(TenantLabels::new(settings.metrics_max_tenants)),
                dead_tokens: DeadTokenLog::default(),
                limiters: crate::rate_limit::Limiters::default(),
                mcp_http: mcp.http_service(),
                mcp,
                settings,
            }
        })
    }
}

/// An agent as the authorize path sees it.
#[derive(Debug)]
pub struct AgentSnapshot {
    pub agent: Agent,
    pub token_hash: SecretHash,
    /// The agent as policies see it, built from `agent` once per snapshot.
    pub principal: PolicyPrincipal,
    /// The agent's own token bucket, in place of its tenant's.
    pub rate: Option<Quota>,
}

impl AgentSnapshot {
    fn new(agent: Agent, token_hash: SecretHash) -> Self {
        let principal = PolicyPrincipal::new(&agent.id, agent.risk_tier, agent.status);
        AgentSnapshot {
            rate: rate_quota(agent.rate_limits),
            agent,
            token_hash,
            principal,
        }
    }
}

#[derive(Default)]
struct DirectoryMaps {
    by_token: HashMap<SecretHash, Arc<AgentSnapshot>>,
    token_of: HashMap<String, SecretHash>,
}

/// Cache of agents by current token hash.
#[derive(Default)]
pub struct AgentDirectory {
    maps: RwLock<DirectoryMaps>,
    /// Bumped by every change; a load that started before a change must not be cached.
    generation: AtomicU64,
}

impl AgentDirectory {
    pub fn get(&self, token_hash: &SecretHash) -> Option<Arc<AgentSnapshot>> {
        self.maps.read().by_token.get(token_hash).cloned()
    }

    /// Read before loading from the database; pass to [`AgentDirectory::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches an agent loaded from the database, unless a change happened since `generation`
    /// or a newer version of the agent is cached already (two loads racing a change that is
    /// not applied yet may finish in either order).
    pub fn insert(
        &self,
        token_hash: SecretHash,
        agent: Agent,
        generation: u64,
    ) -> Arc<AgentSnapshot> {
        let snapshot = Arc::new(AgentSnapshot::new(agent, token_hash));
        let mut maps = self.maps.write();
        let newer_cached = maps
            .token_of
            .get(&snapshot.agent.id)
            .and_then(|hash| maps.by_token.get(hash))
            .is_some_and(|cached| cached.agent.version > snapshot.agent.version);
        if self.generation.load(Ordering::Acquire) == generation && !newer_cached {
            maps.token_of.insert(snapshot.agent.id.clone(), token_hash);
            maps.by_token.insert(token_hash, Arc::clone(&snapshot));
        }
        snapshot
    }

    /// Call after a change to an agent has committed (freeze, unfreeze, revocation, token
    /// rotation, risk tier): drops its cached entry, so the next request loads the committed
    /// row. Writing a row in instead could install a stale one: two changes may finish in the
    /// other order than they committed, and a request's snapshot may predate a freeze.
    pub fn forget(&self, agent_id: &str) {
        let mut maps = self.maps.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(hash) = maps.token_of.remove(agent_id) {
            maps.by_token.remove(&hash);
        }
    }

    /// Drops every cached agent, for when this replica cannot tell which changed.
    pub fn forget_all(&self) {
        let mut maps = self.maps.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *maps = DirectoryMaps::default();
    }
}

/// A registered tool action: the facts the server registered, and the action as policies see
/// it (built once per catalog load).
pub struct CatalogAction {
    pub facts: RegisteredAction,
    pub resource: PolicyResource,
}

/// Registered tool actions of one tenant: tool → action → registration.
pub type ToolCatalog = HashMap<String, HashMap<String, CatalogAction>>;

/// What authorize needs to know about one tenant, swapped atomically on change.
pub struct TenantRuntime {
    pub engine: ArcSwap<PolicyEngine>,
    pub tools: ArcSwap<ToolCatalog>,
    pub escalation: RwLock<RiskEscalation>,
    /// Every agent's token bucket, unless it has its own; a change drops the runtime.
    pub rate: Option<Quota>,
    /// Every agent's budget of calls that change state; a change drops the runtime.
    pub mutating_budget: Option<Quota>,
    pub decisions: DecisionCounters,
    /// Serialises changes to this tenant's policies and tools, so the swapped-in view is
    /// always the one built from the latest committed state.
    pub change_lock: tokio::sync::Mutex<()>,
}

pub struct TenantRuntimes {
    map: RwLock<HashMap<TenantId, Arc<TenantRuntime>>>,
    /// Bumped by every invalidation; a load that started before one must not be cached.
    generation: AtomicU64,
    /// Kept across invalidations, so a tenant keeps its label for the life of the process.
    labels: TenantLabels,
}

impl TenantRuntimes {
    pub fn new(labels: TenantLabels) -> Self {
        TenantRuntimes {
            map: RwLock::default(),
            generation: AtomicU64::default(),
            labels,
        }
    }

    /// The tenant's runtime, loaded from the store on first use.
    pub async fn get(
        &self,
        store: &dyn ActionPlaneStore,
        tenant: &TenantId,
    ) -> StoreResult<Arc<TenantRuntime>> {
        if let Some(runtime) = self.map.read().get(tenant) {
            return Ok(Arc::clone(runtime));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let settings = store.tenant(tenant).await?;
        let policies = store.policies(tenant).await?;
        // Stored policies were validated on the way in; if they no longer compile (say, after
        // a schema change) the tenant gets errors, never a policy set missing its forbids.
        let engine = PolicyEngine::compile(&policies).map_err(|error| {
            StoreError::Corrupt(format!(
                "stored policies of tenant {tenant} do not compile: {error}"
            ))
        })?;
        let tools = load_catalog(store, tenant).await?;
        let runtime = Arc::new(TenantRuntime {
            engine: ArcSwap::from_pointee(engine),
            tools: ArcSwap::from_pointee(tools),
            escalation: RwLock::new(settings.risk_escalation),
            rate: rate_quota(settings.rate_limits),
            mutating_budget: budget_quota(settings.mutating_per_hour),
            decisions: DecisionCounters::new(self.labels.label(tenant)),
            change_lock: tokio::sync::Mutex::new(()),
        });
        let mut map = self.map.write();
        if self.generation.load(Ordering::Acquire) != generation {
            // Changed while we read it: serve this request from what we read, cache nothing.
            return Ok(runtime);
        }
        Ok(Arc::clone(map.entry(tenant.clone()).or_insert(runtime)))
    }

    /// Drops a tenant's cached runtime after a change committed elsewhere (another replica);
    /// the next request rebuilds it from the database.
    pub fn invalidate(&self, tenant: &TenantId) {
        let mut map = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(tenant);
    }

    /// Drops every tenant's cached runtime, for when this replica cannot tell which changed.
    pub fn invalidate_all(&self) {
        let mut map = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

/// Reads a tenant's tool catalog from the store.
pub async fn load_catalog(
    store: &dyn ActionPlaneStore,
    tenant: &TenantId,
) -> StoreResult<ToolCatalog> {
    let mut catalog = ToolCatalog::new();
    for registered in store.tool_actions(tenant).await? {
        let resource = PolicyResource::new(&registered.tool, &registered.action.action);
        catalog.entry(registered.tool).or_default().insert(
            registered.action.action,
            CatalogAction {
                facts: RegisteredAction {
                    mutates_state: registered.action.mutates_state,
                    risk: registered.action.risk,
                    egress: registered.action.egress,
                    sensitive: registered.action.sensitive,
                },
                resource,
            },
        );
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::model::{AgentStatus, RiskTier};

    const TOKEN: SecretHash = [7; 32];

    /// The agent's row in the database after its `version`th change.
    fn row(status: AgentStatus, risk_tier: RiskTier, version: i64) -> Agent {
        Agent {
            id: "agt_1".into(),
            tenant_id: TenantId::new("acme"),
            name: "bot".into(),
            status,
            status_reason: None,
            risk_tier,
            created_at_ms: 0,
            updated_at_ms: version,
            cursor: 0,
            version,
            rate_limits: Default::default(),
        }
    }

    /// What the next authorize call sees: the cached agent, or the row it loads.
    fn next_call_sees(directory: &AgentDirectory, database: &Agent) -> Agent {
        match directory.get(&TOKEN) {
            Some(cached) => cached.agent.clone(),
            None => {
                let generation = directory.generation();
                directory
                    .insert(TOKEN, database.clone(), generation)
                    .agent
                    .clone()
            }
        }
    }

    /// The audit's race: an authorize call starts from a cached snapshot of the active agent;
    /// an operator's freeze commits and is applied; then the call's deny commits with a
    /// risk-tier escalation and the handler applies it. The freeze must hold: before the
    /// fix the handler wrote its snapshot (active, escalated tier) back into the directory.
    #[test]
    fn an_escalation_applied_after_a_freeze_cannot_unfreeze_the_cached_agent() {
        let directory = AgentDirectory::default();
        let mut database = row(AgentStatus::Active, RiskTier::Low, 1);
        let snapshot = next_call_sees(&directory, &database);

        // The freeze commits and is applied, as `routes/agents.rs` applies it.
        database = row(AgentStatus::Frozen, RiskTier::Low, 2);
        directory.forget(&database.id);
        assert_eq!(next_call_sees(&directory, &database), database);
        // The escalation commits; the handler that started from `snapshot` applies it, as
        // `routes/authorize.rs` does.
        database = row(AgentStatus::Frozen, RiskTier::Medium, 3);
        directory.forget(&snapshot.id);

        assert_eq!(next_call_sees(&directory, &database), database);
    }

    /// A load that read the database before a change committed may finish after the change
    /// was applied: it answers its own request but is not cached.
    #[test]
    fn a_load_that_started_before_a_change_is_not_cached() {
        let directory = AgentDirectory::default();
        let generation = directory.generation();
        let read_before_the_freeze = row(AgentStatus::Active, RiskTier::Low, 1);
        directory.forget("agt_1");
        let served = directory.insert(TOKEN, read_before_the_freeze, generation);
        assert_eq!(served.agent.status, AgentStatus::Active);
        assert!(directory.get(&TOKEN).is_none());
    }

    /// A change committed but not yet applied here: a load that read the agent after it and
    /// one that read it before finish in the other order. The older row must not replace
    /// the newer one in the cache.
    #[test]
    fn a_load_of_an_older_version_never_replaces_a_newer_cached_one() {
        let directory = AgentDirectory::default();
        let generation = directory.generation();
        let frozen = row(AgentStatus::Frozen, RiskTier::Low, 2);
        directory.insert(TOKEN, frozen.clone(), generation);
        directory.insert(
            TOKEN,
            row(AgentStatus::Active, RiskTier::Low, 1),
            generation,
        );
        assert_eq!(directory.get(&TOKEN).unwrap().agent, frozen);
    }

    /// Any interleaving of changes (each committed, then applied to the directory, in
    /// either order) and loads (each reading the database, then caching what it read): once
    /// a change has been applied, the directory never shows a row older than that change.
    #[test]
    fn every_interleaving_keeps_applied_changes() {
        #[derive(Debug, Clone, Copy)]
        enum Step {
            Commit,
            ApplyNewest,
            ApplyOldest,
            LoadStart,
            LoadFinish,
        }
        const STEPS: [Step; 5] = [
            Step::Commit,
            Step::ApplyNewest,
            Step::ApplyOldest,
            Step::LoadStart,
            Step::LoadFinish,
        ];
        const LENGTH: u32 = 7;
        for mut code in 0..STEPS.len().pow(LENGTH) {
            let directory = AgentDirectory::default();
            let mut database = row(AgentStatus::Active, RiskTier::Low, 0);
            let mut unapplied: Vec<i64> = Vec::new();
            let mut applied = 0;
            let mut loads: Vec<(u64, Agent)> = Vec::new();
            let mut trace = Vec::new();
            for _ in 0..LENGTH {
                let step = STEPS[code % STEPS.len()];
                code /= STEPS.len();
                trace.push(step);
                match step {
                    Step::Commit => {
                        let version = database.updated_at_ms + 1;
                        let status = if version % 2 == 1 {
                            AgentStatus::Frozen
                        } else {
                            AgentStatus::Active
                        };
                        database = Agent {
                            status,
                            updated_at_ms: version,
                            ..database
                        };
                        unapplied.push(version);
                    }
                    Step::ApplyNewest | Step::ApplyOldest if !unapplied.is_empty() => {
                        let index = match step {
                            Step::ApplyNewest => unapplied.len() - 1,
                            _ => 0,
                        };
                        let version = unapplied.remove(index);
                        directory.forget(&database.id);
                        applied = applied.max(version);
                    }
                    Step::LoadStart => loads.push((directory.generation(), database.clone())),
                    Step::LoadFinish if !loads.is_empty() => {
                        let (generation, read) = loads.remove(0);
                        directory.insert(TOKEN, read, generation);
                    }
                    _ => {}
                }
                if let Some(cached) = directory.get(&TOKEN) {
                    assert!(
                        cached.agent.updated_at_ms >= applied,
                        "{trace:?}: cached version {} after version {applied} was applied",
                        cached.agent.updated_at_ms
                    );
                }
            }
        }
    }
}
