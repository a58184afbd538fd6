//! What the store tests share: keys, the tenant `acme` and its agent `agt_1`.

#![allow(dead_code)]

use aegis_core::model::{RiskTier, Role};
use aegis_core::receipt::ReceiptSigner;
use aegis_store::*;
use std::sync::Arc;

/// Seals webhook secrets (none in these tests).
pub fn secrets() -> SecretsKey {
    SecretsKey::from_bytes(&[9; 32])
}

pub fn signer() -> Arc<ReceiptSigner> {
    Arc::new(ReceiptSigner::from_seed(&[9; 32]))
}

pub fn tenant() -> TenantId {
    TenantId::new("acme")
}

pub async fn agent(store: &dyn Store) -> Agent {
    store
        .create_tenant(
            &tenant(),
            NewOperatorKey {
                id: "key_admin".into(),
                name: None,
                role: Role::Admin,
                secret_hash: [1; 32],
                created_at_ms: now_ms(),
            },
        )
        .await
        .unwrap();
    store
        .create_agent(
            &tenant(),
            NewAgent {
                id: "agt_1".into(),
                name: "coder".into(),
                risk_tier: RiskTier::Low,
                token_hash: [2; 32],
                actor: "key_admin".into(),
                created_at_ms: now_ms(),
            },
        )
        .await
        .unwrap()
}
