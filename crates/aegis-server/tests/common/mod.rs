//! Test harness: a real gateway on loopback over a real database.
//!
//! [`TestApp::spawn`] opens a fresh store — a SQLite file in a temporary directory, or a
//! fresh database on the test PostgreSQL server — serves `aegis_server::router` on
//! `127.0.0.1:0` in a background task and hands back a client and helpers. Tests talk HTTP
//! only; to look behind the API they use the [`Store`] trait (`app.store`) or SQL that both
//! databases understand ([`TestApp::rows`], [`TestApp::count`], [`TestApp::execute`]).
//!
//! [`store_test!`] declares a test once and runs it against both backends, as
//! `name::sqlite` and `name::postgres`.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use aegis_core::receipt::{ChainBreak, ChainVerifier, KeyRing, Receipt, ReceiptSigner};
use aegis_server::{AppState, Settings};
use aegis_store::postgres::PgStore;
use aegis_store::sqlite::SqliteStore;
use aegis_store::{Store, TenantId};
use ed25519_dalek::VerifyingKey;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// Seed of the receipt signing key used by every test gateway.
pub const SIGNING_SEED: [u8; 32] = [42; 32];

/// The key that seals webhook secrets in every test gateway.
pub fn test_secrets_key() -> aegis_store::SecretsKey {
    aegis_store::SecretsKey::from_bytes(&[43; 32])
}

/// Declares an async test that runs once per backend, as `name::sqlite` and
/// `name::postgres`; the body sees the backend under the given name.
macro_rules! store_test {
    (async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::common::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::common::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// Which database a test gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database behind a test gateway.
pub enum TestDb {
    Sqlite {
        store: Arc<SqliteStore>,
        path: PathBuf,
    },
    Postgres {
        store: Arc<PgStore>,
        database: aegis_testdb::FreshDatabase,
    },
}

impl TestDb {
    /// Opens the store the tests run against. The one place a backend is chosen.
    pub async fn open(backend: Backend, dir: &Path, signer: Arc<ReceiptSigner>) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let path = dir.join("aegis.db");
                let store = SqliteStore::open(&path, signer, test_secrets_key())
                    .expect("open the SQLite store");
                TestDb::Sqlite {
                    store: Arc::new(store),
                    path,
                }
            }
            Backend::Postgres => {
                let database = aegis_testdb::FreshDatabase::create().await;
                let store = PgStore::connect(database.url(), signer, test_secrets_key())
                    .await
                    .expect("open the PostgreSQL store");
                TestDb::Postgres {
                    store: Arc::new(store),
                    database,
                }
            }
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite { store, .. } => Arc::clone(store) as Arc<dyn Store>,
            TestDb::Postgres { store, .. } => Arc::clone(store) as Arc<dyn Store>,
        }
    }
}

/// A value bound to or read from test SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Sql {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Null,
}

