//! What the built binary tells its operators. `GET /metrics`, scraped while agents call it:
//! the decision counters add up to the decisions answered, the histograms fill, the SOC's
//! figures appear, and Prometheus's own linter (`promtool check metrics`, Debian's
//! `prometheus` package) accepts the text. `AEGIS_LOG_FORMAT=json`: one object per line,
//! each request's id, route, tenant, status and latency, and no credential or parameter.

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use support::*;

/// Calls per source of trust; each source gets one decision from the default pack.
const CALLS_PER_SOURCE: usize = 12;
const SOURCES: [(&str, &str); 3] = [
    ("trusted_internal_signed", "allow"),
    ("untrusted_external", "deny"),
    ("semi_trusted_customer", "require_approval"),
];

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the samples of a Prometheus text exposition (label values without escapes, as
/// ours are).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest.trim_end_matches('}');
                    let labels = (labels.split(',').filter(|pair| !pair.is_empty()))
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label");
                            (key.to_owned(), value.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, HashMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap_or_else(|_| panic!("value of {line}")),
            }
        })
        .collect()
}

/// The value of the one series of `name` carrying `labels` (among others).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matching = samples.iter().filter(|sample| {
        sample.name == name
            && labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
    });
    let found = matching.next()?;
    assert!(
        matching.next().is_none(),
        "several series {name} {labels:?}"
    );
    Some(found.value)
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().await.unwrap()
}

/// `promtool check metrics` on the text: exit 0 and no lint complaint.
fn promtool_accepts(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric the Grafana dashboard in `docs/grafana` queries is one the gateway serves.
fn dashboard_metrics_are_served(found: &[Sample]) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana/aegis.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("aegis_") || word.starts_with("process_"));
            for name in names {
                queried += 1;
                assert!(
                    found.iter().any(|sample| sample.name == name),
                    "the dashboard queries {name}, which /metrics does not serve"
                );
            }
        }
    }
    assert!(
        queried >= 10,
        "{queried} metric names found in the dashboard"
    );
}

