//! What the store tests share: keys, the tenant `acme`, its agent `agt_1`, decisions of that
//! agent and the incident its denies open. `aegis-soc`'s store-backed tests share it too.

// Each test file uses a part of this module; the `sqlite_*` ones need not run on both stores.
#![allow(dead_code, unused_macros, unused_imports)]

use aegis_core::model::{ActionRisk, RiskTier, Role, Severity, SourceTrust, Verdict};
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
    another_agent(store, "agt_1", [2; 32]).await
}

/// The agent `id` of `acme`, at low risk, whose token hashes to `token_hash`.
pub async fn another_agent(store: &dyn Store, id: &str, token_hash: [u8; 32]) -> Agent {
    store
        .create_agent(
            &tenant(),
            NewAgent {
                id: id.into(),
                name: "coder".into(),
                risk_tier: RiskTier::Low,
                token_hash,
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

/// Decision `dec_{n}` of `agt_1`: a trusted read, allowed.
pub fn allowed_read(n: u32) -> NewDecision {
    NewDecision {
        id: format!("dec_{n}"),
        tenant_id: tenant(),
        agent_id: "agt_1".into(),
        request_id: None,
        tool: "github".into(),
        action: "get_file".into(),
        resource: None,
        mutates_state: false,
        egress: false,
        sensitive: false,
        risk: ActionRisk::Low,
        source_trust: SourceTrust::TrustedInternalSigned,
        verdict: Verdict::Allow,
        risk_score: 5,
        reason: "permitted".into(),
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

/// Decision `dec_{tenant}_{n}` of the agent `agt_1` of `tenant`: a trusted read, allowed.
pub fn allowed_read_of(tenant: &str, n: u32) -> NewDecision {
    NewDecision {
        id: format!("dec_{tenant}_{n}"),
        tenant_id: TenantId::new(tenant),
        ..allowed_read(n)
    }
}

/// Decision `dec_{n}` of `agt_1`: an untrusted merge, denied.
pub fn denied_merge(n: u32) -> NewDecision {
    NewDecision {
        action: "merge_pull_request".into(),
        mutates_state: true,
        risk: ActionRisk::High,
        source_trust: SourceTrust::UntrustedExternal,
        verdict: Verdict::Deny,
        risk_score: 85,
        reason: "denied".into(),
        ..allowed_read(n)
    }
}

/// A SOC batch that opens the `deny_storm` incident `inc_1` of `agt_1` at `opened_at_ms`
/// with `evidence`, its consumer's cursor moved from 0 to `cursor`.
pub fn storm_opened(cursor: i64, evidence: Vec<EvidenceRef>, opened_at_ms: i64) -> SocBatch {
    SocBatch {
        consumer: "soc".into(),
        after: 0,
        cursor,
        incidents: vec![NewIncident {
            id: "inc_1".into(),
            tenant_id: tenant(),
            kind: "deny_storm".into(),
            severity: Severity::High,
            agent_id: "agt_1".into(),
            dedup_key: "agt_1:deny_storm:1".into(),
            summary: "denies".into(),
            evidence,
            recommended_action: None,
            response: AutomaticResponse::default(),
            opened_at_ms,
        }],
        ..SocBatch::default()
    }
}