impl Sql {
    pub fn text(&self) -> &str {
        match self {
            Sql::Text(text) => text,
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Sql::Int(value) => *value,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
}

impl From<&str> for Sql {
    fn from(text: &str) -> Sql {
        Sql::Text(text.to_owned())
    }
}

impl From<&String> for Sql {
    fn from(text: &String) -> Sql {
        Sql::Text(text.clone())
    }
}

impl From<i64> for Sql {
    fn from(value: i64) -> Sql {
        Sql::Int(value)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The store the server runs on, for inspection through the `Store` trait.
    pub store: Arc<dyn Store>,
    pub db: TestDb,
    pub signer: Arc<ReceiptSigner>,
    /// The gateway's shared state, for what only the process can tell (e.g. the live
    /// feed's log reads).
    pub state: aegis_server::SharedState,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    // Last: the directory outlives everything that has the database open.
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.abort();
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, Settings::default()).await
    }

    /// As [`TestApp::spawn`], with the gateway's settings.
    pub async fn spawn_with(backend: Backend, settings: Settings) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Arc::new(ReceiptSigner::from_seed(&SIGNING_SEED));
        let db = TestDb::open(backend, dir.path(), Arc::clone(&signer)).await;
        let store = db.store();
        let state = AppState::new(Arc::clone(&store), settings);
        // As `aegis serve` does: the caches follow the log (which also closes the live feeds
        // of revoked keys), and one follower feeds every live feed. They run until the app is
        // dropped (a dropped sender would stop them at once).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(aegis_server::coherence::follow_changes(
            Arc::clone(&state),
            stopped.clone(),
        ));
        tokio::spawn(aegis_server::live_feed::follow_log(
            Arc::clone(&state),
            stopped,
        ));
        let app = aegis_server::router(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, axum::ServiceExt::into_make_service(app))
                .await
                .expect("server runs");
        });
        TestApp {
            addr,
            client: reqwest::Client::new(),
            store,
            db,
            signer,
            state,
            stop,
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

    /// Runs SQL both databases understand, with `?1`-style placeholders, returning every
    /// row as text, integers and NULLs (behind the store's back: for inspection and for
    /// tampering tests).
    pub async fn rows(&self, sql: &str, params: &[Sql]) -> Vec<Vec<Sql>> {
        match &self.db {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open the database");
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout");
                let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let columns = statement.column_count();
                let bound = params.iter().map(sqlite_value);
                statement
                    .query_map(rusqlite::params_from_iter(bound), |row| {
                        (0..columns)
                            .map(|i| {
                                Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Integer(value) => Sql::Int(value),
                                    rusqlite::types::Value::Text(text) => Sql::Text(text),
                                    rusqlite::types::Value::Blob(bytes) => Sql::Bytes(bytes),
                                    rusqlite::types::Value::Null => Sql::Null,
                                    rusqlite::types::Value::Real(value) => {
                                        panic!("{sql}: unexpected real {value}")
                                    }
                                })
                            })
                            .collect()
                    })
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            TestDb::Postgres { database, .. } => {
                let (client, connection) =
                    tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
                        .await
                        .expect("connect to the test database");
                tokio::spawn(connection);
                let sql = postgres_placeholders(sql);
                let bound: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
                    .iter()
                    .map(
                        |param| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                            match param {
                                Sql::Int(value) => Box::new(*value),
                                Sql::Text(text) => Box::new(text.clone()),
                                Sql::Bytes(bytes) => Box::new(bytes.clone()),
                                Sql::Null => Box::new(Option::<String>::None),
                            }
                        },
                    )
                    .collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = bound
                    .iter()
                    .map(|param| param.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows = client
                    .query(&sql, &refs)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                use tokio_postgres::types::Type;
                                match *row.columns()[i].type_() {
                                    Type::INT8 => row.get::<_, Option<i64>>(i).map(Sql::Int),
                                    Type::INT4 => {
                                        row.get::<_, Option<i32>>(i).map(|v| Sql::Int(v.into()))
                                    }
                                    Type::BOOL => row
                                        .get::<_, Option<bool>>(i)
                                        .map(|v| Sql::Int(i64::from(v))),
                                    Type::BYTEA => row.get::<_, Option<Vec<u8>>>(i).map(Sql::Bytes),
                                    _ => row.get::<_, Option<String>>(i).map(Sql::Text),
                                }
                                .unwrap_or(Sql::Null)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// Runs a query returning one integer.
    pub async fn count(&self, sql: &str, params: &[Sql]) -> i64 {
        let rows = self.rows(sql, params).await;
        assert_eq!(rows.len(), 1, "{sql}: expected one row");
        rows[0][0].int()
    }

    /// Follows `X-Next-Cursor` from `path` (which has a `?`); returns every page.
    pub async fn all_pages(&self, key: &str, path: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut cursor = String::new();
        loop {
            let response = self.get(key, &format!("{path}{cursor}")).await;
            let next = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_owned());
            pages.push(expect_json(response, StatusCode::OK).await);
            match next {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return pages,
            }
        }
    }

    /// Runs a statement (behind the store's back); returns the rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Sql]) -> u64 {
        match &self.db {
            // SQLite cannot wrap DML in WITH; count its changes directly.
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open the database");
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout");
                conn.execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(sqlite_value)),
                )
                .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            TestDb::Postgres { .. } => {
                let counted =
                    format!("WITH changed AS ({sql} RETURNING 1) SELECT COUNT(*) FROM changed");
                self.count(&counted, params).await as u64
            }
        }
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
        let keys: KeyRing = self
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
fn sqlite_value(param: &Sql) -> rusqlite::types::Value {
    match param {
        Sql::Int(value) => rusqlite::types::Value::Integer(*value),
        Sql::Text(text) => rusqlite::types::Value::Text(text.clone()),
        Sql::Bytes(bytes) => rusqlite::types::Value::Blob(bytes.clone()),
        Sql::Null => rusqlite::types::Value::Null,
    }
}

/// `?1` placeholders (SQLite) as `$1` (PostgreSQL).
fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

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
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        content_type.as_ref().and_then(|value| value.to_str().ok()),
        Some("application/json"),
        "a decision is answered as JSON: {body}"
    );
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
