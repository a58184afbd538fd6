//! The delivery worker's claims, on both stores: tenants take turns, a tenant's share is
//! capped counting what it has in flight, and no more deliveries are claimed than asked
//! for — the rest stay claimable at once (PostgreSQL leases only what it returns); a queued
//! row that cannot be read fails alone instead of failing every claim, and still lists.

#[path = "support/database.rs"]
mod database;
mod support;

use aegis_store::*;
use database::{Database, on_both_databases};
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

/// Queued deliveries edited behind the gateway's back so that they no longer read, one in a
/// column the claim ranks by and one in its body, are marked failed with the reason; the
/// claim returns the others, and the next claim meets neither again.
async fn a_delivery_that_cannot_be_read_fails_alone(db: Database) {
    let store = db.open().await;
    let now = now_ms();
    enqueue(store.as_ref(), "first", "acme", now - 30).await;
    enqueue(store.as_ref(), "bad_tenant", "acme", now - 20).await;
    enqueue(store.as_ref(), "bad_body", "globex", now - 20).await;
    enqueue(store.as_ref(), "last", "globex", now - 10).await;
    // SQLite keeps whatever an edit stores; PostgreSQL keeps its types, so its edit drops
    // the NOT NULL that keeps the column readable.
    let edits: &[&str] = match db {
        Database::Sqlite(_) => &[
            "UPDATE deliveries SET tenant_id = x'00ff' WHERE id = 'bad_tenant'",
            "UPDATE deliveries SET body = x'00ff' WHERE id = 'bad_body'",
        ],
        Database::Postgres(_) => &[
            "ALTER TABLE deliveries ALTER COLUMN tenant_id DROP NOT NULL",
            "ALTER TABLE deliveries ALTER COLUMN body DROP NOT NULL",
            "UPDATE deliveries SET tenant_id = NULL WHERE id = 'bad_tenant'",
            "UPDATE deliveries SET body = NULL WHERE id = 'bad_body'",
        ],
    };
    for edit in edits {
        db.run(edit, &[]).await;
    }

    let claim = DeliveryClaim {
        now_ms: now,
        limit: 10,
        per_tenant: 10,
        in_flight: vec![],
    };
    let claimed = store.claim_deliveries(claim.clone()).await.unwrap();
    assert_eq!(ids(&claimed), ["first", "last"]);

    for id in ["bad_tenant", "bad_body"] {
        let sql = "SELECT status || ': ' || last_error FROM deliveries WHERE id = $1";
        let outcome = db.run(sql, &[id]).await.unwrap();
        assert!(
            outcome.starts_with("failed: its stored row cannot be read: "),
            "{id}: {outcome}"
        );
    }
    let in_flight = in_flight(&claimed);
    let again = (store.claim_deliveries(DeliveryClaim { in_flight, ..claim }))
        .await
        .unwrap();
    assert!(again.is_empty(), "{:?}", ids(&again));
}

on_both_databases!(a_delivery_that_cannot_be_read_fails_alone);

/// A delivery whose body was edited so that it no longer reads still lists, with its
/// status, beside the sink's other deliveries: the listing shows no body, so it reads none.
async fn a_delivery_whose_body_cannot_be_read_still_lists(db: Database) {
    let store = db.open().await;
    let now = now_ms();
    enqueue(store.as_ref(), "sent", "acme", now - 30).await;
    enqueue(store.as_ref(), "bad_body", "acme", now - 20).await;
    enqueue(store.as_ref(), "queued", "acme", now - 10).await;
    store
        .finish_delivery("sent", DeliveryOutcome::Delivered { at_ms: now })
        .await
        .unwrap();
    // As in `a_delivery_that_cannot_be_read_fails_alone`: PostgreSQL keeps its types, so
    // its edit drops the NOT NULL that keeps the body readable.
    let edits: &[&str] = match db {
        Database::Sqlite(_) => &["UPDATE deliveries SET body = x'00ff' WHERE id = 'bad_body'"],
        Database::Postgres(_) => &[
            "ALTER TABLE deliveries ALTER COLUMN body DROP NOT NULL",
            "UPDATE deliveries SET body = NULL WHERE id = 'bad_body'",
        ],
    };
    for edit in edits {
        db.run(edit, &[]).await;
    }

    let listed = store
        .list_deliveries(&TenantId::new("acme"), "env:json", Page::default())
        .await
        .unwrap();
    let statuses: Vec<_> = listed
        .iter()
        .map(|d| (d.id.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("queued", "pending"),
            ("bad_body", "pending"),
            ("sent", "delivered")
        ]
    );
}

on_both_databases!(a_delivery_whose_body_cannot_be_read_still_lists);
