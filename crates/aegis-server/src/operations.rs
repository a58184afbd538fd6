//! What an operator does, written once: each function here is one act of the runbook
//! (freeze an agent, rotate its token, acknowledge or close an incident...). The API handlers
//! and the console both call these and only translate their own input and output, so a rule
//! such as "a freeze without a reason names the operator" or "a changed agent leaves the
//! token cache" cannot differ between the two. The role each act needs is in its signature:
//! only an [`Operator`] of that role (or above) can be passed.

use crate::approvals::{DecidingKey, decide};
use crate::auth::{AGENT_TOKEN_PREFIX, Admin, Operator, Responder, new_id, new_secret};
use crate::error::{ApiError, ApiResult};
use crate::rate_limit;
use crate::routes::webhooks::{CreateWebhook, CreatedWebhook, EventKind, WebhookFormat};
use crate::state::SharedState;
use crate::validate::in_range;
use aegis_core::approval::Verdict;
use aegis_core::correlate::MAX_BURST_THRESHOLD;
use aegis_core::policy::{PolicyDocument, PolicyEngine, PolicyError};
use aegis_store::approvals::ApprovalRecord;
use aegis_store::{
    Agent, AgentChange, AgentChangeKind, DenyStormOverride, IncidentDetail, IncidentStep,
    NewWebhook, RateLimits, RiskEscalation, StoreError, TenantSettings,
};
use axum::http::StatusCode;
use std::sync::Arc;

/// Freezes an agent: its calls are denied (and recorded) until it is unfrozen.
pub async fn freeze_agent(
    state: &SharedState,
    operator: &Operator<Responder>,
    agent_id: &str,
    reason: Option<String>,
) -> ApiResult<Agent> {
    let reason = reason.unwrap_or_else(|| format!("frozen by operator {}", operator.actor()));
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::Freeze { reason },
    )
    .await
}

/// Unfreezes a frozen agent (a revoked one stays revoked: conflict).
pub async fn unfreeze_agent(
    state: &SharedState,
    operator: &Operator<Responder>,
    agent_id: &str,
) -> ApiResult<Agent> {
    change_agent(state, operator, agent_id, AgentChangeKind::Unfreeze).await
}

/// Revokes an agent for good: its tokens answer 401 from then on.
pub async fn revoke_agent(
    state: &SharedState,
    operator: &Operator<Admin>,
    agent_id: &str,
    reason: Option<String>,
) -> ApiResult<Agent> {
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::Revoke { reason },
    )
    .await
}

/// Issues the agent a new token and returns it (shown once; only its hash is kept). The old
/// token answers 401 at once.
pub async fn rotate_agent_token(
    state: &SharedState,
    operator: &Operator<Admin>,
    agent_id: &str,
) -> ApiResult<String> {
    let (token, new_token_hash) = new_secret(AGENT_TOKEN_PREFIX)?;
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::RotateToken { new_token_hash },
    )
    .await?;
    Ok(token)
}

/// Applies a committed change to an agent and drops it from the token cache, so the next
/// authorize call reads the changed row (see `AgentDirectory::forget`).
pub async fn change_agent<R>(
    state: &SharedState,
    operator: &Operator<R>,
    agent_id: &str,
    kind: AgentChangeKind,
) -> ApiResult<Agent> {
    let change = AgentChange {
        kind,
        actor: operator.actor(),
        at_ms: crate::now_ms(),
    };
    let agent = state
        .store
        .change_agent(&operator.tenant, agent_id, change)
        .await?;
    state.agents.forget(agent_id);
    Ok(agent)
}

/// Moves an incident on (acknowledge, close, apply its recommendation), recording who did
/// it; an agent the step contained leaves the token cache.
pub async fn step_incident(
    state: &SharedState,
    operator: &Operator<Responder>,
    incident_id: &str,
    step: IncidentStep,
) -> ApiResult<IncidentDetail> {
    let (detail, agent) = state
        .store
        .step_incident(&operator.tenant, incident_id, step, &operator.actor())
        .await?;
    if let Some(agent) = agent {
        state.agents.forget(&agent.id);
    }
    Ok(detail)
}

/// Approves or rejects a call as the operator's own key: the approver recorded (and named
/// in the receipt) is the key that acted, never a name the caller typed.
pub async fn decide_approval(
    state: &SharedState,
    operator: &Operator<Responder>,
    approval_id: &str,
    verdict: Verdict,
    reason: Option<String>,
) -> ApiResult<ApprovalRecord> {
    let key = DecidingKey {
        id: operator.key_id.clone(),
        name: operator.key_name.clone(),
    };
    Ok(decide(state, &operator.tenant, key, approval_id, verdict, reason).await?)
}

/// Upper bounds keep the escalation check cheap and its window meaningful.
pub const MAX_ESCALATION_THRESHOLD: u32 = 10_000;
pub const MAX_ESCALATION_WINDOW_MINUTES: u32 = 7 * 24 * 60;
/// The longest deny-storm window: a day.
pub const MAX_DENY_STORM_WINDOW_SECS: u32 = 24 * 60 * 60;

