//! Clients of the upstream MCP servers: rmcp's streamable-HTTP client, one connection per
//! registered server, kept and reused. A connection that failed is dropped and made anew by
//! the next request. Every exchange is bounded by the configured timeout, and unless private
//! upstreams are allowed, every connection goes only to public addresses (the webhooks' SSRF
//! rule, `aegis_soc::egress`, checked when the connection is made).

use aegis_soc::egress;
use aegis_store::McpServer;
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, Tool,
};
use rmcp::service::{ClientCacheConfig, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why an upstream exchange failed; the text is shown to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    TimedOut(Duration),
    /// The upstream's address is internal and private upstreams are not allowed.
    Refused,
    Failed(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::TimedOut(after) => {
                write!(
                    f,
                    "the upstream MCP server did not answer within {} s",
                    after.as_secs()
                )
            }
            UpstreamError::Refused => f.write_str(
                "the upstream MCP server's address is internal, which this gateway refuses",
            ),
            UpstreamError::Failed(why) => write!(f, "the upstream MCP server failed: {why}"),
        }
    }
}

type Client = RunningService<RoleClient, ClientConfig>;

/// The connections to upstream servers, by server id.
pub struct Upstreams {
    http: reqwest_mcp::Client,
    allow_private: bool,
    timeout: Duration,
    max_answer_bytes: usize,
    connections: Mutex<HashMap<String, Arc<Client>>>,
}

impl Upstreams {
    /// `max_answer_bytes` bounds each answer as it is read (rmcp's response limits count
    /// the body's bytes before parsing), so an oversized answer is never held whole.
    pub fn new(allow_private: bool, timeout: Duration, max_answer_bytes: usize) -> Self {
        // The client is built without a TLS provider of its own (no second crypto library
        // in the build); it uses the process's, ring, installed here unless one already is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest_mcp::Client::builder();
        if !allow_private {
            http = http.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Upstreams {
            http: http
                .build()
                .expect("an HTTP client without custom TLS settings builds"),
            allow_private,
            timeout,
            max_answer_bytes,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Every tool the upstream lists (all pages). Listing changes nothing, so a failure on a
    /// kept connection (the upstream restarted since) is tried once more on a new one.
    pub async fn list_tools(&self, server: &McpServer) -> Result<Vec<Tool>, UpstreamError> {
        let list = |client: Arc<Client>| async move { client.peer().list_all_tools().await };
        match self.exchange(server, list).await {
            Err(UpstreamError::Failed(_)) => self.exchange(server, list).await,
            listed => listed,
        }
    }

    /// Forwards one call; the upstream's result comes back unchanged.
    pub async fn call_tool(
        &self,
        server: &McpServer,
        params: CallToolRequestParams,
    ) -> Result<CallToolResult, UpstreamError> {
        self.exchange(server, |client| async move {
            client.peer().call_tool(params).await
        })
        .await
    }

    async fn exchange<T, F, Fut>(&self, server: &McpServer, work: F) -> Result<T, UpstreamError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let bounded = async {
            let client = self.connection(server).await?;
            work(client).await.map_err(|error| {
                // The next request connects anew rather than reuse a broken connection.
                self.connections.lock().remove(&server.id);
                UpstreamError::Failed(error.to_string())
            })
        };
        tokio::time::timeout(self.timeout, bounded)
            .await
            .unwrap_or_else(|_| {
                self.connections.lock().remove(&server.id);
                Err(UpstreamError::TimedOut(self.timeout))
            })
    }

    async fn connection(&self, server: &McpServer) -> Result<Arc<Client>, UpstreamError> {
        if let Some(client) = self.connections.lock().get(&server.id)
            && !client.is_closed()
        {
            return Ok(Arc::clone(client));
        }
        if !self.allow_private {
            // Names are checked by the resolver as the connection is made; IP literals here.
            egress::refuse_internal_literal(&server.url).map_err(|_| UpstreamError::Refused)?;
        }
        let transport = StreamableHttpClientTransport::with_client(
            self.http.clone(),
            StreamableHttpClientTransportConfig::with_uri(server.url.as_str())
                .max_json_response_size(self.max_answer_bytes)
                .max_sse_event_size(self.max_answer_bytes),
        );
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("aegis-gateway", env!("CARGO_PKG_VERSION")),
        )
        .serve(transport)
        .await
        .map_err(|error| UpstreamError::Failed(error.to_string()))?;
        // Listings must show the upstream's definitions as they are now, never a cached copy:
        // a changed definition is what pinning is for.
        client
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        let client = Arc::new(client);
        self.connections
            .lock()
            .insert(server.id.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// Drops the connection to a deleted server.
    pub fn forget(&self, server_id: &str) {
        self.connections.lock().remove(server_id);
    }
}

/// Resolves upstream names when a connection is made and refuses any name with an internal
/// address, as the webhook delivery client does.
struct PublicOnlyResolver;

impl reqwest_mcp::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest_mcp::dns::Name) -> reqwest_mcp::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts in the URL's port.
            let addresses = egress::public_addresses(&host, 0).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest_mcp::dns::Addrs)
        })
    }
}
