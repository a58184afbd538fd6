//! Several `aegis serve` replicas on one fresh PostgreSQL database, driven like a deployment
//! behind a load balancer: calls alternate between replicas, management goes to either.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::deployment::*;
use support::receiver::*;
use support::*;

async fn deny_storm_incidents(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
    agent_id: &str,
) -> Vec<Value> {
    get_json(
        client,
        gw.url(&format!(
            "/v1/incidents?kind=deny_storm&agent_id={agent_id}"
        )),
        admin,
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_alternating_between_replicas_open_exactly_one_deny_storm() {
    let receiver = Receiver::start(any_port(), Default::default()).await;
    let hook = receiver.url("/hook");
    let d = Deployment::start(
        3,
        &[
            ("AEGIS_WEBHOOK_URL", hook.as_str()),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &d.replicas[0], &d.admin).await;
    for i in 0..5 {
        let replica = &d.replicas[i % 3];
        assert_eq!(
            authorize(&client, replica, &token, "untrusted_external").await,
            "deny"
        );
    }
    let incidents = eventually(10, "the deny_storm incident", || async {
        let found = deny_storm_incidents(&client, &d.replicas[1], &d.admin, &agent_id).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    // Five more denies inside the window join the same storm, whichever replica answers.
    for i in 0..5 {
        let replica = &d.replicas[(i + 1) % 3];
        assert_eq!(
            authorize(&client, replica, &token, "untrusted_external").await,
            "deny"
        );
    }
    let id = incidents[0]["id"].as_str().unwrap().to_owned();
    let detail = eventually(10, "ten denies behind the incident", || async {
        let detail = get_json(
            &client,
            d.replicas[2].url(&format!("/v1/incidents/{id}")),
            &d.admin,
        )
        .await;
        (detail["evidence_count"] == 10).then_some(detail)
    })
    .await;
    assert_eq!(detail["kind"], "deny_storm");
    // Give any replica that wrongly ran a SOC of its own time to show a second incident.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for replica in &d.replicas {
        let seen = deny_storm_incidents(&client, replica, &d.admin, &agent_id).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
    }
    let leaders = d
        .replicas
        .iter()
        .filter(|r| r.log_text().contains("leading:"))
        .count();
    assert_eq!(leaders, 1, "exactly one replica runs the SOC");

    // Each deny was notified once, whichever replica answered it, and each delivery id
    // arrived once.
    eventually(15, "ten denies notified", || async {
        (deny_ids(&receiver.received()).len() >= 10).then_some(())
    })
    .await;
    // Time for a duplicate to show, if a second replica were delivering too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = receiver.received();
    let reported = deny_ids(&all);
    assert_eq!(reported.len(), 10, "{reported:?}");
    assert_eq!(reported.iter().collect::<HashSet<_>>().len(), 10);
    let ids: HashSet<&str> = all.iter().map(|m| m.delivery.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "a delivery id arrived twice");
    receiver.stop().await;
}

/// Polls `call` on a replica until it answers `want`; returns how long that took.
async fn time_until(what: &str, want: &str, mut call: impl AsyncFnMut() -> String) -> Duration {
    let started = Instant::now();
    loop {
        let got = call().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: still {got} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn authorize_status(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    body: &Value,
) -> String {
    let resp = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        200 => resp.json::<Value>().await.unwrap()["decision"]
            .as_str()
            .unwrap()
            .to_owned(),
        status => status.to_string(),
    }
}

/// A trusted read of `github::get_file`, which the agent's policies allow.
fn trusted_read() -> Value {
    json!({"tool_call": {"tool": "github", "action": "get_file", "mutates_state": false},
           "context": {"source_trust": "trusted_internal_signed"}})
}

/// Adds, through `gw`, the policy `no-reads` that forbids [`trusted_read`].
async fn forbid_reads(client: &reqwest::Client, gw: &Gateway, admin: &str) {
    let resp = client
        .post(gw.url("/v1/policies"))
        .bearer_auth(admin)
        .json(&json!({"id": "no-reads", "text": "forbid (principal, action, resource == Aegis::ToolAction::\"github::get_file\");"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Deletes the policy `no-reads` through `gw`.
async fn allow_reads_again(client: &reqwest::Client, gw: &Gateway, admin: &str) {
    let resp = client
        .delete(gw.url("/v1/policies/no-reads"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_is_enforced_by_the_other_within_a_second() {
    let d = Deployment::start(2, &[]).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, a, &d.admin).await;
    let read = trusted_read();
    let write = merge_call("trusted_internal_signed");
    let post = |path: String, body: Value| {
        let client = client.clone();
        let admin = d.admin.clone();
        async move {
            let resp = client
                .post(a.url(&path))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    // B has the agent, its token and the tenant's policies cached.
    assert_eq!(authorize_status(&client, b, &token, &read).await, "allow");
    assert_eq!(authorize_status(&client, b, &token, &write).await, "allow");

    // Risk tier raised on A: B asks for approval of writes.
    let patched = client
        .patch(a.url(&format!("/v1/agents/{agent_id}")))
        .bearer_auth(&d.admin)
        .json(&json!({"risk_tier": "high"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let tier = time_until("risk tier on B", "require_approval", async || {
        authorize_status(&client, b, &token, &write).await
    })
    .await;

    // A policy added on A: B enforces it.
    forbid_reads(&client, a, &d.admin).await;
    let policy = time_until("policy on B", "deny", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    allow_reads_again(&client, a, &d.admin).await;
    time_until("policy removal on B", "allow", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;

    // Frozen on A: B denies.
    post(
        format!("/v1/agents/{agent_id}/freeze"),
        json!({"reason": "replica test"}),
    )
    .await;
    let freeze = time_until("freeze on B", "deny", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    post(format!("/v1/agents/{agent_id}/unfreeze"), json!({})).await;
    time_until("unfreeze on B", "allow", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;

    // Token rotated on A: B refuses the old token and accepts the new one.
    let rotated = post(format!("/v1/agents/{agent_id}/rotate-token"), json!({})).await;
    let new_token = rotated["agent_token"].as_str().unwrap().to_owned();
    let rotation = time_until("rotation on B", "401", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    assert_eq!(
        authorize_status(&client, b, &new_token, &read).await,
        "allow"
    );

    // Revoked on A: B refuses the current token.
    post(
        format!("/v1/agents/{agent_id}/revoke"),
        json!({"reason": "replica test"}),
    )
    .await;
    let revoke = time_until("revocation on B", "401", async || {
        authorize_status(&client, b, &new_token, &read).await
    })
    .await;

    for (change, took) in [
        ("risk tier", tier),
        ("policy", policy),
        ("freeze", freeze),
        ("rotation", rotation),
        ("revocation", revoke),
    ] {
        eprintln!("{change} reached B in {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "{change} took {took:?} to reach B"
        );
    }
}

/// A replica that cannot read a change from the log (here its event row does not read)
/// cannot know what the change was: it drops every cached view instead of keeping the old
/// ones, so the change is still enforced, and it follows the log past the unreadable row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_other_replica_cannot_read_from_the_log_still_reaches_it() {
    let d = Deployment::start(2, &[]).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, a, &d.admin).await;
    let read = trusted_read();
    // B has the tenant's policies cached.
    assert_eq!(authorize_status(&client, b, &token, &read).await, "allow");

    // Every `policy.put` event is stored without its commit time, a row no reader can read
    // (a payload that is not JSON reads as `null` and stops nobody; `log_reads.rs`).
    let (pg, connection) = tokio_postgres::connect(d.database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    pg.batch_execute(
        "ALTER TABLE events ALTER COLUMN created_at DROP NOT NULL;
         CREATE FUNCTION unreadable_row() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN NEW.created_at := NULL; RETURN NEW; END $$;
         CREATE TRIGGER unreadable_policy_events BEFORE INSERT ON events FOR EACH ROW
             WHEN (NEW.kind = 'policy.put') EXECUTE FUNCTION unreadable_row();",
    )
    .await
    .unwrap();
    forbid_reads(&client, a, &d.admin).await;
    let policy = time_until("unreadable policy change on B", "deny", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    eprintln!("the unreadable policy change reached B in {policy:?}");
    assert!(policy < Duration::from_secs(1), "took {policy:?}");
    eventually(5, "B to log why it dropped its views", || async {
        (b.log_text())
            .contains("dropping every cached agent and tenant view")
            .then_some(())
    })
    .await;
    let metrics = client
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "aegis_cache_flushes_total 1"),
        "{metrics}"
    );

    // B follows the log past the row: the next change (a `policy.deleted`, which the
    // trigger leaves readable) reaches it as usual.
    allow_reads_again(&client, a, &d.admin).await;
    let removal = time_until("policy removal on B", "allow", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    assert!(removal < Duration::from_secs(1), "took {removal:?}");
}

/// Rate limits set through one replica reach the other like any settings change; each
/// replica then enforces them on buckets of its own (`docs/replicas.md`: N replicas admit up
/// to N times a limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_set_through_one_replica_are_enforced_by_each_on_its_own_buckets() {
    let d = Deployment::start(2, &[]).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, a, &d.admin).await;
    let read = trusted_read();
    let put = async |path: String, body: Value| {
        let resp = client
            .put(a.url(&path))
            .bearer_auth(&d.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    };
    // B has the tenant cached, without limits.
    assert_eq!(authorize_status(&client, b, &token, &read).await, "allow");

    put(
        "/v1/tenants/rate-limits".into(),
        json!({"per_agent_per_sec": 1, "burst": 1}),
    )
    .await;
    time_until("rate limit on B", "deny", async || {
        authorize_status(&client, b, &token, &read).await
    })
    .await;
    // A's bucket is its own: full, though B's was just found empty.
    assert_eq!(authorize_status(&client, a, &token, &read).await, "allow");

    // The agent's own bucket, set through A, replaces the tenant's on B: five calls in a row
    // pass, which a bucket of one a second never lets through.
    put(
        format!("/v1/agents/{agent_id}/rate-limits"),
        json!({"per_agent_per_sec": 1000, "burst": 1000}),
    )
    .await;
    time_until("the agent's own bucket on B", "allow", async || {
        for _ in 0..5 {
            let answer = authorize_status(&client, b, &token, &read).await;
            if answer != "allow" {
                return answer;
            }
        }
        "allow".to_owned()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_on_two_replicas_loses_nothing_and_the_chain_verifies() {
    let d = Deployment::start(2, &[]).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &d.replicas[0], &d.admin).await;
    let bases: Vec<String> = d.replicas.iter().map(|r| r.base.clone()).collect();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..16 {
        let (client, token, bases) = (client.clone(), token.clone(), bases.clone());
        callers.spawn(async move {
            let mut answered = Vec::new();
            for call in 0..25 {
                let base = &bases[(caller + call) % bases.len()];
                let source = if call % 3 == 0 {
                    "untrusted_external"
                } else {
                    "trusted_internal_signed"
                };
                let resp: Value = post_json(
                    &client,
                    format!("{base}/v1/authorize"),
                    &token,
                    &merge_call(source),
                )
                .await;
                let id = resp["decision_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{base}: {resp}"));
                answered.push(id.to_owned());
            }
            answered
        });
    }
    let mut answered = HashSet::new();
    while let Some(ids) = callers.join_next().await {
        answered.extend(ids.unwrap());
    }
    assert_eq!(answered.len(), 400);

    // Every answered decision is stored, and either replica finds it.
    for (i, id) in answered.iter().enumerate() {
        let replica = &d.replicas[i % 2];
        let stored = get_json(
            &client,
            replica.url(&format!("/v1/decisions/{id}")),
            &d.admin,
        )
        .await;
        assert_eq!(stored["decision_id"], id.as_str());
    }

    // One chain, no fork: the CLI verifies it from the database (checkpoints signed by two
    // replicas, each with its own key).
    let verify = aegis(
        d.dir.path(),
        &["receipts", "verify", "--db", d.database.url()],
    );
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "verify failed: {said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.contains("400 receipts in 1 chain"), "{said}");

    // The event log is gap-free in commit order: seqs are exactly 1..=N.
    let (client_pg, connection) = tokio_postgres::connect(d.database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client_pg
        .query_one(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0), COUNT(DISTINCT seq) FROM events",
            &[],
        )
        .await
        .unwrap();
    let (count, max, distinct): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((count, distinct), (max, max), "event seqs have gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_soc_leader_hands_over_and_the_next_storm_is_detected_once() {
    let mut d = Deployment::start(1, &[]).await;
    wait_until_leading(&d.replicas[0]).await;
    let second = start_replica(d.dir.path(), 1, d.database.url(), &[]).await;
    d.replicas.push(second);
    let client = reqwest::Client::new();
    let (first_agent, first_token) = agent_with_github(&client, &d.replicas[1], &d.admin).await;
    for i in 0..5 {
        authorize(
            &client,
            &d.replicas[i % 2],
            &first_token,
            "untrusted_external",
        )
        .await;
    }
    eventually(10, "the first storm's incident", || async {
        let found = deny_storm_incidents(&client, &d.replicas[1], &d.admin, &first_agent).await;
        (found.len() == 1).then_some(())
    })
    .await;
    assert!(!d.replicas[1].log_text().contains("leading:"));

    // The leader dies without a word; the survivor takes the SOC over.
    let leader = d.replicas.remove(0);
    leader.kill_9();
    let survivor = &d.replicas[0];
    let killed_at = Instant::now();
    wait_until_leading(survivor).await;
    let failover = killed_at.elapsed();
    eprintln!("SOC failover took {failover:?}");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    let (second_agent, second_token) = agent_with_github(&client, survivor, &d.admin).await;
    for _ in 0..5 {
        assert_eq!(
            authorize(&client, survivor, &second_token, "untrusted_external").await,
            "deny"
        );
    }
    eventually(10, "the second storm's incident", || async {
        let found = deny_storm_incidents(&client, survivor, &d.admin, &second_agent).await;
        (found.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        deny_storm_incidents(&client, survivor, &d.admin, &second_agent)
            .await
            .len(),
        1
    );
    // The new leader resumed from the old one's cursor: the first storm is still one incident.
    assert_eq!(
        deny_storm_incidents(&client, survivor, &d.admin, &first_agent)
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_through_one_replica_closes_its_live_feed_on_the_other_within_a_second() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let d = Deployment::start(2, &[]).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, a, &d.admin).await;
    let key = post_json(
        &client,
        a.url("/v1/keys"),
        &d.admin,
        &json!({"role": "viewer"}),
    )
    .await;
    let (key_id, viewer) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());

    // The viewer and the admin watch on B.
    let feed_url = |key: &str| {
        b.url(&format!("/v1/ws/events?token={key}"))
            .replacen("http", "ws", 1)
    };
    let (mut viewer_feed, _) = tokio_tungstenite::connect_async(feed_url(viewer))
        .await
        .unwrap();
    let (mut admin_feed, _) = tokio_tungstenite::connect_async(feed_url(&d.admin))
        .await
        .unwrap();
    assert_eq!(next_json(&mut viewer_feed).await["type"], "hello");
    assert_eq!(next_json(&mut admin_feed).await["type"], "hello");
    // A decision made through A reaches both (after whatever B published late).
    authorize(&client, a, &token, "trusted_internal_signed").await;
    for feed in [&mut viewer_feed, &mut admin_feed] {
        while next_json(feed).await["kind"] != "decision" {}
    }

    // Revoked through A, and activity right after.
    let revoked = client
        .delete(a.url(&format!("/v1/keys/{key_id}")))
        .bearer_auth(&d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked_at = Instant::now();
    authorize(&client, a, &token, "trusted_internal_signed").await;

    // B closes the viewer's feed with 1008, having delivered nothing more.
    let mut delivered = Vec::new();
    let close = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), viewer_feed.next())
            .await
            .expect("B ends the revoked key's feed");
        match message {
            Some(Ok(Message::Text(text))) => {
                delivered.push(serde_json::from_str::<Value>(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let took = revoked_at.elapsed();
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "operator key revoked");
    eprintln!("the revocation through A closed the feed on B in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The admin's feed shows the revocation's seq, and the decision after it.
    let revocation_seq = loop {
        let event = next_json(&mut admin_feed).await;
        if event["kind"] == "key.revoked" {
            assert_eq!(event["subject_id"], key_id);
            break event["seq"].as_i64().unwrap();
        }
    };
    while next_json(&mut admin_feed).await["kind"] != "decision" {}
    assert!(
        delivered
            .iter()
            .all(|event| event["seq"].as_i64().unwrap() < revocation_seq),
        "nothing from the revocation on reached the revoked key: {delivered:?}"
    );
}
