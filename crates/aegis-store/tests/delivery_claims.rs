//! The delivery worker's claims, on both stores: tenants take turns, a tenant's share is
//! capped counting what it has in flight, and no more deliveries are claimed than asked
//! for — the rest stay claimable at once (PostgreSQL leases only what it returns).

mod support;

use aegis_store::*;
use support::*;

async fn enqueue(store: &dyn Store, id: &str, tenant: &str, at_ms: i64) {
    store
        .enqueue_delivery(NewDelivery {
            id: id.into(),
            tenant_id: TenantId::new(tenant),
            sink: "env:json".into(),
            agent_id: None,
            body: "{}".into(),
            created_at_ms: at_ms,
        })
        .await
        .unwrap();
}

fn ids(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.id.as_str()).collect()
}

fn in_flight(deliveries: &[Delivery]) -> Vec<(String, TenantId)> {
    deliveries
        .iter()
        .map(|d| (d.id.clone(), d.tenant_id.clone()))
        .collect()
}

async fn claims_are_fair_and_never_exceed_the_free_slots(store: &dyn Store) {
    let now = now_ms();
    // A busy tenant with six older deliveries, a quiet one with one newer.
    for i in 0..6 {
        enqueue(store, &format!("busy{i}"), "busy", now - 1_000 + i).await;
    }
    enqueue(store, "quiet0", "quiet", now - 10).await;

    let claim = |limit, per_tenant, in_flight| DeliveryClaim {
        now_ms: now,
        limit,
        per_tenant,
        in_flight,
    };
    let first = store.claim_deliveries(claim(3, 2, vec![])).await.unwrap();
    assert_eq!(
        ids(&first),
        ["busy0", "quiet0", "busy1"],
        "tenants take turns"
    );

    // Busy has its two in flight, quiet has nothing else due: nothing more for now.
    let second = store
        .claim_deliveries(claim(10, 2, in_flight(&first)))
        .await
        .unwrap();
    assert!(second.is_empty(), "{:?}", ids(&second));

    // What the first claim did not return was not claimed: it is there at once.
    let rest = store
        .claim_deliveries(claim(10, 10, in_flight(&first)))
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["busy2", "busy3", "busy4", "busy5"]);
}

on_both_stores!(claims_are_fair_and_never_exceed_the_free_slots);