/// Sets how many denies within how many minutes step an agent's risk tier up; a value out of
/// bounds is refused (422, naming its field). The tenant's running settings change with the
/// stored ones, under the tenant's change lock.
pub async fn set_risk_escalation(
    state: &SharedState,
    operator: &Operator<Admin>,
    escalation: RiskEscalation,
) -> ApiResult<TenantSettings> {
    in_range(
        "denial_threshold",
        escalation.denial_threshold,
        1..=MAX_ESCALATION_THRESHOLD,
    )?;
    in_range(
        "window_minutes",
        escalation.window_minutes,
        1..=MAX_ESCALATION_WINDOW_MINUTES,
    )?;
    let runtime = state
        .tenants
        .get(state.store.as_ref(), &operator.tenant)
        .await?;
    let _serialised = runtime.change_lock.lock().await;
    let stored = state
        .store
        .set_risk_escalation(&operator.tenant, escalation)
        .await?;
    *runtime.escalation.write() = escalation;
    Ok(stored)
}

/// Overrides the tenant's deny-storm rule (`None`: the gateway default); a value out of
/// bounds is refused (422, naming its field).
pub async fn set_deny_storm(
    state: &SharedState,
    operator: &Operator<Admin>,
    deny_storm: DenyStormOverride,
) -> ApiResult<TenantSettings> {
    if let Some(threshold) = deny_storm.threshold {
        in_range("threshold", threshold as usize, 1..=MAX_BURST_THRESHOLD)?;
    }
    if let Some(window_secs) = deny_storm.window_secs {
        in_range("window_secs", window_secs, 1..=MAX_DENY_STORM_WINDOW_SECS)?;
    }
    Ok(state
        .store
        .set_deny_storm_override(&operator.tenant, deny_storm, &operator.actor())
        .await?)
}

/// Sets the token bucket of each of the tenant's agents that has none of its own
/// (`per_sec: None`: no limit); a value out of bounds is refused (422, naming its field).
/// This replica's cached tenant is dropped at once; the others drop theirs when they read
/// the settings event.
pub async fn set_rate_limits(
    state: &SharedState,
    operator: &Operator<Admin>,
    rate_limits: RateLimits,
) -> ApiResult<TenantSettings> {
    check_rate_limits(rate_limits)?;
    let stored = state
        .store
        .set_rate_limits(&operator.tenant, rate_limits, &operator.actor())
        .await?;
    state.tenants.invalidate(&operator.tenant);
    Ok(stored)
}

/// Sets how many calls that change state each of the tenant's agents may make per hour
/// (`None`: no budget), like [`set_rate_limits`].
pub async fn set_mutating_budget(
    state: &SharedState,
    operator: &Operator<Admin>,
    mutating_per_hour: Option<u32>,
) -> ApiResult<TenantSettings> {
    if let Some(budget) = mutating_per_hour {
        in_range(
            "mutating_per_hour",
            budget,
            1..=rate_limit::MAX_MUTATING_PER_HOUR,
        )?;
    }
    let stored = state
        .store
        .set_mutating_budget(&operator.tenant, mutating_per_hour, &operator.actor())
        .await?;
    state.tenants.invalidate(&operator.tenant);
    Ok(stored)
}

/// Gives one agent its own token bucket in place of the tenant's (`per_sec: None`: the
/// tenant's applies again); an agent change like a freeze (recorded, fenced, and dropped
/// from every replica's cache).
pub async fn set_agent_rate_limits(
    state: &SharedState,
    operator: &Operator<Admin>,
    agent_id: &str,
    rate_limits: RateLimits,
) -> ApiResult<Agent> {
    check_rate_limits(rate_limits)?;
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::SetRateLimits { rate_limits },
    )
    .await
}

/// The bounds of a token bucket, named as the API names its fields.
fn check_rate_limits(rate_limits: RateLimits) -> ApiResult<()> {
    if let Some(per_sec) = rate_limits.per_sec {
        in_range("per_agent_per_sec", per_sec, 1..=rate_limit::MAX_PER_SEC)?;
    }
    if let Some(burst) = rate_limits.burst {
        in_range("burst", burst, 1..=rate_limit::MAX_BURST)?;
        if rate_limits.per_sec.is_none() {
            return Err(ApiError::invalid_field(
                "burst",
                "needs per_agent_per_sec: without a rate there is no bucket",
            ));
        }
    }
    Ok(())
}

/// A change to the tenant's own policies.
pub enum PolicyChange {
    /// Adds a policy under an id not yet taken (else conflict).
    Create(PolicyDocument),
    /// Adds or replaces the policy of that id.
    Put(PolicyDocument),
    /// Removes the policy of that id (not found if there is none).
    Delete(String),
}

