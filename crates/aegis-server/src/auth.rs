//! Credentials: how secrets are made and checked, and the extractors that authenticate a
//! request. Handlers never parse `Authorization` themselves: they take an [`AgentCaller`]
//! (action plane) or an [`Operator<R>`] (management plane, role `R` or above), and the
//! tenant they act for comes from that credential alone.

use crate::error::ApiError;
use crate::state::{AgentSnapshot, SharedState};
use crate::telemetry::record_tenant;
use crate::validate::Text;
use aegis_core::model::Role;
use aegis_store::{AdminStore, OperatorKey, SecretHash, TenantId, TokenOwner};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::marker::PhantomData;
use std::sync::Arc;

/// Prefix of agent tokens (action plane only).
pub const AGENT_TOKEN_PREFIX: &str = "aat_";
/// Prefix of operator keys (management plane only).
pub const OPERATOR_KEY_PREFIX: &str = "aok_";

/// A fresh secret: prefix + 256 random bits in hex. Returns the secret and its hash.
pub fn new_secret(prefix: &str) -> Result<(String, SecretHash), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the system random source failed");
        ApiError::unavailable("cannot generate a credential right now")
    })?;
    let secret = format!("{prefix}{}", hex::encode(bytes));
    let hash = hash_secret(&secret);
    Ok((secret, hash))
}

/// Secrets are stored and looked up only as SHA-256: they carry 256 random bits, so a slow
/// password hash would add cost without adding safety.
pub fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new opaque id with a type prefix, time-ordered (UUIDv7).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The bearer credential of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a bearer secret is an agent token. The prefix tells the two planes' credentials
/// apart before any lookup, so an agent token never counts as an operator key.
fn is_agent_token(secret: &str) -> bool {
    secret.starts_with(AGENT_TOKEN_PREFIX)
}

/// Whether the request's bearer credential is an agent token.
fn bears_agent_token(parts: &Parts) -> bool {
    bearer(parts).is_some_and(is_agent_token)
}

/// The agent that presented a valid, current token.
pub struct AgentCaller(pub Arc<AgentSnapshot>);

impl FromRequestParts<SharedState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("an agent token is required (Authorization: Bearer)")
        })?;
        let hash = hash_secret(token);
        if let Some(snapshot) = state.agents.get(&hash) {
            record_tenant(&snapshot.agent.tenant_id);
            return Ok(AgentCaller(snapshot));
        }
        let generation = state.agents.generation();
        match state.store.agent_by_token_hash(hash).await? {
            Some(TokenOwner::Current(agent)) => {
                record_tenant(&agent.tenant_id);
                Ok(AgentCaller(state.agents.insert(hash, agent, generation)))
            }
            Some(TokenOwner::Dead {
                tenant_id,
                agent_id,
            }) => {
                tracing::warn!(%tenant_id, %agent_id, "authorize with a revoked or rotated-away agent token");
                if state.dead_tokens.should_record(&agent_id, crate::now_ms()) {
                    let payload = serde_json::json!({"agent_id": agent_id, "token_sha256_prefix": hex::encode(&hash[..4])});
                    if let Err(error) = state
                        .store
                        .record_event(
                            &tenant_id,
                            aegis_store::event_kind::AUTH_DEAD_TOKEN,
                            Some(&agent_id),
                            payload,
                        )
                        .await
                    {
                        tracing::error!(%error, "cannot record the use of a dead token");
                    }
                }
                Err(ApiError::unauthorized("invalid agent token"))
            }
            None => Err(ApiError::unauthorized("invalid agent token")),
        }
    }
}

/// The role a route requires.
pub trait RequiredRole: Send + Sync + 'static {
    const ROLE: Role;
}

/// Read-only access to the tenant's data.
pub struct Viewer;
/// Viewer plus containment: freeze, unfreeze, close, acknowledge.
pub struct Responder;
/// Everything, including credentials, policy and tenant settings.
pub struct Admin;

impl RequiredRole for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl RequiredRole for Responder {
    const ROLE: Role = Role::Responder;
}
impl RequiredRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// An authenticated operator key whose role grants at least `R`.
pub struct Operator<R> {
    pub tenant: TenantId,
    pub key_id: String,
    /// The key's name, if it was given one.
    pub key_name: Option<String>,
    pub role: Role,
    _role: PhantomData<R>,
}

