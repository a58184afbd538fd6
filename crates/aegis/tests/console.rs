//! The console's sessions, CSRF tokens and roles, over HTTP against the built binary on
//! both stores. (What the pages show and do in a browser is tested with a real Chromium:
//! `crates/aegis-console/browser-tests`.)

#[macro_use]
mod support;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use support::*;

/// A browser without JavaScript: keeps no cookie jar (the tests pass the cookie) and does
/// not follow redirects, so each answer can be checked.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`; returns the session cookie (`name=value`) and the whole header.
async fn sign_in(client: &reqwest::Client, gw: &Gateway, key: &str) -> (String, String) {
    let answer = client
        .post(gw.url("/console/sign-in"))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "sign-in redirects");
    assert_eq!(answer.headers()[LOCATION], "/console/incidents");
    let header = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = header.split(';').next().unwrap().to_owned();
    (cookie, header)
}

async fn page(
    client: &reqwest::Client,
    gw: &Gateway,
    cookie: &str,
    path: &str,
) -> reqwest::Response {
    client
        .get(gw.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// The CSRF token a signed-in page carries in its forms.
async fn csrf_of(client: &reqwest::Client, gw: &Gateway, cookie: &str) -> String {
    let answer = page(client, gw, cookie, "/console/agents").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let html = answer.text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a form with the CSRF token") + marker.len();
    html[start..start + 64].to_owned()
}

async fn post_form(
    client: &reqwest::Client,
    gw: &Gateway,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(gw.url(path))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn agent_status(client: &reqwest::Client, gw: &Gateway, admin: &str, agent: &str) -> String {
    let agent = get_json(client, gw.url(&format!("/v1/agents/{agent}")), admin).await;
    agent["status"].as_str().unwrap().to_owned()
}

async fn new_key(client: &reqwest::Client, gw: &Gateway, admin: &str, role: &str) -> Value {
    post_json(client, gw.url("/v1/keys"), admin, &json!({"role": role})).await
}

e2e_test! {
    async fn a_session_is_a_hashed_cookie_that_survives_a_restart_until_sign_out(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = browser();

        assert_eq!(
            page(&client, &gw, "", "/console/incidents").await.headers()[LOCATION],
            "/console/sign-in",
            "without a session the console asks to sign in"
        );
        let (cookie, header) = sign_in(&client, &gw, &admin).await;
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"] {
            assert!(header.contains(attribute), "{attribute} in {header}");
        }
        assert!(!header.contains(&admin), "the key never goes back to the browser");
        let session_id = cookie.split_once('=').unwrap().1;
        // Only the session id's hash is stored, next to the key's id; never the key.
        let stored = query_column(db.arg(), "SELECT key_id FROM console_sessions").await;
        assert_eq!(stored.len(), 1);
        assert!(stored[0].starts_with("key_"));
        let hashed = query_column(
            db.arg(),
            &format!("SELECT key_id FROM console_sessions WHERE id_hash = {}", hash_literal(backend, session_id)),
        )
        .await;
        assert_eq!(hashed, stored, "the row is found by the SHA-256 of the cookie's id");
        assert_eq!(page(&client, &gw, &cookie, "/console/incidents").await.status(), StatusCode::OK);

        // Sessions live in the database: a restarted gateway still knows this one.
        let csrf = csrf_of(&client, &gw, &cookie).await;
        drop(gw);
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        assert_eq!(page(&client, &gw, &cookie, "/console/agents").await.status(), StatusCode::OK);

        // Sign-out needs the CSRF token too, then ends the session for good.
        let refused = post_form(&client, &gw, &cookie, "/console/sign-out", &[]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let out = post_form(&client, &gw, &cookie, "/console/sign-out", &[("csrf", &csrf)]).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(
            page(&client, &gw, &cookie, "/console/incidents").await.headers()[LOCATION],
            "/console/sign-in"
        );
        assert!(query_column(db.arg(), "SELECT key_id FROM console_sessions").await.is_empty());
    }
}

/// The SQL literal of the SHA-256 of `secret` (how the store keys a session).
fn hash_literal(backend: Backend, secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex = hex::encode(Sha256::digest(secret.as_bytes()));
    match backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

e2e_test! {
    async fn keys_that_are_not_operator_keys_cannot_sign_in(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = browser();
        let (_, agent_token) = agent_with_github(&reqwest::Client::new(), &gw, &admin).await;
        for key in ["aok_0000", agent_token.as_str(), ""] {
            let answer = client
                .post(gw.url("/console/sign-in"))
                .form(&[("key", key)])
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_client_error(), "{key:?}: {}", answer.status());
            assert!(answer.headers().get(SET_COOKIE).is_none());
            let html = answer.text().await.unwrap();
            assert!(html.contains("Operator key"), "the form is shown again");
        }
    }
}

e2e_test! {
    async fn every_state_change_needs_the_session_csrf_token(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let api = reqwest::Client::new();
        let client = browser();
        let (agent, _) = agent_with_github(&api, &gw, &admin).await;
        let (cookie, _) = sign_in(&client, &gw, &admin).await;
        let (other_cookie, _) = sign_in(&client, &gw, &admin).await;
        let other_csrf = csrf_of(&client, &gw, &other_cookie).await;
        let freeze = format!("/console/agents/{agent}/freeze");

        for form in [vec![], vec![("csrf", "")], vec![("csrf", other_csrf.as_str())]] {
            let refused = post_form(&client, &gw, &cookie, &freeze, &form).await;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{form:?}");
            assert!(refused.text().await.unwrap().contains("csrf"));
        }
        assert_eq!(agent_status(&api, &gw, &admin, &agent).await, "active");

        let csrf = csrf_of(&client, &gw, &cookie).await;
        let done = post_form(
            &client,
            &gw,
            &cookie,
            &freeze,
            &[("csrf", &csrf), ("reason", "storm"), ("back", "https://evil.example/")],
        )
        .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            done.headers()[LOCATION],
            format!("/console/agents/{agent}"),
            "a redirect never leaves the console"
        );
        assert_eq!(agent_status(&api, &gw, &admin, &agent).await, "frozen");
    }
}

e2e_test! {
    async fn the_role_of_the_key_decides_what_is_offered_and_what_is_done(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let api = reqwest::Client::new();
        let client = browser();
        let (agent, _) = agent_with_github(&api, &gw, &admin).await;
        let viewer = new_key(&api, &gw, &admin, "viewer").await;
        let responder = new_key(&api, &gw, &admin, "responder").await;
        let agent_page = format!("/console/agents/{agent}");

        let (viewer_cookie, _) = sign_in(&client, &gw, viewer["key"].as_str().unwrap()).await;
        let html = page(&client, &gw, &viewer_cookie, &agent_page).await.text().await.unwrap();
        for button in ["Freeze agent", "Revoke agent", "Rotate token"] {
            assert!(!html.contains(button), "a viewer is not offered {button}");
        }
        // A forged POST with the viewer's own valid token is refused by role.
        let csrf = csrf_of(&client, &gw, &viewer_cookie).await;
        let refused = post_form(&client, &gw, &viewer_cookie, &format!("{agent_page}/freeze"), &[("csrf", &csrf)]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(agent_status(&api, &gw, &admin, &agent).await, "active");

        let (responder_cookie, _) = sign_in(&client, &gw, responder["key"].as_str().unwrap()).await;
        let html = page(&client, &gw, &responder_cookie, &agent_page).await.text().await.unwrap();
        assert!(html.contains("Freeze agent"));
        assert!(!html.contains("Revoke agent"), "revocation is an admin's act");
        let csrf = csrf_of(&client, &gw, &responder_cookie).await;
        let refused = post_form(&client, &gw, &responder_cookie, &format!("{agent_page}/revoke"), &[("csrf", &csrf)]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(agent_status(&api, &gw, &admin, &agent).await, "active");

        // Revoking the key ends its sessions at once.
        let revoked = api
            .delete(gw.url(&format!("/v1/keys/{}", responder["id"].as_str().unwrap())))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success());
        assert_eq!(
            page(&client, &gw, &responder_cookie, &agent_page).await.headers()[LOCATION],
            "/console/sign-in"
        );
    }
}

e2e_test! {
    async fn the_console_feed_takes_the_session_only_from_its_own_pages(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = browser();
        let (cookie, _) = sign_in(&client, &gw, &admin).await;
        let host = gw.base.trim_start_matches("http://").to_owned();
        let handshake = |origin: &str| {
            client
                .get(gw.url("/console/feed"))
                .header(COOKIE, &cookie)
                .header("origin", origin)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .send()
        };
        assert_eq!(handshake("https://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(
            handshake(&format!("http://{host}")).await.unwrap().status(),
            StatusCode::SWITCHING_PROTOCOLS
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_answers_carry_a_strict_content_security_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let answer = browser()
        .get(gw.url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    let policy = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'none'"));
    assert!(policy.contains("script-src 'self'"));
    assert_eq!(answer.headers()["x-frame-options"], "DENY");
}
