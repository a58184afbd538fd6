//! Shared state of the gateway and the in-memory views that keep `/v1/authorize` free of
//! database reads: the agent directory (token hash → agent) and, per tenant, the compiled
//! policy engine, the tool catalog and the escalation settings.
//!
//! The database stays the source of truth. Every change made through this process updates
//! these views right after its commit; changes committed by other replicas reach them through
//! the event log ([`crate::coherence`]); a view loaded from the database never overwrites a
//! newer change (see [`AgentDirectory::insert`]).

use crate::live_feed::LiveFeed;
use aegis_core::decision::RegisteredAction;
use aegis_core::policy::PolicyEngine;
use aegis_store::{Agent, RiskEscalation, SecretHash, Store, StoreError, StoreResult, TenantId};
use arc_swap::ArcSwap;
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 1 << 20,
            env_autonomy: None,
            webhook_allow_private: false,
            narrator: None,
            live_feed: crate::live_feed::FeedSettings::default(),
        }
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub agents: AgentDirectory,
    pub tenants: TenantRuntimes,
    pub dead_tokens: DeadTokenLog,
    /// Fans committed events out to the live feed's sessions.
    pub live_feed: Arc<LiveFeed>,
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
        Arc::new(AppState {
            live_feed: LiveFeed::new(head, settings.live_feed),
            store,
            agents: AgentDirectory::default(),
            tenants: TenantRuntimes::default(),
            dead_tokens: DeadTokenLog::default(),
            settings,
        })
    }
}

/// An agent as the authorize path sees it.
#[derive(Debug)]
pub struct AgentSnapshot {
    pub agent: Agent,
    pub token_hash: SecretHash,
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

    /// Caches an agent loaded from the database, unless a change happened since `generation`.
    pub fn insert(
        &self,
        token_hash: SecretHash,
        agent: Agent,
        generation: u64,
    ) -> Arc<AgentSnapshot> {
        let snapshot = Arc::new(AgentSnapshot { agent, token_hash });
        let mut maps = self.maps.write();
        if self.generation.load(Ordering::Acquire) == generation {
            maps.token_of.insert(snapshot.agent.id.clone(), token_hash);
            maps.by_token.insert(token_hash, Arc::clone(&snapshot));
        }
        snapshot
    }

    /// Applies a committed change to an agent (status, tier). Revoked agents leave the cache.
    pub fn update(&self, agent: &Agent) {
        let mut maps = self.maps.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let Some(hash) = maps.token_of.get(&agent.id).copied() else {
            return;
        };
        if agent.status == aegis_core::model::AgentStatus::Revoked {
            maps.token_of.remove(&agent.id);
            maps.by_token.remove(&hash);
        } else {
            maps.by_token.insert(
                hash,
                Arc::new(AgentSnapshot {
                    agent: agent.clone(),
                    token_hash: hash,
                }),
            );
        }
    }

    /// Forgets an agent's cached token (after rotation the new token is loaded on first use).
    pub fn forget(&self, agent_id: &str) {
        let mut maps = self.maps.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(hash) = maps.token_of.remove(agent_id) {
            maps.by_token.remove(&hash);
        }
    }
}

/// Registered tool actions of one tenant: tool → action → facts.
pub type ToolCatalog = HashMap<String, HashMap<String, RegisteredAction>>;

/// What authorize needs to know about one tenant, swapped atomically on change.
pub struct TenantRuntime {
    pub engine: ArcSwap<PolicyEngine>,
    pub tools: ArcSwap<ToolCatalog>,
    pub escalation: RwLock<RiskEscalation>,
    /// Serialises changes to this tenant's policies and tools, so the swapped-in view is
    /// always the one built from the latest committed state.
    pub change_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub struct TenantRuntimes {
    map: RwLock<HashMap<TenantId, Arc<TenantRuntime>>>,
    /// Bumped by every invalidation; a load that started before one must not be cached.
    generation: AtomicU64,
}

impl TenantRuntimes {
    /// The tenant's runtime, loaded from the store on first use.
    pub async fn get(
        &self,
        store: &dyn Store,
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
}

/// Reads a tenant's tool catalog from the store.
pub async fn load_catalog(store: &dyn Store, tenant: &TenantId) -> StoreResult<ToolCatalog> {
    let mut catalog = ToolCatalog::new();
    for registered in store.tool_actions(tenant).await? {
        catalog.entry(registered.tool).or_default().insert(
            registered.action.action,
            RegisteredAction {
                mutates_state: registered.action.mutates_state,
                risk: registered.action.risk,
                egress: registered.action.egress,
                sensitive: registered.action.sensitive,
            },
        );
    }
    Ok(catalog)
}