e2e_test!(
    async fn counters_add_up_to_the_decisions_made(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let metrics_address = free_address();
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[
                ("AEGIS_METRICS_LISTEN", metrics_address.as_str()),
                // Nothing listens there: notifications stay queued, for the backlog gauges.
                ("AEGIS_WEBHOOK_URL", &format!("http://{}/hook", free_address())),
            ],
        )
        .await;
        let metrics_url = format!("http://{metrics_address}/metrics");
        let client = reqwest::Client::new();
        agent_with_github(&client, &gw, &admin).await;

        // Three agents, one per source (the denied one's risk tier climbs, which must not
        // change the others' decisions), while a fourth client scrapes.
        let mut tokens = Vec::new();
        for _ in SOURCES {
            let agent = post_json(&client, gw.url("/v1/agents"), &admin, &json!({"name": "loader"})).await;
            tokens.push(agent["agent_token"].as_str().unwrap().to_owned());
        }
        let callers = SOURCES.into_iter().zip(tokens).map(|((source, expected), token)| {
            let client = client.clone();
            let url = gw.url("/v1/authorize");
            tokio::spawn(async move {
                for _ in 0..CALLS_PER_SOURCE {
                    let answer: Value =
                        post_json(&client, url.clone(), &token, &merge_call(source)).await;
                    assert_eq!(answer["decision"], expected, "{source}: {answer}");
                }
            })
        }).collect::<Vec<_>>();
        let scraper = {
            let client = client.clone();
            let url = metrics_url.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    samples(&scrape(&client, &url).await);
                }
            })
        };
        for caller in callers {
            caller.await.unwrap();
        }
        scraper.await.unwrap();

        let text = scrape(&client, &metrics_url).await;
        let found = samples(&text);
        let mut total = 0.0;
        for (_, decision) in SOURCES {
            let counted = value(
                &found,
                "aegis_decisions_total",
                &[("decision", decision), ("tenant", "acme")],
            );
            assert_eq!(counted, Some(CALLS_PER_SOURCE as f64), "{decision}\n{text}");
            total += counted.unwrap();
        }
        let timed = value(&found, "aegis_authorize_duration_seconds_count", &[]);
        assert_eq!(timed, Some(total), "one latency sample per decision");
        let within_5s = value(
            &found,
            "aegis_authorize_duration_seconds_bucket",
            &[("le", "5")],
        );
        assert_eq!(within_5s, Some(total));
        assert_eq!(
            value(
                &found,
                "aegis_http_requests_total",
                &[("route", "/v1/authorize"), ("status", "200")]
            ),
            Some(total)
        );

        let store = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let batches = value(&found, "aegis_writer_batch_size_count", &[("store", store)])
            .expect("writer batch sizes");
        let jobs = value(&found, "aegis_writer_batch_size_sum", &[("store", store)]).unwrap();
        assert!(batches >= 1.0 && jobs >= total, "{batches} batches, {jobs} jobs");
        let commits = value(
            &found,
            "aegis_writer_commit_duration_seconds_count",
            &[("store", store)],
        );
        assert_eq!(commits, Some(batches));
        assert!(value(&found, "aegis_writer_queue_depth", &[("store", store)]).is_some());
        assert!(value(&found, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(value(&found, "aegis_event_log_head", &[]).unwrap() >= total);

        // Twelve denies of one agent within the minute: the SOC opens one deny storm and,
        // once it has consumed everything, its lag is zero.
        let text = eventually(20, "the deny storm and a caught-up SOC", || {
            let client = client.clone();
            let url = metrics_url.clone();
            async move {
                let text = scrape(&client, &url).await;
                let found = samples(&text);
                let opened = value(
                    &found,
                    "aegis_incidents_opened_total",
                    &[("kind", "deny_storm")],
                );
                let lag = value(&found, "aegis_consumer_lag_events", &[("consumer", "soc")]);
                let queued = value(
                    &found,
                    "aegis_deliveries",
                    &[("sink", "env:json"), ("status", "pending")],
                );
                (opened == Some(1.0) && lag == Some(0.0) && queued.is_some_and(|n| n > 0.0))
                    .then_some(text)
            }
        })
        .await;
        let found = samples(&text);
        assert_eq!(
            value(&found, "aegis_consumer_lag_seconds", &[("consumer", "soc")]),
            Some(0.0)
        );
        assert!(
            value(
                &found,
                "aegis_delivery_oldest_pending_age_seconds",
                &[("sink", "env:json")]
            )
            .is_some()
        );
        // The semi-trusted agent's twelve identical calls wait on one approval; once an
        // operator approves it, none is pending.
        assert_eq!(value(&found, "aegis_approvals_pending", &[]), Some(1.0), "{text}");
        promtool_accepts(&text);
        dashboard_metrics_are_served(&found);
        let pending: Value = get_json(&client, gw.url("/v1/approvals?status=pending"), &admin).await;
        let pending = pending.as_array().expect("a list of approvals");
        assert_eq!(pending.len(), 1, "{pending:?}");
        let approve = client
            .post(gw.url(&format!("/v1/approvals/{}/approve", pending[0]["id"].as_str().unwrap())))
            .bearer_auth(&admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(approve.status(), 200);
        let found = samples(&scrape(&client, &metrics_url).await);
        assert_eq!(value(&found, "aegis_approvals_pending", &[]), Some(0.0));

        // The API listener does not serve what the metrics listener does.
        let resp = client.get(gw.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
);

/// Defaults and switches that are no store's business, on SQLite: metrics on the API
/// listener, the tenant label cap, and `AEGIS_METRICS=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_label_is_capped_and_metrics_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aegis.db");
    let acme = init(dir.path(), &db, "acme");
    let globex = init(dir.path(), &db, "globex");
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_METRICS_MAX_TENANTS", "1")]).await;
    let client = reqwest::Client::new();
    for admin in [&acme, &globex] {
        let (_, token) = agent_with_github(&client, &gw, admin).await;
        assert_eq!(
            authorize(&client, &gw, &token, "trusted_internal_signed").await,
            "allow"
        );
    }
    let text = scrape(&client, &gw.url("/metrics")).await;
    let found = samples(&text);
    let allowed = |tenant| {
        value(
            &found,
            "aegis_decisions_total",
            &[("decision", "allow"), ("tenant", tenant)],
        )
    };
    assert_eq!(allowed("acme"), Some(1.0), "{text}");
    assert_eq!(allowed("other"), Some(1.0), "{text}");
    assert_eq!(allowed("globex"), None, "{text}");
    promtool_accepts(&text);
    drop(gw);

    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_METRICS", "false")]).await;
    let resp = client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// JSON logs, on SQLite (the log lines do not depend on the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_and_never_its_secrets() {
    const PARAMETER: &str = "parameter-value-that-must-not-be-logged";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aegis.db");
    let admin = init(dir.path(), &db, "acme");
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_LOG_FORMAT", "json")]).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let mut call = merge_call("untrusted_external");
    call["tool_call"]["parameters"] = json!({"note": PARAMETER});
    let resp = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(&token)
        .header("x-request-id", "run-7.step_3")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "run-7.step_3");
    // A request id that is not plain is replaced, never echoed into the log.
    let resp = client
        .get(gw.url("/v1/agents"))
        .bearer_auth(&admin)
        .header("x-request-id", "a b\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.starts_with("req_"), "{made}");

    let lines: Vec<Value> = eventually(10, "both access lines", || {
        let text = gw.log_text();
        let wanted = ["run-7.step_3".to_owned(), made.clone()];
        async move {
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect();
            let logged = |id: &String| {
                lines.iter().any(|line| {
                    line["target"] == "aegis::access" && line["span"]["request_id"] == id.as_str()
                })
            };
            wanted.iter().all(logged).then_some(lines)
        }
    })
    .await;
    let access = |request_id: &str| {
        lines
            .iter()
            .find(|line| {
                line["target"] == "aegis::access" && line["span"]["request_id"] == request_id
            })
            .unwrap_or_else(|| panic!("no access line for {request_id}"))
    };
    let authorize = access("run-7.step_3");
    assert_eq!(authorize["span"]["route"], "/v1/authorize");
    assert_eq!(authorize["span"]["method"], "POST");
    assert_eq!(authorize["span"]["tenant"], "acme");
    assert_eq!(authorize["status"], 200);
    assert!(authorize["latency_ms"].as_f64().unwrap() > 0.0);
    let listing = access(&made);
    assert_eq!(listing["span"]["route"], "/v1/agents");
    assert_eq!(listing["span"]["tenant"], "acme");

    let text = gw.log_text();
    for secret in [token.as_str(), admin.as_str(), PARAMETER] {
        assert!(!text.contains(secret), "the log carries {secret}");
    }
}
