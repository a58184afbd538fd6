//! OpenTelemetry traces of the built binary, as an OTLP/HTTP collector receives them: a
//! minimal one on loopback (`POST /v1/traces`, protobuf, decoded with `opentelemetry-proto`).
//! One server span per authorize call with the decision's id, outcome and tenant, parented on
//! the caller's `traceparent`; the writer's batches linked to the calls they committed; no
//! credential, parameter or resource anywhere in the export; spans still queued at SIGTERM
//! sent before the process exits; and nothing sent at all without an OTLP endpoint.

#[macro_use]
mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use support::*;

/// The caller's trace context: W3C version 00, sampled.
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const CALLER_TRACE_STATE: &str = "vendor=opaque-value";
const PARAMETER: &str = "parameter-value-that-must-not-be-traced";
const AGENT_TRACE_ID: &str = "agent-trace-7";

type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// Records every export it is sent and answers 200.
struct Collector {
    addr: SocketAddr,
    exports: Exports,
}

async fn receive(State(exports): State<Exports>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) => {
            exports.lock().unwrap().push(export);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl Collector {
    async fn start(addr: &str) -> Collector {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exports = Exports::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&exports));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector { addr, exports }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn exports(&self) -> Vec<ExportTraceServiceRequest> {
        self.exports.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.exports()
            .into_iter()
            .flat_map(|export| export.resource_spans)
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> &'a str {
    match attribute(&span.attributes, key) {
        Some(any_value::Value::StringValue(value)) => value,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

async fn authorize_call(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    source: &str,
    traceparent: Option<&str>,
) -> Value {
    let mut call = merge_call(source);
    call["tool_call"]["parameters"] = json!({"note": PARAMETER});
    call["trace"] = json!({"run_id": "run-1", "trace_id": AGENT_TRACE_ID});
    let mut request = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(token)
        .json(&call);
    if let Some(traceparent) = traceparent {
        request = request
            .header("traceparent", traceparent)
            .header("tracestate", CALLER_TRACE_STATE);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

e2e_test!(
    async fn each_authorize_call_is_a_server_span_linked_from_its_commit(backend) {
        let collector = Collector::start("127.0.0.1:0").await;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
                // Access logging off: the spans exist for the traces alone.
                ("AEGIS_LOG", "warn"),
                // Nothing is sent before shutdown, which must flush it all.
                ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ],
        )
        .await;
        let client = reqwest::Client::new();
        let (_, token) = agent_with_github(&client, &gw, &admin).await;
        let traceparent = format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01");
        let mut answers = Vec::new();
        for (source, traceparent) in [
            ("trusted_internal_signed", Some(traceparent.as_str())),
            ("untrusted_external", None),
            ("semi_trusted_customer", None),
        ] {
            answers.push(authorize_call(&client, &gw, &token, source, traceparent).await);
        }
        // The agent's own trace id is recorded on its decision.
        let first = answers[0]["decision_id"].as_str().unwrap();
        let decision = get_json(&client, gw.url(&format!("/v1/decisions/{first}")), &admin).await;
        assert_eq!(decision["trace_id"], AGENT_TRACE_ID, "{decision}");
        assert!(collector.exports().is_empty(), "sent before the schedule");
        assert!(gw.terminate().success());

        let spans = collector.spans();
        let authorize_spans: Vec<&Span> =
            spans.iter().filter(|span| span.name == "POST /v1/authorize").collect();
        assert_eq!(authorize_spans.len(), answers.len(), "{spans:#?}");
        for answer in &answers {
            let decision_id = answer["decision_id"].as_str().unwrap();
            let span = authorize_spans
                .iter()
                .find(|span| text(span, "aegis.decision_id") == decision_id)
                .unwrap_or_else(|| panic!("no span for {decision_id}: {authorize_spans:#?}"));
            assert_eq!(span.kind, SpanKind::Server as i32);
            assert_eq!(text(span, "aegis.decision"), answer["decision"].as_str().unwrap());
            assert_eq!(text(span, "aegis.tenant"), "acme");
            assert_eq!(text(span, "http.route"), "/v1/authorize");
            assert_eq!(text(span, "http.request.method"), "POST");
            assert_eq!(
                attribute(&span.attributes, "http.response.status_code"),
                Some(&any_value::Value::IntValue(200))
            );
        }
        // The call that sent a traceparent continues the caller's trace; the others start
        // their own.
        let continued = authorize_spans
            .iter()
            .find(|span| text(span, "aegis.decision_id") == first)
            .unwrap();
        assert_eq!(hex::encode(&continued.trace_id), CALLER_TRACE_ID);
        assert_eq!(hex::encode(&continued.parent_span_id), CALLER_SPAN_ID);
        assert_eq!(continued.trace_state, CALLER_TRACE_STATE);
        for span in authorize_spans.iter().filter(|span| span.span_id != continued.span_id) {
            assert!(span.parent_span_id.is_empty(), "{span:#?}");
            assert_ne!(hex::encode(&span.trace_id), CALLER_TRACE_ID);
        }

        // Every call's decision was committed by a writer batch that links to its span.
        let store = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let batches: Vec<&Span> = spans.iter().filter(|span| span.name == "writer.batch").collect();
        assert!(!batches.is_empty(), "{spans:#?}");
        for batch in &batches {
            assert_eq!(text(batch, "aegis.store"), store);
            assert!(matches!(
                attribute(&batch.attributes, "aegis.batch_size"),
                Some(any_value::Value::IntValue(jobs)) if *jobs >= 1
            ));
            assert!(batch.parent_span_id.is_empty());
        }
        for span in &authorize_spans {
            let linked = batches.iter().any(|batch| {
                batch
                    .links
                    .iter()
                    .any(|link| link.trace_id == span.trace_id && link.span_id == span.span_id)
            });
            assert!(linked, "no batch links to {span:#?}");
        }

        // The service is named, and no credential, parameter or resource is exported.
        let export = format!("{:?}", collector.exports());
        assert!(export.contains("\"aegis\""), "service name");
        for secret in [token.as_str(), admin.as_str(), PARAMETER, "payments#482", "base_branch"] {
            assert!(!export.contains(secret), "the export carries {secret}");
        }
    }
);

/// Off unless an endpoint is configured: a collector on the SDK's default endpoint
/// (127.0.0.1:4318) hears nothing from a gateway without one, nor from one with
/// `OTEL_SDK_DISABLED=true`, even with spans scheduled every 50 ms and a SIGTERM flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_without_an_endpoint() {
    let collector = Collector::start("127.0.0.1:4318").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aegis.db");
    let admin = init(dir.path(), &db, "acme");
    let client = reqwest::Client::new();
    let endpoint = collector.endpoint();
    for env in [
        vec![("OTEL_BSP_SCHEDULE_DELAY", "50")],
        vec![
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    ] {
        let gw = Gateway::start_with(dir.path(), &db, &env).await;
        let (_, token) = agent_with_github(&client, &gw, &admin).await;
        assert_eq!(
            authorize(&client, &gw, &token, "trusted_internal_signed").await,
            "allow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(gw.terminate().success());
    }
    assert!(collector.exports().is_empty(), "{:?}", collector.exports());
}

/// A protocol this build does not speak stops the start instead of being ignored.
#[test]
fn an_unsupported_otlp_protocol_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(AEGIS)
        .args(["serve", "--db", "aegis.db", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}
