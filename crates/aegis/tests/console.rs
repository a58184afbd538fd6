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

/// A gateway on a fresh database with tenant `acme`, its admin key, a client for the API
/// (bearer keys) and a [`browser`].
struct Console {
    gw: Gateway,
    admin: String,
    api: reqwest::Client,
    browser: reqwest::Client,
    db: Db,
    dir: tempfile::TempDir,
}

/// A signed-in browser: its session cookie (`name=value`) and the CSRF token of its forms.
struct Session {
    cookie: String,
    csrf: String,
}

impl Console {
    async fn start(backend: Backend) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        Console {
            gw,
            admin,
            api: reqwest::Client::new(),
            browser: browser(),
            db,
            dir,
        }
    }

    /// Stops the gateway, then starts another on the same database.
    async fn restart(self) -> Console {
        let Console { gw, dir, db, .. } = self;
        drop(gw);
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        Console {
            gw,
            dir,
            db,
            ..self
        }
    }

    /// Signs in with `key`; returns the session cookie (`name=value`) and the whole header.
    async fn sign_in(&self, key: &str) -> (String, String) {
        let answer = self
            .post_form("", "/console/sign-in", &[("key", key)])
            .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "sign-in redirects");
        assert_eq!(answer.headers()[LOCATION], "/console/incidents");
        let header = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = header.split(';').next().unwrap().to_owned();
        (cookie, header)
    }

    /// Signs in with `key` and reads the CSRF token off a page.
    async fn session(&self, key: &str) -> Session {
        let (cookie, _) = self.sign_in(key).await;
        let csrf = self.csrf_of(&cookie).await;
        Session { cookie, csrf }
    }

    async fn page(&self, cookie: &str, path: &str) -> reqwest::Response {
        self.browser
            .get(self.gw.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    async fn html(&self, cookie: &str, path: &str) -> String {
        let answer = self.page(cookie, path).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        answer.text().await.unwrap()
    }

    /// The CSRF token a signed-in page carries in its forms.
    async fn csrf_of(&self, cookie: &str) -> String {
        let html = self.html(cookie, "/console/agents").await;
        let marker = r#"name="csrf" value=""#;
        let start = html.find(marker).expect("a form with the CSRF token") + marker.len();
        html[start..start + 64].to_owned()
    }

    async fn post_form(
        &self,
        cookie: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.browser
            .post(self.gw.url(path))
            .header(COOKIE, cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Registers an agent with the `github` tool: (agent id, agent token).
    async fn agent(&self) -> (String, String) {
        agent_with_github(&self.api, &self.gw, &self.admin).await
    }

    async fn agent_status(&self, agent: &str) -> String {
        let agent = get_json(
            &self.api,
            self.gw.url(&format!("/v1/agents/{agent}")),
            &self.admin,
        )
        .await;
        agent["status"].as_str().unwrap().to_owned()
    }

    async fn new_key(&self, role: &str, name: &str) -> Value {
        let body = json!({"role": role, "name": name});
        post_json(&self.api, self.gw.url("/v1/keys"), &self.admin, &body).await
    }

    /// The agent's authorize call; returns the decision.
    async fn authorize(&self, token: &str, call: &Value) -> Value {
        post_json(&self.api, self.gw.url("/v1/authorize"), token, call).await
    }
}

e2e_test! {
    async fn a_session_is_a_hashed_cookie_that_survives_a_restart_until_sign_out(backend) {
        let console = Console::start(backend).await;
        let db = console.db.arg().to_owned();

        assert_eq!(
            console.page("", "/console/incidents").await.headers()[LOCATION],
            "/console/sign-in",
            "without a session the console asks to sign in"
        );
        let (cookie, header) = console.sign_in(&console.admin).await;
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"] {
            assert!(header.contains(attribute), "{attribute} in {header}");
        }
        assert!(!header.contains(&console.admin), "the key never goes back to the browser");
        let session_id = cookie.split_once('=').unwrap().1;
        // Only the session id's hash is stored, next to the key's id; never the key.
        let stored = query_column(&db, "SELECT key_id FROM console_sessions").await;
        assert_eq!(stored.len(), 1);
        assert!(stored[0].starts_with("key_"));
        let hashed = query_column(
            &db,
            &format!("SELECT key_id FROM console_sessions WHERE id_hash = {}", hash_literal(backend, session_id)),
        )
        .await;
        assert_eq!(hashed, stored, "the row is found by the SHA-256 of the cookie's id");
        assert_eq!(console.page(&cookie, "/console/incidents").await.status(), StatusCode::OK);

        // Sessions live in the database: a restarted gateway still knows this one.
        let csrf = console.csrf_of(&cookie).await;
        let console = console.restart().await;
        assert_eq!(console.page(&cookie, "/console/agents").await.status(), StatusCode::OK);

        // Sign-out needs the CSRF token too, then ends the session for good.
        let refused = console.post_form(&cookie, "/console/sign-out", &[]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let out = console.post_form(&cookie, "/console/sign-out", &[("csrf", &csrf)]).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(
            console.page(&cookie, "/console/incidents").await.headers()[LOCATION],
            "/console/sign-in"
        );
        assert!(query_column(&db, "SELECT key_id FROM console_sessions").await.is_empty());
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
        let console = Console::start(backend).await;
        let (_, agent_token) = console.agent().await;
        for key in ["aok_0000", agent_token.as_str(), ""] {
            let answer = console.post_form("", "/console/sign-in", &[("key", key)]).await;
            assert!(answer.status().is_client_error(), "{key:?}: {}", answer.status());
            assert!(answer.headers().get(SET_COOKIE).is_none());
            let html = answer.text().await.unwrap();
            assert!(html.contains("Operator key"), "the form is shown again");
        }
    }
}

e2e_test! {
    async fn every_state_change_needs_the_session_csrf_token(backend) {
        let console = Console::start(backend).await;
        let (agent, _) = console.agent().await;
        let session = console.session(&console.admin).await;
        let other = console.session(&console.admin).await;
        let freeze = format!("/console/agents/{agent}/freeze");

        for form in [vec![], vec![("csrf", "")], vec![("csrf", other.csrf.as_str())]] {
            let refused = console.post_form(&session.cookie, &freeze, &form).await;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{form:?}");
            assert!(refused.text().await.unwrap().contains("csrf"));
        }
        assert_eq!(console.agent_status(&agent).await, "active");

        let done = console
            .post_form(
                &session.cookie,
                &freeze,
                &[("csrf", &session.csrf), ("reason", "storm"), ("back", "https://evil.example/")],
            )
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            done.headers()[LOCATION],
            format!("/console/agents/{agent}"),
            "a redirect never leaves the console"
        );
        assert_eq!(console.agent_status(&agent).await, "frozen");
    }
}

e2e_test! {
    async fn the_role_of_the_key_decides_what_is_offered_and_what_is_done(backend) {
        let console = Console::start(backend).await;
        let (agent, _) = console.agent().await;
        let viewer = console.new_key("viewer", "Vic").await;
        let responder = console.new_key("responder", "Dana").await;
        let agent_page = format!("/console/agents/{agent}");

        let viewer = console.session(viewer["key"].as_str().unwrap()).await;
        let html = console.html(&viewer.cookie, &agent_page).await;
        for button in ["Freeze agent", "Revoke agent", "Rotate token"] {
            assert!(!html.contains(button), "a viewer is not offered {button}");
        }
        // A forged POST with the viewer's own valid token is refused by role.
        let refused = console.post_form(&viewer.cookie, &format!("{agent_page}/freeze"), &[("csrf", &viewer.csrf)]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(console.agent_status(&agent).await, "active");

        let responder_session = console.session(responder["key"].as_str().unwrap()).await;
        let html = console.html(&responder_session.cookie, &agent_page).await;
        assert!(html.contains("Freeze agent"));
        assert!(!html.contains("Revoke agent"), "revocation is an admin's act");
        let refused = console
            .post_form(&responder_session.cookie, &format!("{agent_page}/revoke"), &[("csrf", &responder_session.csrf)])
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(console.agent_status(&agent).await, "active");

        // Revoking the key ends its sessions at once.
        let revoked = console
            .api
            .delete(console.gw.url(&format!("/v1/keys/{}", responder["id"].as_str().unwrap())))
            .bearer_auth(&console.admin)
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success());
        assert_eq!(
            console.page(&responder_session.cookie, &agent_page).await.headers()[LOCATION],
            "/console/sign-in"
        );
    }
}

e2e_test! {
    async fn an_approval_is_decided_from_the_console_as_the_session_key_and_the_call_then_passes(backend) {
        let console = Console::start(backend).await;
        let (agent, token) = console.agent().await;
        let two_people = console
            .api
            .put(console.gw.url("/v1/tenants/approvals"))
            .bearer_auth(&console.admin)
            .json(&json!({"ttl_secs": 900, "approvals_required": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(two_people.status(), StatusCode::OK);
        let mut call = merge_call("semi_trusted_customer");
        call["tool_call"]["parameters"]["title"] = json!("<script>alert(1)</script>");
        let asked = console.authorize(&token, &call).await;
        assert_eq!(asked["decision"], "require_approval", "{asked}");
        let approval_id = asked["approval"]["id"].as_str().unwrap().to_owned();
        let approve = format!("/console/approvals/{approval_id}/approve");
        let pending = || async {
            get_json(&console.api, console.gw.url(&format!("/v1/approvals/{approval_id}")), &console.admin).await
        };

        // A viewer reads the whole call, escaped, and is offered nothing; its POST is refused.
        let viewer = console.new_key("viewer", "Vic").await;
        let viewer = console.session(viewer["key"].as_str().unwrap()).await;
        let html = console.html(&viewer.cookie, "/console/approvals").await;
        for shown in [approval_id.as_str(), agent.as_str(), "merge_pull_request", "payments#482", "0 of 2 required", "two-person rule"] {
            assert!(html.contains(shown), "the page shows {shown}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "parameters are escaped");
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains(&approve), "a viewer is not offered Approve");
        let refused = console.post_form(&viewer.cookie, &approve, &[("csrf", &viewer.csrf)]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(pending().await["approvals"], json!([]));

        // A responder approves with its session's CSRF token; the approver is its key.
        let responder = console.new_key("responder", "Dana").await;
        let dana = console.session(responder["key"].as_str().unwrap()).await;
        let without_token = console.post_form(&dana.cookie, &approve, &[("reason", "forged")]).await;
        assert_eq!(without_token.status(), StatusCode::FORBIDDEN);
        let done = console
            .post_form(&dana.cookie, &approve, &[("csrf", &dana.csrf), ("reason", "release window"), ("back", &format!("/console/approvals?decided={approval_id}"))])
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert_eq!(done.headers()[LOCATION], format!("/console/approvals?decided={approval_id}"));
        let voted = pending().await;
        assert_eq!(voted["status"], "pending", "the two-person rule wants a second key");
        assert_eq!(voted["approvals"][0]["key_id"], responder["id"]);
        assert_eq!(voted["approvals"][0]["reason"], "release window");
        let html = console.html(&dana.cookie, &format!("/console/approvals?decided={approval_id}")).await;
        assert!(html.contains("Your approval is recorded (1 of 2)"), "{html}");
        assert!(html.contains("1 of 2 required") && html.contains("Dana"));
        assert!(!html.contains(&approve), "the key that approved is not offered Approve again");
        let again = console.post_form(&dana.cookie, &approve, &[("csrf", &dana.csrf)]).await;
        assert_eq!(again.status(), StatusCode::CONFLICT, "the server refuses it anyway");
        let waiting = console.authorize(&token, &call).await;
        assert_eq!((waiting["decision"].as_str(), waiting["approval"]["id"].as_str()), (Some("require_approval"), Some(approval_id.as_str())));

        // A second key approves from the console: the agent's repeated call is allowed once.
        let admin = console.session(&console.admin).await;
        let done = console.post_form(&admin.cookie, &approve, &[("csrf", &admin.csrf)]).await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert_eq!(pending().await["status"], "approved");
        let html = console.html(&admin.cookie, &format!("/console/approvals?decided={approval_id}")).await;
        assert!(html.contains("Approved: the agent"), "{html}");
        assert!(html.contains("No call is waiting for approval"));
        let allowed = console.authorize(&token, &call).await;
        assert_eq!(allowed["decision"], "allow", "{allowed}");
        assert_eq!(allowed["approval"]["status"], "consumed");
    }
}

e2e_test! {
    async fn a_rejection_from_the_console_keeps_the_call_denied(backend) {
        let console = Console::start(backend).await;
        let (_, token) = console.agent().await;
        let call = merge_call("semi_trusted_customer");
        let asked = console.authorize(&token, &call).await;
        let approval_id = asked["approval"]["id"].as_str().unwrap().to_owned();
        let admin = console.session(&console.admin).await;
        let done = console
            .post_form(&admin.cookie, &format!("/console/approvals/{approval_id}/reject"), &[("csrf", &admin.csrf), ("reason", "not during the freeze")])
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        let rejected = get_json(&console.api, console.gw.url(&format!("/v1/approvals/{approval_id}")), &console.admin).await;
        assert_eq!(rejected["status"], "rejected");
        assert_eq!(rejected["rejected_by"]["reason"], "not during the freeze");
        let mut named = call.clone();
        named["approval_id"] = json!(approval_id);
        assert_eq!(console.authorize(&token, &named).await["decision"], "deny");
    }
}

e2e_test! {
    async fn an_admin_edits_the_thresholds_and_a_refused_value_is_shown_on_the_form(backend) {
        let console = Console::start(backend).await;
        let admin = console.session(&console.admin).await;
        let settings = |path: &str| get_json(&console.api, console.gw.url(&format!("/v1/tenants/{path}")), &console.admin);
        let before = settings("deny-storm").await;

        // The API's rule refuses the value; the page says why, next to the form as typed.
        for (threshold, why) in [("0", "must be between 1 and 1000"), ("1001", "must be between 1 and 1000"), ("3.5", "must be a whole number")] {
            let refused = console
                .post_form(&admin.cookie, "/console/settings/deny-storm", &[("csrf", &admin.csrf), ("threshold", threshold), ("window_secs", "60")])
                .await;
            assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{threshold}");
            let html = refused.text().await.unwrap();
            assert!(html.contains(&format!("Not saved: Deny-storm denies {why}.")), "{html}");
            assert!(html.contains(&format!(r#"name="threshold" value="{threshold}""#)), "the typed value is kept");
            assert_eq!(settings("deny-storm").await, before);
        }
        let refused = console
            .post_form(&admin.cookie, "/console/settings/risk-escalation", &[("csrf", &admin.csrf), ("denial_threshold", "5"), ("window_minutes", "")])
            .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.text().await.unwrap().contains("Not saved: Escalation window (minutes) is required."));

        let saved = console
            .post_form(&admin.cookie, "/console/settings/deny-storm", &[("csrf", &admin.csrf), ("threshold", "3"), ("window_secs", "")])
            .await;
        assert_eq!((saved.status(), &saved.headers()[LOCATION]), (StatusCode::SEE_OTHER, &"/console/settings".parse().unwrap()));
        assert_eq!(settings("deny-storm").await, json!({"threshold": 3, "window_secs": null}));
        let saved = console
            .post_form(&admin.cookie, "/console/settings/risk-escalation", &[("csrf", &admin.csrf), ("denial_threshold", "4"), ("window_minutes", "30")])
            .await;
        assert_eq!(saved.status(), StatusCode::SEE_OTHER);
        assert_eq!(settings("risk-escalation").await, json!({"denial_threshold": 4, "window_minutes": 30}));
        let html = console.html(&admin.cookie, "/console/settings").await;
        assert!(html.contains("3 denies within the gateway default window") && html.contains("4 denies within 30 min"));

        // A responder sees the thresholds but cannot change them, whatever it posts.
        let responder = console.new_key("responder", "Dana").await;
        let dana = console.session(responder["key"].as_str().unwrap()).await;
        assert!(!console.html(&dana.cookie, "/console/settings").await.contains("Save deny storm"));
        let refused = console
            .post_form(&dana.cookie, "/console/settings/deny-storm", &[("csrf", &dana.csrf), ("threshold", "9"), ("window_secs", "")])
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(settings("deny-storm").await["threshold"], 3);
    }
}

e2e_test! {
    async fn an_admin_edits_the_policies_and_cedar_refusals_are_shown_at_their_line(backend) {
        let console = Console::start(backend).await;
        let (_, token) = console.agent().await;
        let admin = console.session(&console.admin).await;
        let policies = || get_json(&console.api, console.gw.url("/v1/policies"), &console.admin);
        let merge = merge_call("trusted_internal_signed");
        let matched = |decision: &Value| decision["matched_policies"].as_array().is_some_and(|names| names.contains(&json!("no-merges")));
        assert_eq!(console.authorize(&token, &merge).await["decision"], "allow");

        // Cedar refuses the text: the page shows it as typed (escaped), the line and column,
        // and the line itself; nothing is saved.
        let broken = "forbid (principal, action, resource)\nwhen { context.target like \"<b>\" && };";
        let refused = console
            .post_form(&admin.cookie, "/console/settings/policies", &[("csrf", &admin.csrf), ("id", "no-merges"), ("text", broken)])
            .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = refused.text().await.unwrap();
        assert!(html.contains("Not saved: line 2, column"), "{html}");
        assert!(html.contains("when { context.target like &quot;&lt;b&gt;&quot; &amp;&amp; };\n"), "the line is quoted, escaped: {html}");
        assert!(html.contains(r#"aria-invalid="true""#) && html.contains(r#"value="no-merges""#));
        assert!(!html.contains("<b>"));
        assert_eq!(policies().await, json!([]));

        // A valid policy is saved and decides the next call.
        let forbid = "@reason(\"no merges today\")\nforbid (principal, action, resource == Aegis::ToolAction::\"github::merge_pull_request\");";
        let saved = console
            .post_form(&admin.cookie, "/console/settings/policies", &[("csrf", &admin.csrf), ("id", "no-merges"), ("text", forbid)])
            .await;
        assert_eq!(saved.status(), StatusCode::SEE_OTHER);
        assert_eq!(policies().await, json!([{"id": "no-merges", "text": forbid}]));
        let denied = console.authorize(&token, &merge).await;
        assert_eq!(denied["decision"], "deny", "{denied}");
        assert!(matched(&denied), "{denied}");

        // Replacing it with a broken text keeps the stored one, and shows the error on its form.
        let refused = console
            .post_form(&admin.cookie, "/console/settings/policies", &[("csrf", &admin.csrf), ("id", "no-merges"), ("replace", "true"), ("text", "forbid (principal, action, resource)\nwhen {\n  context.no_such_fact == \"x\" };")])
            .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.text().await.unwrap().contains("Not saved: line 3, column 3"));
        assert_eq!(policies().await[0]["text"], forbid);

        let deleted = console
            .post_form(&admin.cookie, "/console/settings/policies/no-merges/delete", &[("csrf", &admin.csrf)])
            .await;
        assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
        assert_eq!(policies().await, json!([]));
        assert_eq!(console.authorize(&token, &merge).await["decision"], "allow");
    }
}

e2e_test! {
    async fn an_admin_adds_and_deletes_webhooks_and_sees_the_secret_once(backend) {
        let console = Console::start(backend).await;
        let admin = console.session(&console.admin).await;
        let webhooks = || get_json(&console.api, console.gw.url("/v1/webhooks"), &console.admin);

        // The API's SSRF rule applies.
        let refused = console
            .post_form(&admin.cookie, "/console/settings/webhooks", &[("csrf", &admin.csrf), ("url", "http://127.0.0.1:9/hook"), ("format", "slack")])
            .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = refused.text().await.unwrap();
        assert!(html.contains("Not added: url must not point to an internal address"), "{html}");
        assert!(html.contains(r#"value="http://127.0.0.1:9/hook""#) && html.contains(r#"value="slack" selected"#));
        assert_eq!(webhooks().await, json!([]));

        let added = console
            .post_form(&admin.cookie, "/console/settings/webhooks", &[("csrf", &admin.csrf), ("url", "https://93.184.215.14/aegis"), ("format", "slack")])
            .await;
        assert_eq!(added.status(), StatusCode::OK);
        let html = added.text().await.unwrap();
        let marker = r#"id="webhook-secret">"#;
        let start = html.find(marker).expect("the secret is shown") + marker.len();
        let secret = &html[start..start + html[start..].find('<').unwrap()];
        assert!(secret.starts_with("whsec_"), "{secret}");
        let listed = webhooks().await;
        assert_eq!((&listed[0]["url"], &listed[0]["format"]), (&json!("https://93.184.215.14/aegis"), &json!("slack")));
        let id = listed[0]["id"].as_str().unwrap().to_owned();
        let page = console.html(&admin.cookie, "/console/settings").await;
        assert!(page.contains("https://93.184.215.14/aegis") && !page.contains(secret), "the secret is never shown again");

        let deleted = console
            .post_form(&admin.cookie, &format!("/console/settings/webhooks/{id}/delete"), &[("csrf", &admin.csrf)])
            .await;
        assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
        assert_eq!(webhooks().await, json!([]));
    }
}

e2e_test! {
    async fn only_an_admin_changes_policies_and_webhooks(backend) {
        let console = Console::start(backend).await;
        let forbid = "forbid (principal, action, resource == Aegis::ToolAction::\"github::get_file\");";
        let stored = post_json(&console.api, console.gw.url("/v1/policies"), &console.admin, &json!({"id": "no-reads", "text": forbid})).await;
        assert_eq!(stored["id"], "no-reads");
        let hook = post_json(&console.api, console.gw.url("/v1/webhooks"), &console.admin, &json!({"url": "https://93.184.215.14/aegis"})).await;
        let hook_id = hook["id"].as_str().unwrap();
        for role in ["viewer", "responder"] {
            let key = console.new_key(role, "Robin").await;
            let session = console.session(key["key"].as_str().unwrap()).await;
            let html = console.html(&session.cookie, "/console/settings").await;
            assert!(html.contains("no-reads"), "{role} reads the policies");
            for offered in ["Add policy", "Replace policy", "Delete policy", "Add webhook", "Delete webhook"] {
                assert!(!html.contains(offered), "{role} is not offered {offered}");
            }
            let delete_hook = format!("/console/settings/webhooks/{hook_id}/delete");
            for (path, form) in [
                ("/console/settings/policies", vec![("id", "x"), ("text", forbid)]),
                ("/console/settings/policies", vec![("id", "no-reads"), ("replace", "true"), ("text", forbid)]),
                ("/console/settings/policies/no-reads/delete", vec![]),
                ("/console/settings/webhooks", vec![("url", "https://93.184.215.14/x"), ("format", "json")]),
                (delete_hook.as_str(), vec![]),
            ] {
                let mut form = form;
                form.push(("csrf", &session.csrf));
                let refused = console.post_form(&session.cookie, path, &form).await;
                assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{role} {path}");
            }
        }
        // And an admin without the session's CSRF token is refused too.
        let admin = console.session(&console.admin).await;
        let refused = console
            .post_form(&admin.cookie, "/console/settings/policies/no-reads/delete", &[("csrf", "0".repeat(64).as_str())])
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let policies = get_json(&console.api, console.gw.url("/v1/policies"), &console.admin).await;
        assert_eq!(policies.as_array().unwrap().len(), 1);
        let hooks = get_json(&console.api, console.gw.url("/v1/webhooks"), &console.admin).await;
        assert_eq!(hooks.as_array().unwrap().len(), 1);
    }
}

e2e_test! {
    async fn the_console_feed_takes_the_session_only_from_its_own_pages(backend) {
        let console = Console::start(backend).await;
        let (cookie, _) = console.sign_in(&console.admin).await;
        let host = console.gw.base.trim_start_matches("http://").to_owned();
        let handshake = |origin: &str| {
            console
                .browser
                .get(console.gw.url("/console/feed"))
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
