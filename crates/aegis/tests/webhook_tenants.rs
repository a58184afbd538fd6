//! Tenants share the delivery worker but cannot hold up each other's webhooks: a tenant with
//! a backlog of slow endpoints gets only its share of the delivery slots, and failures it
//! causes at a URL do not pause another tenant's deliveries to that URL. Real receivers on
//! loopback, the built binary, both stores.

#[macro_use]
mod support;

use support::receiver::*;
use support::*;

const VICTIM_SECRET: &str = "victim-signing-secret-0123456789";

e2e_test!(
    async fn a_tenant_with_a_backlog_of_slow_endpoints_does_not_delay_another(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let attacker = init_on(dir.path(), db.arg(), "attacker");
        let victim = init_on(dir.path(), db.arg(), "victim");
        let receiver = Receiver::start(any_port(), Log::default()).await;
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[
                ("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true"),
                ("AEGIS_WEBHOOK_MAX_IN_FLIGHT", "16"),
                ("AEGIS_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT", "4"),
                // Slow POSTs hang for the whole test instead of timing out.
                ("AEGIS_WEBHOOK_TIMEOUT_SECS", "120"),
            ],
        )
        .await;
        let client = reqwest::Client::new();

        // The attacker: 40 subscriptions to an endpoint that never answers, each sent a test.
        let hold = receiver.url("/hold");
        let mut slow = Vec::new();
        for _ in 0..40 {
            slow.push(subscribe(&client, &gw, &attacker, &hold, None).await);
        }
        for webhook in &slow {
            send_test(&client, &gw, &attacker, webhook).await;
        }
        eventually(10, "the attacker's POSTs hanging", || async {
            (receiver.holds().held >= 4).then_some(())
        })
        .await;

        // The victim's delivery to a fast endpoint goes out while they hang.
        let fast = subscribe(&client, &gw, &victim, &receiver.url("/hook"), None).await;
        let sent = send_test(&client, &gw, &victim, &fast).await;
        let got = eventually(10, "the victim's delivery", || async {
            receiver.received().into_iter().find(|r| r.delivery == sent)
        })
        .await;
        assert_eq!(
            got.holds_given_up, 0,
            "the victim's delivery did not wait for a slow POST to give up"
        );
        let holds = receiver.holds();
        assert_eq!(holds.max_held, 4, "the attacker never held more than its share");
        assert_eq!(holds.given_up, 0);

        // Once the slow endpoint answers, the whole backlog drains promptly: the worker claims
        // only what it starts, so nothing waits out a claim lease.
        receiver.release_holds();
        eventually(30, "all 40 slow deliveries answered", || async {
            (receiver.holds().answered == 40).then_some(())
        })
        .await;
        for webhook in &slow {
            let listed = get_json(
                &client,
                gw.url(&format!("/v1/webhooks/{webhook}/deliveries")),
                &attacker,
            )
            .await;
            assert_eq!(listed[0]["attempts"], 1, "{listed}");
        }
        assert_eq!(receiver.holds().max_held, 4);
    }
);

e2e_test!(
    async fn failures_one_tenant_causes_at_a_url_do_not_pause_another_tenants_deliveries(
        backend
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let attacker = init_on(dir.path(), db.arg(), "attacker");
        let victim = init_on(dir.path(), db.arg(), "victim");
        // The victim's receiver accepts only POSTs signed with the victim's secret.
        let receiver = Receiver::start(any_port(), Log::default()).await;
        receiver.expect_secret(VICTIM_SECRET);
        let url = receiver.url("/signed");
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[
                ("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true"),
                ("AEGIS_WEBHOOK_CIRCUIT_THRESHOLD", "2"),
                ("AEGIS_WEBHOOK_CIRCUIT_PAUSE_SECS", "600"),
                ("AEGIS_WEBHOOK_RETRY_BASE_MS", "50"),
            ],
        )
        .await;
        let client = reqwest::Client::new();
        let victims = subscribe(&client, &gw, &victim, &url, Some(VICTIM_SECRET)).await;

        // The attacker subscribes the victim's URL under its own tenant (its own secret) and
        // makes it fail until its breaker opens.
        let attackers = subscribe(&client, &gw, &attacker, &url, None).await;
        send_test(&client, &gw, &attacker, &attackers).await;
        send_test(&client, &gw, &attacker, &attackers).await;
        eventually(10, "two failed attacker attempts recorded", || async {
            let listed = get_json(
                &client,
                gw.url(&format!("/v1/webhooks/{attackers}/deliveries")),
                &attacker,
            )
            .await;
            let attempts: i64 = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["attempts"].as_i64().unwrap())
                .sum();
            (attempts >= 2).then_some(())
        })
        .await;
        assert!(receiver.rejected() >= 2, "refused for their signature");
        // Paused for the attacker: a new attempt is postponed, not made.
        let paused = send_test(&client, &gw, &attacker, &attackers).await;

        let sent = send_test(&client, &gw, &victim, &victims).await;
        eventually(10, "the victim's delivery", || async {
            receiver
                .received()
                .iter()
                .any(|r| r.delivery == sent)
                .then_some(())
        })
        .await;
        let delivered = eventually(10, "the victim's delivery recorded", || async {
            let d = delivery(&client, &gw, &victim, &victims, &sent).await;
            (d["status"] == "delivered").then_some(d)
        })
        .await;
        assert_eq!(delivered["attempts"], 1);
        let paused = delivery(&client, &gw, &attacker, &attackers, &paused).await;
        assert_eq!(paused["status"], "pending", "{paused}");
        assert_eq!(paused["attempts"], 0, "the attacker's endpoint is paused: {paused}");
    }
);
