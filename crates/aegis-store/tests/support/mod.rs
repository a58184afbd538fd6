//! What the store tests share: keys, the tenant `acme` and its agent `agt_1`.

// Each test file uses a part of this module; the `sqlite_*` ones need not run on both stores.
#![allow(dead_code, unused_macros, unused_imports)]

use aegis_core::model::{ActionRisk, RiskTier, Role, SourceTrust, Verdict};
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

/// Runs `async fn $rule(store: &dyn Store)` as two tests: `$rule::sqlite` on a fresh SQLite
/// file and `$rule::postgres` on a fresh PostgreSQL database, so that every rule is held on
/// both stores by one body.
macro_rules! on_both_stores {
    ($rule:ident) => {
        mod $rule {
            use $crate::support::{secrets, signer};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let store = aegis_store::sqlite::SqliteStore::open(
                    &dir.path().join("aegis.db"),
                    signer(),
                    secrets(),
                )
                .unwrap();
                super::$rule(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let database = aegis_testdb::FreshDatabase::create().await;
                let store =
                    aegis_store::postgres::PgStore::connect(database.url(), signer(), secrets())
                        .await
                        .unwrap();
                super::$rule(&store).await;
            }
        }
    };
}
pub(crate) use on_both_stores;

/// Decision `dec_{n}` of `agt_1`: an untrusted merge, denied.
pub fn denied_merge(n: u32) -> NewDecision {
    NewDecision {
        id: format!("dec_{n}"),
        tenant_id: tenant(),
        agent_id: "agt_1".into(),
        request_id: None,
        tool: "github".into(),
        action: "merge_pull_request".into(),
        resource: None,
        mutates_state: true,
        egress: false,
        sensitive: false,
        risk: ActionRisk::High,
        source_trust: SourceTrust::UntrustedExternal,
        verdict: Verdict::Deny,
        risk_score: 85,
        reason: "denied".into(),
        matched_policies: vec![],
        action_hash: "0".repeat(64),
        trace: TraceContext::default(),
        created_at_ms: now_ms(),
        contained: false,
        throttled: false,
        escalation: RiskEscalation::default(),
        agent_version: 0,
        approval: None,
        tool_definition_hash: None,
    }
}
