//! What a row sends, and the management calls that prepare it: agents, the `github` tool,
//! policies and viewer keys, created over the API with each tenant's admin key.

use crate::load::Request;
use crate::mcp_upstream;
use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One kind of tool call sent to `POST /v1/authorize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Read,
    TrustedWrite,
    UntrustedWrite,
}

impl Call {
    /// The calls the default policy pack allows: a read and a trusted write.
    pub const ALLOWED: [Call; 2] = [Call::Read, Call::TrustedWrite];

    fn body(self) -> Value {
        let (action, source) = match self {
            Call::Read => ("get_file", "trusted_internal_signed"),
            Call::TrustedWrite => ("merge_pull_request", "trusted_internal_signed"),
            Call::UntrustedWrite => ("merge_pull_request", "untrusted_external"),
        };
        let mut tool_call = json!({
            "tool": "github",
            "action": action,
            "resource": "repo#1",
            "parameters": {"path": "README.md"},
        });
        if self != Call::Read {
            tool_call["mutates_state"] = Value::Bool(true);
        }
        json!({"tool_call": tool_call, "context": {"source_trust": source}})
    }

    /// This call as sent by the agent with bearer header `authorization`.
    pub fn request(self, authorization: &str) -> Request {
        Request {
            method: "POST",
            path: "/v1/authorize",
            authorization: Some(authorization.to_owned()),
            body: Some(self.body().to_string()),
            headers: Vec::new(),
        }
    }
}

/// The MCP server the `mcp-proxy` row reaches through the gateway (`/mcp/{MCP_SERVER}`).
pub const MCP_SERVER: &str = "bench-echo";
/// The gateway's MCP endpoint of that server.
pub const MCP_PROXY_PATH: &str = "/mcp/bench-echo";

/// A JSON-RPC request of the MCP rows, POSTed as a streamable-HTTP client does.
fn mcp_request(path: &'static str, body: &Value, authorization: Option<&str>) -> Request {
    Request {
        method: "POST",
        path,
        authorization: authorization.map(str::to_owned),
        body: Some(body.to_string()),
        headers: vec![
            "Accept: application/json, text/event-stream".into(),
            // What the default policy pack needs to allow the read, as the `allow` row says.
            "X-Aegis-Source-Trust: trusted_internal_signed".into(),
        ],
    }
}

/// The MCP rows' call: the upstream's read-only `echo` tool. `authorization` is the agent's
/// bearer header when sent through the gateway, none when sent to the upstream directly.
pub fn mcp_call(path: &'static str, authorization: Option<&str>) -> Request {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": mcp_upstream::TOOL, "arguments": {"text": "hi"}}});
    mcp_request(path, &body, authorization)
}

/// The management API of one tenant, on the first server (the others see its changes through
/// the database).
pub struct Tenant<'a> {
    pub client: &'a Client,
    pub base_url: &'a str,
    pub admin_key: &'a str,
}

impl Tenant<'_> {
    /// A call with the admin key; returns the status and the body (JSON if it parses).
    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(self.admin_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the response of {method} {url}"))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: StatusCode,
    ) -> Result<Value> {
        let (status, answer) = self.api(method.clone(), path, body).await?;
        if status != ok {
            bail!("{method} {path}: unexpected {status}: {answer}");
        }
        Ok(answer)
    }

    /// Registers an agent; returns its bearer header value.
    pub async fn agent(&self, name: &str) -> Result<String> {
        let agent = self
            .expect(
                Method::POST,
                "/v1/agents",
                Some(&json!({"name": name})),
                StatusCode::CREATED,
            )
            .await?;
        let token = agent
            .get("agent_token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("POST /v1/agents: no `agent_token` in {agent}"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Registers the `github` tool with the two actions the calls use.
    pub async fn github_tool(&self) -> Result<()> {
        let tools = json!({"tool": "github", "actions": [
            {"action": "get_file", "mutates_state": false, "risk": "low"},
            {"action": "merge_pull_request", "mutates_state": true, "risk": "high"},
        ]});
        let (status, body) = self.api(Method::POST, "/v1/tools", Some(&tools)).await?;
        if !status.is_success() {
            bail!("POST /v1/tools: unexpected {status}: {body}");
        }
        Ok(())
    }

    /// Adds `count` policies scoped to other tools (`resource in Aegis::Tool::"toolN"`), none
    /// of which applies to the `github` calls.
    pub async fn policies_on_other_tools(&self, count: usize) -> Result<()> {
        for n in 0..count {
            let policy = json!({
                "id": format!("bench-tool{n}"),
                "text": format!(
                    "forbid (principal, action == Aegis::Action::\"call\", \
                     resource in Aegis::Tool::\"tool{n}\") when {{ context.mutates_state }};"
                ),
            });
            self.expect(
                Method::POST,
                "/v1/policies",
                Some(&policy),
                StatusCode::CREATED,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates a viewer key (for a live-feed client); returns its secret.
    pub async fn viewer_key(&self, name: &str) -> Result<String> {
        let key = self
            .expect(
                Method::POST,
                "/v1/keys",
                Some(&json!({"role": "viewer", "name": name})),
                StatusCode::CREATED,
            )
            .await?;
        key.get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("POST /v1/keys: no `key` in {key}"))
    }

    /// Registers the upstream MCP server at `upstream_url` as `MCP_SERVER`, then has the
    /// agent list its tools once through the gateway, so that `echo` is pinned (read-only)
    /// and registered before the load, and checks that one call through the gateway is
    /// forwarded and answered with a result.
    pub async fn mcp_server(&self, upstream_url: &str, authorization: &str) -> Result<()> {
        self.expect(
            Method::POST,
            "/v1/mcp/servers",
            Some(&json!({"name": MCP_SERVER, "url": upstream_url})),
            StatusCode::CREATED,
        )
        .await?;
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
        let listing = self
            .mcp(&mcp_request(MCP_PROXY_PATH, &list, Some(authorization)))
            .await?;
        let listed = listing["result"]["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|tool| tool["name"] == mcp_upstream::TOOL));
        if !listed {
            bail!("tools/list through the gateway does not list `echo`: {listing}");
        }
        let call = self
            .mcp(&mcp_call(MCP_PROXY_PATH, Some(authorization)))
            .await?;
        if call["result"]["isError"] != Value::Bool(false) {
            bail!("tools/call through the gateway was not forwarded: {call}");
        }
        Ok(())
    }

    /// Sends an MCP request to the gateway; returns its JSON-RPC answer.
    async fn mcp(&self, request: &Request) -> Result<Value> {
        let mut builder = self
            .client
            .post(format!("{}{}", self.base_url, request.path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body.clone().unwrap_or_default());
        if let Some(authorization) = &request.authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, authorization);
        }
        for header in &request.headers {
            if let Some((name, value)) = header.split_once(": ") {
                builder = builder.header(name, value);
            }
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("POST {}", request.path))?;
        let status = response.status();
        let text = response.text().await.context("reading an MCP answer")?;
        if status != StatusCode::OK {
            bail!("POST {}: unexpected {status}: {text}", request.path);
        }
        serde_json::from_str(&text).with_context(|| format!("an MCP answer is not JSON: {text}"))
    }

    /// Sends 5 untrusted writes of a new agent after `delay`, round-robin over `base_urls`
    /// like the load, then polls the incidents until the deny_storm appears. Returns the time
    /// from the 5th answered deny to the incident being listed.
    pub async fn deny_storm(&self, base_urls: &[String], delay: Duration) -> Result<Duration> {
        let authorization = self.agent("bench-storm-agent").await?;
        tokio::time::sleep(delay).await;
        let body = Call::UntrustedWrite.body().to_string();
        for base_url in base_urls.iter().cycle().take(5) {
            let response = self
                .client
                .post(format!("{base_url}/v1/authorize"))
                .header(reqwest::header::AUTHORIZATION, &authorization)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .context("deny storm: authorize")?;
            if response.status() != StatusCode::OK {
                bail!("deny storm: authorize answered {}", response.status());
            }
        }
        let answered = Instant::now();
        loop {
            let incidents = self
                .expect(
                    Method::GET,
                    "/v1/incidents?kind=deny_storm&limit=1000",
                    None,
                    StatusCode::OK,
                )
                .await?;
            if incidents.as_array().is_some_and(|list| !list.is_empty()) {
                return Ok(answered.elapsed());
            }
            if answered.elapsed() > Duration::from_secs(30) {
                bail!("deny storm: no deny_storm incident 30 s after the 5th deny");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