impl PolicyChange {
    fn id(&self) -> &str {
        match self {
            PolicyChange::Create(doc) | PolicyChange::Put(doc) => &doc.id,
            PolicyChange::Delete(id) => id,
        }
    }
}

/// Why a policy change was not made: the set it would leave was refused (the console shows
/// where in the text; the API answers 400 `invalid_policy`), or any other error.
#[derive(Debug)]
pub enum PolicyChangeError {
    Refused(PolicyError),
    Other(ApiError),
}

impl From<ApiError> for PolicyChangeError {
    fn from(error: ApiError) -> Self {
        PolicyChangeError::Other(error)
    }
}

impl From<StoreError> for PolicyChangeError {
    fn from(error: StoreError) -> Self {
        PolicyChangeError::Other(error.into())
    }
}

impl From<PolicyChangeError> for ApiError {
    fn from(error: PolicyChangeError) -> Self {
        match error {
            PolicyChangeError::Refused(refused) => ApiError {
                field: Some(refused.field().into()),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_policy",
                    refused.to_string(),
                )
            },
            PolicyChangeError::Other(error) => error,
        }
    }
}

/// Compiles and validates the tenant's set as it would be after the change, stores the
/// change, then swaps the compiled set in, all under the tenant's change lock, so a policy
/// is in force for the next call exactly when it is stored. Returns whether the id existed.
pub async fn change_policy(
    state: &SharedState,
    operator: &Operator<Admin>,
    change: PolicyChange,
) -> Result<bool, PolicyChangeError> {
    let runtime = state
        .tenants
        .get(state.store.as_ref(), &operator.tenant)
        .await?;
    let _serialised = runtime.change_lock.lock().await;
    let mut docs = state.store.policies(&operator.tenant).await?;
    let existed = docs.iter().any(|d| d.id == change.id());
    match &change {
        PolicyChange::Create(doc) if existed => {
            return Err(ApiError::conflict(format!("policy {} already exists", doc.id)).into());
        }
        PolicyChange::Delete(_) if !existed => return Err(ApiError::not_found("policy").into()),
        PolicyChange::Create(doc) | PolicyChange::Put(doc) => {
            docs.retain(|d| d.id != doc.id);
            docs.push(doc.clone());
        }
        PolicyChange::Delete(id) => docs.retain(|d| d.id != *id),
    }
    // Size and nesting limits are checked in the core, before Cedar parses anything.
    let engine = PolicyEngine::compile(&docs).map_err(PolicyChangeError::Refused)?;
    let actor = operator.actor();
    match change {
        PolicyChange::Create(doc) | PolicyChange::Put(doc) => {
            state
                .store
                .put_policy(&operator.tenant, doc, &actor)
                .await?;
        }
        PolicyChange::Delete(id) => {
            state
                .store
                .delete_policy(&operator.tenant, &id, &actor)
                .await?;
        }
    }
    runtime.engine.store(Arc::new(engine));
    Ok(existed)
}

/// Subscribes a URL to the tenant's notifications. The URL must pass the SSRF rule
/// (`aegis_soc::egress`) unless the deployment allows private addresses; without a secret
/// one is generated. The secret is returned here only: it is never shown again.
pub async fn create_webhook(
    state: &SharedState,
    operator: &Operator<Admin>,
    request: CreateWebhook,
) -> ApiResult<CreatedWebhook> {
    aegis_soc::egress::check_subscription_url(&request.url, state.settings.webhook_allow_private)
        .await
        .map_err(|why| ApiError::invalid_field("url", why))?;
    let format = request.format.unwrap_or(WebhookFormat::Json).as_str();
    if request.events.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid_field("events", "must not be empty"));
    }
    let secret = match request.secret {
        Some(secret) if !(16..=256).contains(&secret.chars().count()) => {
            return Err(ApiError::invalid_field(
                "secret",
                "must be 16 to 256 characters",
            ));
        }
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|_| ApiError::unavailable("cannot generate a secret right now"))?;
            format!("whsec_{}", hex::encode(bytes))
        }
    };
    let webhook = state
        .store
        .create_webhook(
            &operator.tenant,
            NewWebhook {
                id: new_id("whk"),
                url: request.url,
                format: format.to_owned(),
                events: request
                    .events
                    .map(|events| events.into_iter().map(|EventKind(kind)| kind).collect()),
                secret: Some(secret.clone()),
                actor: operator.actor(),
                created_at_ms: crate::now_ms(),
            },
        )
        .await?;
    Ok(CreatedWebhook {
        view: webhook.into(),
        secret,
    })
}

/// Deletes one of the tenant's subscriptions; its pending deliveries are not sent.
pub async fn delete_webhook(
    state: &SharedState,
    operator: &Operator<Admin>,
    webhook_id: &str,
) -> ApiResult<()> {
    Ok(state
        .store
        .delete_webhook(&operator.tenant, webhook_id, &operator.actor())
        .await?)
}
