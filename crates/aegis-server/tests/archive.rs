//! Archiving through the store (`aegis_store::archive`), seen through the HTTP API: a chain
//! cut and pruned in small batches verifies from its signed cut at every step, the first
//! receipt after the cut verifies in place, a forged cut is named, and what the consumers
//! have not read yet is never archivable. (`crates/aegis/tests/archive.rs` drives
//! `aegis archive` itself.)

#[macro_use]
mod common;

use aegis_core::receipt::ChainPoint;
use aegis_store::archive::ArchiveBounds;
use aegis_store::{StoreError, TenantId, now_ms};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every bound open: everything already decided may be archived.
fn anything() -> ArchiveBounds {
    ArchiveBounds {
        before_ms: now_ms() + 60_000,
        now_ms: now_ms(),
        events_consumed_through: i64::MAX,
    }
}

async fn verify_range(app: &TestApp, key: &str, body: Value) -> Value {
    expect_json(
        app.post(key, "/v1/receipts/verify", body).await,
        StatusCode::OK,
    )
    .await
}

store_test!(
    async fn a_chain_pruned_in_batches_verifies_from_its_signed_cut(backend) {
        let app = TestApp::spawn(backend).await;
        let fx = app.tenant_with_agent("acme").await;
        let tenant = TenantId::new("acme");
        let mut answers = Vec::new();
        for _ in 0..30 {
            answers.push(
                expect_decision(
                    app.authorize(&fx.token, "github", "get_file", "trusted_internal_signed", false)
                        .await,
                    "allow",
                )
                .await,
            );
        }
        let receipts = app.verify_chain("acme").await;
        let head = receipts.len() as u64;

        // Not what a consumer has yet to read: the decision of that event stays.
        let unread = answers[20]["event_seq"].as_i64().unwrap();
        let consumed = ArchiveBounds {
            events_consumed_through: unread - 1,
            ..anything()
        };
        let through = app.store.archivable_through(&tenant, consumed).await.unwrap();
        let kept = answers[20]["receipt"]["seq"].as_u64().unwrap();
        assert!(through.is_some_and(|seq| seq < kept), "{through:?} < {kept}");
        // Never the head: the writers link the next receipt to it.
        let through = app.store.archivable_through(&tenant, anything()).await.unwrap();
        assert_eq!(through, Some(head - 1));
        let through = head - 1;

        let point = ChainPoint {
            seq: through,
            hash: receipts[through as usize - 1].hash.clone(),
        };
        let cut = app
            .signer
            .cut("acme", &point, "2026-11-28T00:00:00.000Z".into())
            .unwrap();
        app.store.record_chain_cut(cut.clone()).await.unwrap();
        // A cut only moves forward.
        assert!(matches!(
            app.store.record_chain_cut(cut).await,
            Err(StoreError::Conflict(_))
        ));

        // Cut, nothing pruned yet, then half-way, then done: the range verifies from the cut
        // each time.
        let mut pruned = 0;
        loop {
            let verified = verify_range(&app, &fx.admin, json!({})).await;
            assert_eq!(verified["verified"], true, "{verified} after {pruned} pruned");
            assert_eq!(verified["checked"], head - through);
            let deleted = app.store.prune_archived(&tenant, 7).await.unwrap();
            assert!(deleted <= 7);
            if deleted == 0 {
                break;
            }
            pruned += deleted;
        }
        assert_eq!(pruned, through);
        let left = app
            .count("SELECT COUNT(*) FROM receipts WHERE tenant_id = 'acme'", &[])
            .await;
        assert_eq!(left as u64, head - through);
        let decisions = app
            .count("SELECT COUNT(*) FROM decisions WHERE tenant_id = 'acme'", &[])
            .await;
        assert_eq!(decisions as u64, head - through);
        let verified = verify_range(&app, &fx.admin, json!({"from_seq": 1})).await;
        assert_eq!((verified["verified"].clone(), verified["checked"].clone()), (json!(true), json!(1)));

        // The first receipt after the cut links to it.
        let first_live = answers.last().unwrap()["receipt"]["id"].as_str().unwrap();
        let check = expect_json(
            app.get(&fx.admin, &format!("/v1/receipts/{first_live}/verify")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(check["verified"], true, "{check}");
        // A pruned receipt is gone from the API.
        let archived = answers[0]["receipt"]["id"].as_str().unwrap();
        let gone = app.get(&fx.admin, &format!("/v1/receipts/{archived}")).await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);

        // A cut moved without the key is named.
        app.execute(
            "UPDATE chain_cuts SET pruned_through_seq = pruned_through_seq - 1 WHERE tenant_id = 'acme'",
            &[],
        )
        .await;
        let forged = verify_range(&app, &fx.admin, json!({})).await;
        assert_eq!(forged["verified"], false);
        assert!(
            forged["first_bad"]["reason"].as_str().unwrap().contains("cut"),
            "{forged}"
        );
    }
);

store_test!(
    async fn retention_is_a_validated_admin_setting(backend) {
        let app = TestApp::spawn(backend).await;
        let fx = app.tenant_with_agent("acme").await;
        let viewer = app.create_key(&fx.admin, "viewer").await;
        let got = expect_json(app.get(&viewer, "/v1/tenants/retention").await, StatusCode::OK).await;
        assert_eq!(got, json!({"min_days": null}));

        for bad in [json!({"min_days": 0}), json!({"min_days": -3}), json!({"min_days": 36501}),
                    json!({"min_days": 1.5}), json!({"min_days": "30"}), json!({})] {
            let refused = app.put(&fx.admin, "/v1/tenants/retention", bad.clone()).await;
            let error = expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
            assert_eq!(error["field"], "min_days", "{bad}");
        }
        let unknown = app
            .put(&fx.admin, "/v1/tenants/retention", json!({"min_days": 30, "max_days": 1}))
            .await;
        expect_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        let forbidden = app.put(&viewer, "/v1/tenants/retention", json!({"min_days": 30})).await;
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

        let set = app.put(&fx.admin, "/v1/tenants/retention", json!({"min_days": 30})).await;
        assert_eq!(expect_json(set, StatusCode::OK).await, json!({"min_days": 30}));
        let got = expect_json(app.get(&viewer, "/v1/tenants/retention").await, StatusCode::OK).await;
        assert_eq!(got, json!({"min_days": 30}));
        let other = app.tenant_with_agent("globex").await;
        let theirs = expect_json(app.get(&other.admin, "/v1/tenants/retention").await, StatusCode::OK).await;
        assert_eq!(theirs, json!({"min_days": null}), "per tenant");
        let events = app
            .count(
                "SELECT COUNT(*) FROM events WHERE tenant_id = 'acme' AND kind = 'tenant.settings_changed'",
                &[],
            )
            .await;
        assert_eq!(events, 1);
        let cleared = app.put(&fx.admin, "/v1/tenants/retention", json!({"min_days": null})).await;
        assert_eq!(expect_json(cleared, StatusCode::OK).await, json!({"min_days": null}));
    }
);
