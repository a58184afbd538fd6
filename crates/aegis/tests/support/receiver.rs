//! A webhook receiver on loopback that records every POST (`/hook`, `/slack`) and answers
//! 200, or never answers (`/hang`), or holds the request until released (`/hold`, counting
//! requests held and given up by the sender), or answers 200 only to POSTs signed with
//! the secret it expects (`/signed`; others get 401 and are counted, not recorded).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub delivery: String,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    /// How many `/hold` requests the sender had given up on when this one arrived.
    pub holds_given_up: usize,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

pub type Log = Arc<Mutex<Vec<Received>>>;

/// The `/hold` requests: how many are held now, at most, and given up by the sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct Holds {
    pub held: usize,
    pub max_held: usize,
    pub given_up: usize,
    pub answered: usize,
}

#[derive(Clone)]
struct Shared {
    log: Log,
    holds: Arc<Mutex<Holds>>,
    release: tokio::sync::watch::Sender<bool>,
    expected_secret: Arc<Mutex<Option<String>>>,
    rejected: Arc<Mutex<usize>>,
}

/// A webhook receiver on loopback that records every POST and answers 200.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn record(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let holds_given_up = shared.holds.lock().unwrap().given_up;
    shared.log.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        delivery: header(&headers, "x-aegis-delivery").unwrap_or_default(),
        signature: header(&headers, "x-aegis-signature"),
        body: body.to_vec(),
        holds_given_up,
    });
    StatusCode::OK
}

/// Counts a held request out when its handler ends, answered or dropped by the sender.
struct HeldRequest {
    holds: Arc<Mutex<Holds>>,
    answered: bool,
}

impl Drop for HeldRequest {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().unwrap();
        holds.held -= 1;
        if self.answered {
            holds.answered += 1;
        } else {
            holds.given_up += 1;
        }
    }
}

async fn hold(State(shared): State<Shared>) -> StatusCode {
    let mut request = {
        let mut holds = shared.holds.lock().unwrap();
        holds.held += 1;
        holds.max_held = holds.max_held.max(holds.held);
        HeldRequest {
            holds: Arc::clone(&shared.holds),
            answered: false,
        }
    };
    let _ = shared
        .release
        .subscribe()
        .wait_for(|released| *released)
        .await;
    request.answered = true;
    StatusCode::OK
}

/// Whether `signature` (`t=…,v1=…`) is the HMAC of `body` under `secret`.
pub fn signed_with(signature: Option<&str>, body: &[u8], secret: &str) -> bool {
    let Some((t, v1)) = signature.and_then(|s| s.strip_prefix("t=")?.split_once(",v1=")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

async fn signed(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secret = shared.expected_secret.lock().unwrap().clone();
    let signature = header(&headers, "x-aegis-signature");
    match secret {
        Some(secret) if signed_with(signature.as_deref(), &body, &secret) => {
            record(State(shared), uri, headers, body).await
        }
        _ => {
            *shared.rejected.lock().unwrap() += 1;
            StatusCode::UNAUTHORIZED
        }
    }
}

impl Receiver {
    pub async fn start(addr: SocketAddr, log: Log) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            log,
            holds: Arc::default(),
            release: tokio::sync::watch::channel(false).0,
            expected_secret: Arc::default(),
            rejected: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(record))
            .route("/slack", post(record))
            .route("/hold", post(hold))
            .route("/signed", post(signed))
            .route(
                "/hang",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK
                }),
            )
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The `/hold` requests so far.
    pub fn holds(&self) -> Holds {
        *self.shared.holds.lock().unwrap()
    }

    /// Answers every held `/hold` request, and every later one at once.
    pub fn release_holds(&self) {
        self.shared.release.send_replace(true);
    }

    /// `/signed` accepts POSTs signed with this secret from now on.
    pub fn expect_secret(&self, secret: &str) {
        *self.shared.expected_secret.lock().unwrap() = Some(secret.to_owned());
    }

    /// `/signed` POSTs refused for a wrong or missing signature.
    pub fn rejected(&self) -> usize {
        *self.shared.rejected.lock().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

/// Where to start a receiver that needs no address known beforehand: the OS picks the port
/// as the receiver binds it, so no other socket can take it first (as one can between
/// [`free_addr`] and the bind).
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The ids of the denies reported in `messages`, in order.
pub fn deny_ids(messages: &[Received]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| {
            m.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["kind"] == "deny")
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}
