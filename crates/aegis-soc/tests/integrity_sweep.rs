//! The background integrity check's sweep of verified history shares one budget per pass
//! over all chains: a pass walks no more than the budget however many tenants there are,
//! and the next pass goes on where it ran out, so every chain's history is walked again in
//! turn and damage behind a signed head is found.

// The store tests' fixtures: this test drives the SOC's check over a real store.
#[path = "../../aegis-store/tests/support/mod.rs"]
mod support;

use aegis_core::receipt::BreakKind;
use aegis_soc::integrity::IntegrityCheck;
use aegis_store::sqlite::SqliteStore;
use aegis_store::*;
use support::allowed_read_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweep_budget_per_pass_reaches_every_chain_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aegis.db");
    let store = SqliteStore::open(&path, support::signer(), support::secrets()).unwrap();
    for tenant in ["acme", "globex", "initech"] {
        for n in 1..=5 {
            store
                .record_decision(allowed_read_of(tenant, n))
                .await
                .unwrap();
        }
    }
    // 15 receipts over three chains, 4 swept per pass.
    let mut check = IntegrityCheck::resume([], [], 4);
    assert_eq!(check.pass(&store).await.unwrap(), vec![]);
    assert_eq!(check.verified_points().len(), 3);

    // A receipt behind the last chain's head edited behind the gateway's back: its hash no
    // longer matches, and only the sweep reads it again (a pass's extension starts at the
    // verified head).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let edited = conn
        .execute(
            "UPDATE decisions SET risk_score = 99 WHERE id = 'dec_initech_4'",
            [],
        )
        .unwrap();
    assert_eq!(edited, 1);

    // Pass 1 swept acme 1-4; pass 2 sweeps acme 5 and globex 1-3; pass 3 globex 4-5 and
    // initech 1-2; pass 4 initech 3-5, and finds the edit. A budget per chain would have
    // swept 4 receipts of every chain in each pass and found it in pass 3.
    for pass in [2, 3] {
        assert_eq!(check.pass(&store).await.unwrap(), vec![], "pass {pass}");
    }
    let found = check.pass(&store).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].tenant_id.as_str(), found[0].seq, &found[0].kind),
        ("initech", 4, &BreakKind::Hash)
    );
    // Reported once: later passes report it no more.
    assert_eq!(check.pass(&store).await.unwrap(), vec![]);
}
