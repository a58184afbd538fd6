//! What runs beside the load: the bare no-op server, live-feed clients, and the SOC lag read
//! from the database.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The body of the gateway's `GET /healthz`, answered by the bare server too, so that both
/// no-op rows move the same bytes.
const HEALTHZ_BODY: &str = r#"{"status":"ok"}"#;

/// A bare axum server with only `GET /healthz`, on the benchmark's own runtime: what this
/// machine, HTTP stack and load generator can do at all. Returns its base URL; it serves until
/// the benchmark exits.
pub async fn start_bare_server() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the bare server")?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                HEALTHZ_BODY,
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("bare server stopped: {error}");
        }
    });
    Ok(format!("http://{address}"))
}

/// Live-feed clients (`GET /v1/ws/events`) that complete the WebSocket handshake and then only
/// read raw bytes (no frame parsing): as cheap on the client side as a client can be, so that
/// what they cost shows up on the server.
pub struct FeedClients {
    readers: Vec<JoinHandle<()>>,
    received: Vec<Arc<AtomicU64>>,
}

impl FeedClients {
    /// Connects one client per `(base URL, operator key)`.
    pub async fn connect(clients: &[(String, String)]) -> Result<FeedClients> {
        let mut feeds = FeedClients {
            readers: Vec::new(),
            received: Vec::new(),
        };
        for (base_url, key) in clients {
            let stream = handshake(base_url, key).await?;
            let received = Arc::new(AtomicU64::new(0));
            feeds.received.push(Arc::clone(&received));
            feeds.readers.push(tokio::spawn(read_raw(stream, received)));
        }
        Ok(feeds)
    }

    /// Closes the connections; returns the bytes each client received.
    pub fn close(self) -> Vec<u64> {
        for reader in &self.readers {
            reader.abort();
        }
        self.received
            .iter()
            .map(|bytes| bytes.load(Ordering::Relaxed))
            .collect()
    }
}

async fn handshake(base_url: &str, key: &str) -> Result<TcpStream> {
    let host = base_url
        .strip_prefix("http://")
        .context("live-feed clients speak plain http:// only")?;
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting a live-feed client to {host}"))?;
    stream.set_nodelay(true)?;
    // The key is the RFC 6455 sample nonce: the server only has to answer it, not trust it.
    let request = format!(
        "GET /v1/ws/events HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so that no frame after the head is consumed here.
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            bail!(
                "live feed: no upgrade from {host}: {}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    if !status_line.starts_with("HTTP/1.1 101") {
        bail!("live feed: {host} answered {status_line}");
    }
    Ok(stream)
}

async fn read_raw(mut stream: TcpStream, received: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        received.fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Reads straight from the gateway's database what the API has no route for: the SOC
/// consumer's cursor and the event log's head (tables `consumer_cursors` and `events` of
/// `crates/aegis-store/migrations`), and the space the database takes per decision.
pub enum DatabaseProbe {
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
    Postgres(tokio_postgres::Client),
}

/// The one query, valid on both backends.
const CURSOR_AND_HEAD: &str = "SELECT \
     (SELECT COALESCE(MAX(seq), 0) FROM events), \
     (SELECT COALESCE(MAX(seq), 0) FROM consumer_cursors WHERE name = 'soc')";

/// How often the lag is polled once the load has stopped.
const POLL: Duration = Duration::from_millis(2);
/// Longest wait for the SOC to catch up.
const MAX_LAG: Duration = Duration::from_secs(120);

impl DatabaseProbe {
    pub async fn open(database: &OsStr) -> Result<DatabaseProbe> {
        let text = database.to_string_lossy();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let (client, connection) = tokio_postgres::connect(&text, tokio_postgres::NoTls)
                .await
                .context("connecting to PostgreSQL to read the SOC cursor")?;
            tokio::spawn(connection);
            Ok(DatabaseProbe::Postgres(client))
        } else {
            let connection = rusqlite::Connection::open_with_flags(
                database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .context("opening the SQLite database to read the SOC cursor")?;
            Ok(DatabaseProbe::Sqlite(std::sync::Mutex::new(connection)))
        }
    }

    /// The event log's head and the SOC consumer's cursor.
    async fn read(&self) -> Result<(i64, i64)> {
        match self {
            DatabaseProbe::Sqlite(connection) => Ok(tokio::task::block_in_place(|| {
                let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                connection.query_row(CURSOR_AND_HEAD, [], |row| Ok((row.get(0)?, row.get(1)?)))
            })?),
            DatabaseProbe::Postgres(client) => {
                let row = client.query_one(CURSOR_AND_HEAD, &[]).await?;
                Ok((row.get(0), row.get(1)))
            }
        }
    }

    /// The bytes the database holds and its decisions: on SQLite the pages in use, the WAL's
    /// included (what a connection sees); on PostgreSQL the database's size on disk.
    pub async fn stored(&self) -> Result<(u64, u64)> {
        let (bytes, decisions): (i64, i64) = match self {
            DatabaseProbe::Sqlite(connection) => tokio::task::block_in_place(|| {
                let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                connection.query_row(
                    "SELECT ((SELECT page_count FROM pragma_page_count()) \
                             - (SELECT freelist_count FROM pragma_freelist_count())) \
                            * (SELECT page_size FROM pragma_page_size()), \
                            (SELECT COUNT(*) FROM decisions)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
            })?,
            DatabaseProbe::Postgres(client) => {
                let row = client
                    .query_one(
                        "SELECT pg_database_size(current_database()), \
                                (SELECT COUNT(*) FROM decisions)",
                        &[],
                    )
                    .await?;
                (row.get(0), row.get(1))
            }
        };
        Ok((u64::try_from(bytes)?, u64::try_from(decisions)?))
    }

    /// Called when the load has stopped: the time until the SOC consumer has processed every
    /// event committed by then.
    pub async fn lag(&self) -> Result<Duration> {
        let stopped = Instant::now();
        let (head, _) = self.read().await?;
        loop {
            let (_, cursor) = self.read().await?;
            if cursor >= head {
                return Ok(stopped.elapsed());
            }
            if stopped.elapsed() > MAX_LAG {
                bail!("the SOC consumer is still at seq {cursor} of {head} after {MAX_LAG:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
