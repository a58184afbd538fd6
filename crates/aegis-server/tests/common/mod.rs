//! Test harness: a real gateway on loopback over a real database file.
//!
//! [`TestApp::spawn`] opens a fresh store in a temporary directory, serves
//! `aegis_server::router` on `127.0.0.1:0` in a background task and hands back a client
//! and helpers. Tests talk HTTP only; to look behind the API they use the [`Store`] trait
//! (`app.store`) or raw SQL on the database file (`app.db()`).
//!
//! The backend is chosen in one place, [`TestDb::open`]: a PostgreSQL store plugs in as
//! another [`TestDb`] variant with the same `store()` and query helpers.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use aegis_core::receipt::{ChainBreak, ChainVerifier, Receipt, ReceiptSigner};
use aegis_server::{AppState, Settings};
use aegis_store::sqlite::SqliteStore;
use aegis_store::{Store, TenantId};
use ed25519_dalek::VerifyingKey;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// Seed of the receipt signing key used by every test gateway.
pub const SIGNING_SEED: [u8; 32] = [42; 32];

/// The database behind a test gateway.
pub enum TestDb {
    Sqlite {
        store: Arc<SqliteStore>,
        path: PathBuf,
    },
}

impl TestDb {
    /// Opens the store the tests run against. The one place a backend is chosen.
    pub fn open(dir: &Path, signer: Arc<ReceiptSigner>) -> TestDb {
        let path = dir.join("aegis.db");
        let store = SqliteStore::open(&path, signer).expect("open the SQLite store");
        TestDb::Sqlite {
            store: Arc::new(store),
            path,
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite { store, .. } => Arc::clone(store) as Arc<dyn Store>,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The store the server runs on, for inspection through the `Store` trait.
    pub store: Arc<dyn Store>,
    pub db: TestDb,
    pub signer: Arc<ReceiptSigner>,
    server: tokio::task::JoinHandle<()>,
    // Last: the directory outlives everything that has the database open.
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Arc::new(ReceiptSigner::from_seed(&SIGNING_SEED));
        let db = TestDb::open(dir.path(), Arc::clone(&signer));
        let store = db.store();
        let app = aegis_server::router(AppState::new(Arc::clone(&store), Settings::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("server runs");
        });
        TestApp {
            addr,
            client: reqwest::Client::new(),
            store,
            db,
            signer,
            server,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with a bearer credential (none when `credential` is empty).
    pub fn request(&self, method: Method, path: &str, credential: &str) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        if credential.is_empty() {
            builder
        } else {
            builder.bearer_auth(credential)
        }
    }

    pub async fn get(&self, credential: &str, path: &str) -> Response {
        self.request(Method::GET, path, credential)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, credential: &str, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, credential)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn put(&self, credential: &str, path: &str, body: Value) -> Response {
        self.request(Method::PUT, path, credential)
            .json(&body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn patch(&self, credential: &str, path: &str, body: Value) -> Response {
        self.request(Method::PATCH, path, credential)
            .json(&body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, credential: &str, path: &str) -> Response {
        self.request(Method::DELETE, path, credential)
            .send()
            .await
            .expect("DELETE")
    }

    /// Creates a tenant and its first admin key the way `aegis init` does; returns the key.
    pub async fn create_tenant(&self, id: &str) -> String {
        TenantId::validate(id).expect("valid tenant id");
        aegis_server::auth::create_tenant(self.store.as_ref(), TenantId::new(id))
            .await
            .expect("create tenant")
            .admin_key
    }

    /// A new operator key of `role` ("viewer", "responder", "admin"); returns the secret.
    pub async fn create_key(&self, admin: &str, role: &str) -> String {
        let body = expect_json(
            self.post(
                admin,
                "/v1/keys",
                json!({"role": role, "name": format!("{role} key")}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        body["key"].as_str().expect("key secret").to_owned()
    }

    /// Registers an agent; returns `(agent_id, agent_token)`.
    pub async fn create_agent(&self, admin: &str, name: &str) -> (String, String) {
        let body = expect_json(
            self.post(admin, "/v1/agents", json!({"name": name})).await,
            StatusCode::CREATED,
        )
        .await;
        (
            body["id"].as_str().expect("agent id").to_owned(),
            body["agent_token"]
                .as_str()
                .expect("agent token")
                .to_owned(),
        )
    }

    /// Tool `github`: `get_file` (read, low risk) and `merge_pull_request` (write, high risk).
    pub async fn register_github(&self, admin: &str) {
        expect_json(
            self.post(
                admin,
                "/v1/tools",
                json!({
                    "tool": "github",
                    "actions": [
                        {"action": "get_file", "mutates_state": false, "risk": "low"},
                        {"action": "merge_pull_request", "mutates_state": true, "risk": "high"},
                    ]
                }),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
    }

    /// `POST /v1/authorize` with the minimal body shape.
    pub async fn authorize(
        &self,
        token: &str,
        tool: &str,
        action: &str,
        source_trust: &str,
        mutates_state: bool,
    ) -> Response {
        self.authorize_body(
            token,
            json!({
                "tool_call": {"tool": tool, "action": action, "mutates_state": mutates_state},
                "context": {"source_trust": source_trust},
            }),
        )
        .await
    }

    /// `POST /v1/authorize` with any JSON body.
    pub async fn authorize_body(&self, token: &str, body: Value) -> Response {
        self.post(token, "/v1/authorize", body).await
    }

    /// Authorize and return the 200 decision body.
    pub async fn decide(
        &self,
        token: &str,
        tool: &str,
        action: &str,
        source_trust: &str,
        mutates_state: bool,
    ) -> Value {
        expect_json(
            self.authorize(token, tool, action, source_trust, mutates_state)
                .await,
            StatusCode::OK,
        )
        .await
    }

    /// A tenant with an admin key, the `github` tool and one agent.
    pub async fn tenant_with_agent(&self, tenant: &str) -> Fixture {
        let admin = self.create_tenant(tenant).await;
        self.register_github(&admin).await;
        let (agent_id, token) = self.create_agent(&admin, &format!("{tenant}-bot")).await;
        Fixture {
            tenant: tenant.to_owned(),
            admin,
            agent_id,
            token,
        }
    }

    /// A read-only connection to the database file (SQLite backend).
    pub fn db(&self) -> rusqlite::Connection {
        match &self.db {
            TestDb::Sqlite { path, .. } => rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open the database read-only"),
        }
    }

    /// Runs a query returning one integer.
    pub fn count(&self, sql: &str, params: impl rusqlite::Params) -> i64 {
        self.db()
            .query_row(sql, params, |row| row.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Reads a tenant's whole receipt chain through the store and verifies it with
    /// [`ChainVerifier`] against the stored checkpoints and signing keys. Returns the
    /// receipts checked; panics naming the first bad receipt.
    pub async fn verify_chain(&self, tenant: &str) -> Vec<Receipt> {
        self.try_verify_chain(tenant)
            .await
            .unwrap_or_else(|e| panic!("chain of {tenant} does not verify: {e}"))
    }

    /// As [`TestApp::verify_chain`], returning the first break instead of panicking.
    pub async fn try_verify_chain(&self, tenant: &str) -> Result<Vec<Receipt>, ChainBreak> {
        let tenant_id = TenantId::new(tenant);
        let mut receipts: Vec<Receipt> = Vec::new();
        loop {
            let after = receipts.last().map_or(0, |r| r.body.seq);
            let page = self
                .store
                .receipts(&tenant_id, after, 500)
                .await
                .expect("receipts");
            if page.is_empty() {
                break;
            }
            receipts.extend(page);
        }
        let checkpoints = self
            .store
            .checkpoints(&tenant_id)
            .await
            .expect("checkpoints");
        let keys: HashMap<String, VerifyingKey> = self
            .store
            .signing_keys()
            .await
            .expect("signing keys")
            .into_iter()
            .map(|record| {
                let bytes: [u8; 32] = hex::decode(&record.public_key)
                    .expect("hex public key")
                    .try_into()
                    .expect("32-byte public key");
                let key = VerifyingKey::from_bytes(&bytes).expect("Ed25519 public key");
                (record.key_id, key)
            })
            .collect();
        assert_eq!(
            keys.get(self.signer.key_id()),
            Some(&self.signer.verifying_key()),
            "the gateway's signing key is published in signing_keys"
        );
        let mut verifier = ChainVerifier::new(tenant, &checkpoints, &keys)?;
        for receipt in &receipts {
            verifier.push(receipt)?;
        }
        let checked = verifier.finish()?;
        assert_eq!(checked as usize, receipts.len());
        Ok(receipts)
    }
}

/// What [`TestApp::tenant_with_agent`] set up.
pub struct Fixture {
    pub tenant: String,
    pub admin: String,
    pub agent_id: String,
    pub token: String,
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let url = response.url().clone();
    let text = response.text().await.expect("response body");
    assert_eq!(actual, status, "{url} answered {actual}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text}"))
}

/// Asserts an error response: status and `error.code`; returns the `error` object.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_json(response, status).await;
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "error code of {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error has a message: {body}"
    );
    error
}

/// Asserts status 200 and that the decision is `verdict`; returns the body.
pub async fn expect_decision(response: Response, verdict: &str) -> Value {
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(body["decision"], verdict, "decision body: {body}");
    body
}

/// String items of a JSON array field, e.g. ids of a list.
pub fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a bare JSON array, got {list}"))
        .iter()
        .map(|item| item[field].as_str().expect("string field").to_owned())
        .collect()
}
