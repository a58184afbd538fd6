//! The SSRF rule holds at delivery, not only at subscription: a subscribed host that
//! resolves to an internal address when a delivery connects is refused and the delivery is
//! recorded as failed, never sent. Both stores.
//!
//! A name cannot be made to re-resolve on this machine without touching its DNS setup, so
//! the subscriptions here were made while the deployment allowed internal addresses
//! (`AEGIS_WEBHOOK_ALLOW_PRIVATE=true`), which skips the subscription-time check; the
//! gateway then restarts without it. For the delivery worker that is the rebinding case: a
//! stored URL whose name (`localhost`) resolves to loopback at delivery time.

#[macro_use]
mod support;

use support::receiver::*;
use support::*;

e2e_test!(
    async fn a_host_resolving_to_an_internal_address_at_delivery_is_refused_and_recorded(
        backend
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let receiver = Receiver::start(any_port(), Log::default()).await;
        let port = receiver.addr.port();
        let client = reqwest::Client::new();

        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true")],
        )
        .await;
        let by_name = format!("http://localhost:{port}/hook");
        let by_name = subscribe(&client, &gw, &admin, &by_name, None).await;
        let by_mapped_literal = format!("http://[::ffff:127.0.0.1]:{port}/hook");
        let by_mapped_literal = subscribe(&client, &gw, &admin, &by_mapped_literal, None).await;
        // Control: while allowed, the URL works, so the refusal below is the rule's doing.
        let allowed = send_test(&client, &gw, &admin, &by_name).await;
        eventually(10, "the delivery while allowed", || async {
            receiver
                .received()
                .iter()
                .any(|r| r.delivery == allowed)
                .then_some(())
        })
        .await;
        assert!(gw.terminate().success());

        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        for webhook in [&by_name, &by_mapped_literal] {
            let sent = send_test(&client, &gw, &admin, webhook).await;
            let failed = eventually(10, "the refused delivery recorded", || async {
                let d = delivery(&client, &gw, &admin, webhook, &sent).await;
                (d["status"] == "failed").then_some(d)
            })
            .await;
            let error = failed["last_error"].as_str().unwrap();
            assert!(
                error.starts_with("refused") && error.contains("internal address"),
                "{error}"
            );
            assert_eq!(failed["attempts"], 1, "refused once, not retried: {failed}");
        }
        assert_eq!(receiver.received().len(), 1, "nothing was sent after the restart");
    }
);
