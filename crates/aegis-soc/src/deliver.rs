//! The delivery worker: POSTs queued deliveries (`deliveries` table) to their sinks.
//!
//! Each POST carries `X-Aegis-Delivery: <delivery id>` (stable across retries) and, when the
//! sink has a secret, `X-Aegis-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`. A 2xx marks the delivery delivered; anything else is retried with
//! exponential backoff and jitter until `max_retry` after it was queued, then marked failed.
//!
//! Tenants cannot hold each other up: at most `max_in_flight` POSTs run at once, each bounded
//! by `timeout`, and no tenant has more than `max_in_flight_per_tenant` of them; free slots
//! go round-robin over tenants with due deliveries (`NotificationStore::claim_deliveries`), and only as
//! many deliveries are claimed as can start at once. The circuit breaker that pauses an
//! endpoint after consecutive failures is kept per (tenant, endpoint), so failures that one
//! tenant causes at a URL never pause another tenant's deliveries to it.
//!
//! API subscriptions are delivered by a client whose resolver refuses internal addresses at
//! connect time ([`crate::egress`]); a refused delivery is marked failed, not sent. The
//! worker runs on its own tasks and shares nothing with the authorize path or the SOC
//! consumer but the database. A crash between a POST and its "delivered" mark repeats the
//! POST with the same id.

use crate::egress;
use crate::notify::{ENV_JSON_SINK, ENV_SLACK_SINK, SUBSCRIPTION_SINK_PREFIX};
use aegis_store::{
    Delivery, DeliveryClaim, DeliveryOutcome, NotificationStore, StoreError, StoreResult, TenantId,
    now_ms,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Header names of every POST.
pub const DELIVERY_HEADER: &str = "X-Aegis-Delivery";
pub const SIGNATURE_HEADER: &str = "X-Aegis-Signature";

#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// `AEGIS_WEBHOOK_URL`.
    pub env_json_url: Option<String>,
    /// `AEGIS_SLACK_WEBHOOK_URL`.
    pub env_slack_url: Option<String>,
    /// `AEGIS_WEBHOOK_SECRET`: signs the env sinks.
    pub env_secret: Option<String>,
    /// Per-POST timeout.
    pub timeout: Duration,
    /// `AEGIS_WEBHOOK_MAX_RETRY_SECS`: give up this long after queueing.
    pub max_retry: Duration,
    /// First retry delay; doubles per attempt up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Consecutive failures that open an endpoint's circuit …
    pub breaker_threshold: u32,
    /// … for this long.
    pub breaker_pause: Duration,
    pub max_in_flight: usize,
    /// `AEGIS_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT`: one tenant's share of `max_in_flight`.
    pub max_in_flight_per_tenant: usize,
    /// `AEGIS_WEBHOOK_ALLOW_PRIVATE`: API subscriptions may reach internal addresses.
    pub allow_private: bool,
    pub poll: Duration,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig {
            env_json_url: None,
            env_slack_url: None,
            env_secret: None,
            timeout: Duration::from_secs(5),
            max_retry: Duration::from_secs(86_400),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
            breaker_threshold: 5,
            breaker_pause: Duration::from_secs(60),
            max_in_flight: 16,
            max_in_flight_per_tenant: 4,
            allow_private: false,
            poll: Duration::from_millis(200),
        }
    }
}

/// Computes the `X-Aegis-Signature` value for `body` at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until_ms: i64,
}

/// Breakers are per tenant and endpoint: one tenant's failures never pause another's.
type BreakerKey = (TenantId, String);

/// A mutex-guarded value shared between delivery tasks (never held across an await).
type Shared<T> = Arc<std::sync::Mutex<T>>;

struct Target {
    url: String,
    secret: Option<String>,
    /// An API subscription: delivered only to public addresses (unless allowed).
    subscription: bool,
}

struct Worker {
    store: Arc<dyn NotificationStore>,
    config: DeliverConfig,
    /// For the deployment's own (trusted) URLs.
    env_client: reqwest::Client,
    /// For API subscriptions: connects only to addresses that pass the SSRF rule.
    subscription_client: reqwest::Client,
    breakers: Shared<HashMap<BreakerKey, Breaker>>,
    /// Deliveries being sent, with their tenants.
    in_flight: Shared<HashMap<String, TenantId>>,
    /// Finished attempts whose outcome is committed; they leave `in_flight` at the start of
    /// the next pass, before its claim, so a stale read can never send them again.
    finished: Shared<Vec<String>>,
    slots: Arc<Semaphore>,
}

/// A cheap jitter factor in [0.5, 1.0): randomness from the std hasher's random keys.
fn jitter(seed: &str) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(seed.as_bytes());
    hasher.write_i64(now_ms());
    0.5 + (hasher.finish() % 1_000) as f64 / 2_000.0
}