impl<R> Operator<R> {
    /// How the operator is named in events and audit fields.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

impl<R: RequiredRole> Operator<R> {
    /// Authenticates an operator key and checks its role.
    pub async fn from_secret(state: &SharedState, secret: &str) -> Result<Self, ApiError> {
        if is_agent_token(secret) {
            return Err(ApiError::unauthorized(
                "agent tokens are not accepted on the management API",
            ));
        }
        let key = state
            .store
            .operator_key_by_hash(hash_secret(secret))
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid operator key"))?;
        Operator::from_key(key)
    }

    /// The operator of a stored key (found by its secret, or through a console session):
    /// refused if the key is revoked (401) or its role does not grant `R` (403).
    pub fn from_key(key: OperatorKey) -> Result<Self, ApiError> {
        if key.revoked_at_ms.is_some() {
            return Err(ApiError::unauthorized("invalid operator key"));
        }
        record_tenant(&key.tenant_id);
        if !key.role.grants(R::ROLE) {
            return Err(ApiError::forbidden(format!(
                "this route needs the {} role; the key has {}",
                R::ROLE,
                key.role
            )));
        }
        Ok(Operator {
            tenant: key.tenant_id,
            key_id: key.id,
            key_name: key.name,
            role: key.role,
            _role: PhantomData,
        })
    }
}

impl<R: RequiredRole> FromRequestParts<SharedState> for Operator<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("an operator key is required (Authorization: Bearer)")
        })?;
        Operator::from_secret(state, secret).await
    }
}

/// An operator key that may decide approvals (responder or admin). An agent token is
/// refused with 403, not 401: it is a valid credential, and no agent may ever approve.
pub struct Approver(pub Operator<Responder>);

impl FromRequestParts<SharedState> for Approver {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        if bears_agent_token(parts) {
            return Err(ApiError::forbidden(
                "agents cannot decide approvals; an operator key with the responder or admin role can",
            ));
        }
        Operator::from_request_parts(parts, state)
            .await
            .map(Approver)
    }
}

/// Who may read an approval: an operator key (viewer and up) for the tenant's approvals, or
/// an agent token for the agent's own (so an agent can wait for its answer).
pub enum ApprovalReader {
    Operator(Operator<Viewer>),
    Agent(AgentCaller),
}

impl ApprovalReader {
    pub fn tenant(&self) -> &TenantId {
        match self {
            ApprovalReader::Operator(operator) => &operator.tenant,
            ApprovalReader::Agent(AgentCaller(agent)) => &agent.agent.tenant_id,
        }
    }

    /// Whether this reader may see an approval of `agent_id` (operators see all of the
    /// tenant's; an agent only its own, others answer 404 as if absent).
    pub fn may_see(&self, agent_id: &str) -> bool {
        match self {
            ApprovalReader::Operator(_) => true,
            ApprovalReader::Agent(AgentCaller(agent)) => agent.agent.id == agent_id,
        }
    }
}

impl FromRequestParts<SharedState> for ApprovalReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        if bears_agent_token(parts) {
            AgentCaller::from_request_parts(parts, state)
                .await
                .map(ApprovalReader::Agent)
        } else {
            Operator::from_request_parts(parts, state)
                .await
                .map(ApprovalReader::Operator)
        }
    }
}

/// A tenant created with its first admin key.
pub struct NewTenant {
    pub tenant_id: TenantId,
    /// The admin key's secret, shown once.
    pub admin_key: String,
    pub admin_key_id: String,
}

/// A new operator key of `role`: its secret (shown once) and the row the store keeps (only
/// the secret's hash). The one way keys are made: `POST /v1/keys`, `aegis init` and
/// `aegis keys create`.
pub fn new_operator_key(
    role: Role,
    name: Option<Text<200>>,
) -> Result<(String, aegis_store::NewOperatorKey), ApiError> {
    let (secret, secret_hash) = new_secret(OPERATOR_KEY_PREFIX)?;
    Ok((
        secret,
        aegis_store::NewOperatorKey {
            id: new_id("key"),
            name: name.map(Text::into_string),
            role,
            secret_hash,
            created_at_ms: crate::now_ms(),
        },
    ))
}

/// Creates a tenant and its first admin key (what `aegis init` does). `Conflict` if the
/// tenant exists.
pub async fn create_tenant(
    store: &dyn AdminStore,
    tenant_id: TenantId,
) -> Result<NewTenant, aegis_store::StoreError> {
    let (admin_key, key) =
        new_operator_key(Role::Admin, Text::parse("initial admin".to_owned()).ok())
            .map_err(|e| aegis_store::StoreError::Unavailable(e.message))?;
    let key = store.create_tenant(&tenant_id, key).await?;
    Ok(NewTenant {
        tenant_id,
        admin_key,
        admin_key_id: key.id,
    })
}
