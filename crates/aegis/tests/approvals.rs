//! Approvals against the built binary, on SQLite and PostgreSQL: the whole flow with its
//! events on the live feed, the swapped call's alert, and the receipts that name the
//! approver verifying offline.

#[macro_use]
mod support;

use serde_json::{Value, json};
use support::*;

async fn post(
    client: &reqwest::Client,
    gw: &Gateway,
    credential: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .post(gw.url(path))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The next live-feed event whose kind starts with `approval.`.
async fn next_approval_event<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let event = next_json(ws).await;
        if event["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("approval."))
        {
            return event;
        }
    }
}

e2e_test!(async fn approve_then_use_once_and_a_swapped_call_raises_an_alert(backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(backend, dir.path()).await;
    let admin = init_on(dir.path(), db.arg(), "acme");
    let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let (status, responder) = post(&client, &gw, &admin, "/v1/keys", json!({"role": "responder", "name": "Dana"})).await;
    assert_eq!(status, 201);
    let (responder_id, responder) = (
        responder["id"].as_str().unwrap().to_owned(),
        responder["key"].as_str().unwrap().to_owned(),
    );
    let ws_url = gw
        .url(&format!("/v1/ws/events?token={admin}"))
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("websocket");
    assert_eq!(next_json(&mut ws).await["type"], "hello");

    let call = merge_call("semi_trusted_customer");
    let (_, asked) = post(&client, &gw, &token, "/v1/authorize", call.clone()).await;
    assert_eq!(asked["decision"], "require_approval", "{asked}");
    let approval_id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let requested = next_approval_event(&mut ws).await;
    assert_eq!((requested["kind"].as_str(), requested["agent_id"].as_str()), (Some("approval.requested"), Some(agent_id.as_str())));

    let (status, approved) = post(&client, &gw, &responder, &format!("/v1/approvals/{approval_id}/approve"), json!({})).await;
    assert_eq!((status, approved["status"].as_str()), (200, Some("approved")));
    assert_eq!(next_approval_event(&mut ws).await["kind"], "approval.approved");

    // Approved for this call, used for another: denied, alerted, the approval unused.
    let mut swapped = call.clone();
    swapped["tool_call"]["parameters"]["base_branch"] = json!("release");
    swapped["approval_id"] = json!(approval_id);
    let (_, denied) = post(&client, &gw, &token, "/v1/authorize", swapped).await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(next_approval_event(&mut ws).await["kind"], "approval.mismatch");
    eventually(5, "the approval_mismatch alert", || async {
        let alerts = get_json(&client, gw.url("/v1/alerts?kind=approval_mismatch"), &admin).await;
        (alerts.as_array().unwrap().len() == 1).then_some(())
    })
    .await;

    // The exact call passes once; its receipt names the approver.
    let (_, allowed) = post(&client, &gw, &token, "/v1/authorize", call.clone()).await;
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["approval"]["status"], "consumed");
    assert_eq!(next_approval_event(&mut ws).await["kind"], "approval.consumed");
    let (_, again) = post(&client, &gw, &token, "/v1/authorize", call).await;
    assert_eq!(again["decision"], "require_approval");
    assert_ne!(again["approval"]["id"], approval_id.as_str());

    assert_eq!(gw.terminate().code(), Some(0));
    let export = aegis(dir.path(), &["receipts", "export", "--db", db.arg()]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let receipts: Vec<Value> = std::str::from_utf8(&export.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let named: Vec<&Value> = receipts.iter().filter(|r| r.get("approval").is_some()).collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0]["decision_id"], allowed["decision_id"]);
    assert_eq!(named[0]["approval"], json!({"id": approval_id, "approved_by": [responder_id]}));
    let file = dir.path().join("chain.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    for args in [
        vec!["receipts", "verify", file.to_str().unwrap()],
        vec!["receipts", "verify", "--db", db.arg()],
    ] {
        let verified = aegis(dir.path(), &args);
        assert!(verified.status.success(), "{args:?}: {}", String::from_utf8_lossy(&verified.stderr));
    }
});

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A request as Slack sends it: `payload=<JSON>` form-encoded, signed `v0` with the app's
/// signing secret over `v0:<timestamp>:<body>` (Slack's documented scheme, computed here
/// independently of the gateway's code).
async fn slack_click(
    client: &reqwest::Client,
    gw: &Gateway,
    secret: &str,
    timestamp: i64,
    body: String,
) -> (u16, Value) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let response = client
        .post(gw.url("/v1/callbacks/slack"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn button_body(user: &str, action_id: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "dana"},
        "team": {"id": "T1"},
        "actions": [{"type": "button", "action_id": action_id, "value": value}],
        "response_url": "https://hooks.slack.com/actions/T1/1/x",
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

e2e_test!(async fn slack_buttons_decide_as_the_registered_key_and_forgeries_change_nothing(backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(backend, dir.path()).await;
    let admin = init_on(dir.path(), db.arg(), "acme");
    let slack = support::receiver::Receiver::start(support::receiver::any_port(), Default::default()).await;
    let slack_url = slack.url("/slack");
    let gw = Gateway::start_on(
        dir.path(),
        db.arg(),
        &[
            ("AEGIS_SLACK_WEBHOOK_URL", slack_url.as_str()),
            ("AEGIS_SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("AEGIS_PUBLIC_URL", "https://aegis.example.com"),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let (_, responder) = post(&client, &gw, &admin, "/v1/keys", json!({"role": "responder", "name": "Dana"})).await;
    let responder_id = responder["id"].as_str().unwrap().to_owned();
    let (_, viewer) = post(&client, &gw, &admin, "/v1/keys", json!({"role": "viewer"})).await;

    let (_, asked) = post(&client, &gw, &token, "/v1/authorize", merge_call("semi_trusted_customer")).await;
    let approval_id = asked["approval"]["id"].as_str().unwrap().to_owned();
    // The Slack message names the approval, links it and carries the two buttons.
    let value = eventually(10, "the approval's Slack message", || async {
        slack.received().iter().find_map(|m| {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            (text.contains(&format!("https://aegis.example.com/v1/approvals/{approval_id}"))
                && text.contains("aegis_approve")
                && text.contains("aegis_reject"))
            .then(|| format!("acme/{approval_id}"))
        })
    })
    .await;

    // Only an admin registers Slack users, only to responder or admin keys.
    let (status, _) = post(&client, &gw, responder["key"].as_str().unwrap(), "/v1/slack/approvers",
        json!({"slack_user_id": "U123", "key_id": responder_id})).await;
    assert_eq!(status, 403);
    let (status, refused) = post(&client, &gw, &admin, "/v1/slack/approvers",
        json!({"slack_user_id": "U123", "key_id": viewer["id"]})).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (422, Some("key_id")));
    let (status, _) = post(&client, &gw, &admin, "/v1/slack/approvers",
        json!({"slack_user_id": "U123", "key_id": responder_id})).await;
    assert_eq!(status, 201);

    let status_of = || async {
        get_json(&client, gw.url(&format!("/v1/approvals/{approval_id}")), &admin).await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let approve = button_body("U123", "aegis_approve", &value);
    // Forged (another secret), stale (signed 6 minutes ago) and unregistered clicks change
    // nothing.
    let (status, _) = slack_click(&client, &gw, "not-the-secret", unix_now(), approve.clone()).await;
    assert_eq!(status, 401);
    let (status, _) = slack_click(&client, &gw, SLACK_SECRET, unix_now() - 360, approve.clone()).await;
    assert_eq!(status, 401);
    let (status, answer) = slack_click(&client, &gw, SLACK_SECRET, unix_now(), button_body("U999", "aegis_approve", &value)).await;
    assert_eq!(status, 200);
    assert!(answer["text"].as_str().unwrap().contains("not registered"), "{answer}");
    let (status, _) = slack_click(&client, &gw, SLACK_SECRET, unix_now(), "payload=not-json".to_owned()).await;
    assert_eq!(status, 400);
    assert_eq!(status_of().await, "pending");

    // The registered user's click approves, as the key they were registered with.
    let (status, answer) = slack_click(&client, &gw, SLACK_SECRET, unix_now(), approve.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["replace_original"], true);
    assert!(answer["text"].as_str().unwrap().contains("approved"), "{answer}");
    let approval = get_json(&client, gw.url(&format!("/v1/approvals/{approval_id}")), &admin).await;
    assert_eq!(approval["status"], "approved");
    assert_eq!(approval["approvals"][0]["key_id"], responder_id.as_str());
    // Clicking again is refused by the same rules as the API.
    let (_, again) = slack_click(&client, &gw, SLACK_SECRET, unix_now(), approve).await;
    assert!(again["text"].as_str().unwrap().contains("not changed"), "{again}");
});

/// `n` different calls that each ask people (semi-trusted writes with other parameters).
async fn ask_n(client: &reqwest::Client, gw: &Gateway, token: &str, n: usize) {
    for pr in 0..n {
        let mut call = merge_call("semi_trusted_customer");
        call["tool_call"]["parameters"]["pr"] = json!(pr);
        let (_, asked) = post(client, gw, token, "/v1/authorize", call).await;
        assert_eq!(asked["decision"], "require_approval", "{asked}");
    }
}

e2e_test!(async fn an_approval_flood_is_an_incident_and_at_l3_the_agent_is_contained(backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(backend, dir.path()).await;
    let admin = init_on(dir.path(), db.arg(), "acme");
    let gw = Gateway::start_on(
        dir.path(),
        db.arg(),
        &[("AEGIS_APPROVAL_FLOOD_N", "4"), ("AEGIS_APPROVAL_FLOOD_WINDOW_SECS", "60")],
    )
    .await;
    let client = reqwest::Client::new();
    let incidents_of = |agent: String| {
        let (client, gw, admin) = (&client, &gw, &admin);
        async move {
            let list = get_json(client, gw.url(&format!("/v1/incidents?kind=approval_flood&agent_id={agent}")), admin).await;
            list.as_array().unwrap().clone()
        }
    };

    // L1 (default): an incident, people notified, nothing contained.
    let (quiet, quiet_token) = agent_with_github(&client, &gw, &admin).await;
    ask_n(&client, &gw, &quiet_token, 3).await;
    let (flooder, token) = agent_with_github(&client, &gw, &admin).await;
    ask_n(&client, &gw, &token, 4).await;
    let opened = eventually(10, "the approval_flood incident", || async {
        let found = incidents_of(flooder.clone()).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(opened.len(), 1);
    assert_eq!((opened[0]["severity"].as_str(), opened[0]["status"].as_str()), (Some("high"), Some("open")));
    assert!(incidents_of(quiet.clone()).await.is_empty(), "3 requests stay below the threshold");
    let agent = get_json(&client, gw.url(&format!("/v1/agents/{flooder}")), &admin).await;
    assert_eq!(agent["status"], "active");

    // L3: the next flooder is frozen and its pending requests are rejected, each an event.
    let response = client
        .put(gw.url("/v1/tenants/soc-autonomy"))
        .bearer_auth(&admin)
        .json(&json!({"level": "L3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (contained, contained_token) = agent_with_github(&client, &gw, &admin).await;
    ask_n(&client, &gw, &contained_token, 4).await;
    eventually(10, "the flooding agent frozen", || async {
        let agent = get_json(&client, gw.url(&format!("/v1/agents/{contained}")), &admin).await;
        (agent["status"] == "frozen").then_some(())
    })
    .await;
    let rejected = get_json(&client, gw.url(&format!("/v1/approvals?agent_id={contained}&status=rejected")), &admin).await;
    let rejected = rejected.as_array().unwrap();
    assert_eq!(rejected.len(), 4);
    assert!(rejected.iter().all(|a| a["rejected_by"]["key_name"] == "SOC response engine"));
    let pending = get_json(&client, gw.url(&format!("/v1/approvals?agent_id={contained}&status=pending")), &admin).await;
    assert_eq!(pending, json!([]));
    // The first flooder's requests were left to people.
    let untouched = get_json(&client, gw.url(&format!("/v1/approvals?agent_id={flooder}&status=pending")), &admin).await;
    assert_eq!(untouched.as_array().unwrap().len(), 4);
    let events = query_column(
        db.arg(),
        &format!("SELECT kind FROM events WHERE agent_id = '{contained}' AND kind = 'approval.rejected'"),
    )
    .await;
    assert_eq!(events.len(), 4);
});