fn client(config: &DeliverConfig, subscriptions: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none());
    if !subscriptions || config.allow_private {
        return builder.build();
    }
    // No proxy: the address checked must be the address connected to.
    builder
        .no_proxy()
        .dns_resolver(Arc::new(egress::PublicOnlyResolver))
        .build()
}

/// Runs the worker until `shutdown` turns true; in-flight POSTs get `timeout` to finish.
pub async fn run(
    store: Arc<dyn NotificationStore>,
    config: DeliverConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (env_client, subscription_client) = match (client(&config, false), client(&config, true)) {
        (Ok(env), Ok(subscription)) => (env, subscription),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot build the webhook HTTP client; no deliveries");
            return;
        }
    };
    let worker = Arc::new(Worker {
        store,
        slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        config,
        env_client,
        subscription_client,
        breakers: Arc::default(),
        in_flight: Arc::default(),
        finished: Arc::default(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Err(error) = worker.pass(&mut tasks).await {
            tracing::error!(%error, "delivery pass failed");
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(worker.config.poll) => {}
            _ = shutdown.changed() => {}
        }
    }
    let grace = worker.config.timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
}

impl Worker {
    async fn pass(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) -> StoreResult<()> {
        {
            let finished = std::mem::take(&mut *self.finished.lock().unwrap());
            let mut in_flight = self.in_flight.lock().unwrap();
            for id in finished {
                in_flight.remove(&id);
            }
        }
        // The free slots, taken now: each delivery claimed gets one (the store claims no
        // more than there are), and those not used go back at the end of the pass.
        let mut slots = Vec::new();
        while let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            slots.push(slot);
        }
        if slots.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // Claim no more than can start now: PostgreSQL leases what it returns, and a
        // delivery leased but not started would wait for its lease to expire.
        let claim = DeliveryClaim {
            now_ms: now,
            limit: u32::try_from(slots.len()).unwrap_or(u32::MAX),
            per_tenant: u32::try_from(self.config.max_in_flight_per_tenant.max(1))
                .unwrap_or(u32::MAX),
            in_flight: self
                .in_flight
                .lock()
                .unwrap()
                .iter()
                .map(|(id, tenant)| (id.clone(), tenant.clone()))
                .collect(),
        };
        let claimed = self.store.claim_deliveries(claim).await?;
        // Deliveries to paused endpoints, postponed together in one write.
        let mut deferred: HashMap<i64, Vec<String>> = HashMap::new();
        for (delivery, slot) in claimed.into_iter().zip(slots) {
            let target = match self.target(&delivery).await? {
                Ok(target) => target,
                Err(error) => {
                    self.store
                        .finish_delivery(&delivery.id, DeliveryOutcome::Failed { error })
                        .await?;
                    continue;
                }
            };
            let key = (delivery.tenant_id.clone(), target.url.clone());
            let open_until = self
                .breakers
                .lock()
                .unwrap()
                .get(&key)
                .map_or(0, |b| b.open_until_ms);
            if open_until > now {
                deferred.entry(open_until).or_default().push(delivery.id);
                continue;
            }
            self.in_flight
                .lock()
                .unwrap()
                .insert(delivery.id.clone(), delivery.tenant_id.clone());
            let worker = Arc::clone(self);
            tasks.spawn(async move {
                let id = delivery.id.clone();
                worker.attempt(delivery, target, key).await;
                worker.finished.lock().unwrap().push(id);
                drop(slot);
            });
        }
        for (until, ids) in deferred {
            self.store.defer_deliveries(ids, until).await?;
        }
        Ok(())
    }

    /// Where a delivery goes, or why it cannot be sent (it is then marked failed): its sink
    /// is gone, or its signing secret does not decrypt (fail closed: never sent unsigned).
    async fn target(&self, delivery: &Delivery) -> StoreResult<Result<Target, String>> {
        const GONE: &str = "the sink is no longer configured";
        let env = |url: &Option<String>| {
            url.as_ref()
                .map(|url| Target {
                    url: url.clone(),
                    secret: self.config.env_secret.clone(),
                    subscription: false,
                })
                .ok_or_else(|| GONE.to_owned())
        };
        let id = match delivery.sink.as_str() {
            ENV_JSON_SINK => return Ok(env(&self.config.env_json_url)),
            ENV_SLACK_SINK => return Ok(env(&self.config.env_slack_url)),
            sink => match sink.strip_prefix(SUBSCRIPTION_SINK_PREFIX) {
                Some(id) => id,
                None => return Ok(Err(GONE.to_owned())),
            },
        };
        let Some(webhook) = self
            .store
            .webhook_by_id(id)
            .await?
            .filter(|w| w.tenant_id == delivery.tenant_id)
        else {
            return Ok(Err(GONE.to_owned()));
        };
        let secret = match self
            .store
            .webhook_signing_secret(&delivery.tenant_id, id)
            .await
        {
            Ok(secret) => secret,
            Err(StoreError::Corrupt(why)) => {
                tracing::error!(delivery_id = %delivery.id, tenant_id = %delivery.tenant_id, webhook_id = id, "{why}; the delivery is not sent");
                return Ok(Err(why));
            }
            Err(error) => return Err(error),
        };
        Ok(Ok(Target {
            url: webhook.url,
            secret,
            subscription: true,
        }))
    }

    /// Sends one delivery and records its outcome.
    async fn attempt(&self, delivery: Delivery, target: Target, breaker: BreakerKey) {
        let outcome = match self.send(&delivery, &target).await {
            Sent::Delivered => {
                self.breakers.lock().unwrap().remove(&breaker);
                DeliveryOutcome::Delivered { at_ms: now_ms() }
            }
            Sent::Refused(refusal) => {
                tracing::warn!(delivery_id = %delivery.id, sink = %delivery.sink, "webhook refused: the URL {refusal}");
                DeliveryOutcome::Failed {
                    error: format!("refused: the URL {refusal}"),
                }
            }
            Sent::Failed(error) => self.failed(&delivery, breaker, error),
        };
        if let Err(error) = self.store.finish_delivery(&delivery.id, outcome).await {
            // Stays pending: it will be sent again with the same id.
            tracing::error!(%error, delivery_id = %delivery.id, "cannot record a delivery outcome");
        }
    }

    async fn send(&self, delivery: &Delivery, target: &Target) -> Sent {
        let client = if target.subscription {
            if !self.config.allow_private
                && let Err(refusal) = egress::refuse_internal_literal(&target.url)
            {
                return Sent::Refused(refusal);
            }
            &self.subscription_client
        } else {
            &self.env_client
        };
        let mut request = client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &delivery.id);
        if let Some(secret) = &target.secret {
            let t = now_ms() / 1000;
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret, t, delivery.body.as_bytes()),
            );
        }
        match request.body(delivery.body.clone()).send().await {
            Ok(response) if response.status().is_success() => Sent::Delivered,
            Ok(response) => Sent::Failed(format!("the endpoint answered {}", response.status())),
            Err(error) if egress::refused_by_resolver(&error) => {
                Sent::Refused(egress::Refusal::Internal)
            }
            // Without the URL: it may carry a secret (Slack webhook URLs do).
            Err(error) if error.is_timeout() => Sent::Failed("timed out".to_owned()),
            Err(error) if error.is_connect() => Sent::Failed("cannot connect".to_owned()),
            Err(_) => Sent::Failed("request failed".to_owned()),
        }
    }

    /// A failed attempt: counts against the breaker, and is retried with backoff until the
    /// retry budget is spent.
    fn failed(&self, delivery: &Delivery, breaker: BreakerKey, error: String) -> DeliveryOutcome {
        let now = now_ms();
        {
            let mut breakers = self.breakers.lock().unwrap();
            let breaker = breakers.entry(breaker).or_default();
            breaker.consecutive_failures += 1;
            if breaker.consecutive_failures >= self.config.breaker_threshold {
                breaker.open_until_ms = now + self.config.breaker_pause.as_millis() as i64;
                tracing::warn!(tenant_id = %delivery.tenant_id, sink = %delivery.sink, failures = breaker.consecutive_failures, "webhook endpoint paused");
            }
        }
        let attempts = delivery.attempts + 1;
        let exp = self
            .config
            .retry_base
            .saturating_mul(1u32 << (attempts - 1).clamp(0, 20) as u32)
            .min(self.config.retry_cap);
        let delay = (exp.as_millis() as f64 * jitter(&delivery.id)) as i64;
        let give_up_at = delivery.created_at_ms + self.config.max_retry.as_millis() as i64;
        tracing::info!(delivery_id = %delivery.id, sink = %delivery.sink, attempts, %error, "webhook delivery failed");
        if now + delay > give_up_at {
            DeliveryOutcome::Failed {
                error: format!("gave up after {attempts} attempts: {error}"),
            }
        } else {
            DeliveryOutcome::Retry {
                next_attempt_at_ms: now + delay,
                error,
            }
        }
    }
}

/// What sending one delivery came to.
enum Sent {
    Delivered,
    /// Not sent: the destination is internal (SSRF).
    Refused(egress::Refusal),
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Reference: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn jitter_stays_within_half_to_one() {
        for i in 0..100 {
            let j = jitter(&i.to_string());
            assert!((0.5..1.0).contains(&j), "{j}");
        }
    }
}
