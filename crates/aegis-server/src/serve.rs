//! Serving connections with read deadlines, so that a slow or silent client cannot hold a
//! connection (slowloris): hyper's header read timeout bounds how long a request head may
//! take and how long an idle keep-alive connection stays open, and tower-http's request body
//! timeout bounds every wait for the next piece of a body. HTTP/1.1 only (WebSocket
//! upgrades included): the header timeout has no HTTP/2 counterpart in hyper.

use crate::App;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutBody};

/// How long a client may take to send its requests.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// From the first byte of a request (or the end of the previous response, on a
    /// keep-alive connection) to the end of its head; a connection idle this long is closed.
    pub header: Duration,
    /// The longest pause while a request body is read: a body that stops short of its
    /// `Content-Length` answers 408 and the connection is closed.
    pub body: Duration,
}

impl Default for ReadTimeouts {
    fn default() -> Self {
        ReadTimeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight and returns once they have all closed.
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    timeouts: ReadTimeouts,
    shutdown: impl Future<Output = ()>,
) {
    let app = tower::ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(timeouts.body))
        .map_request(|request: Request<TimeoutBody<Incoming>>| request.map(Body::new))
        .service(app);
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    // Dropped when shutdown begins: every connection task then shuts down gracefully.
    let (stop, stopping) = watch::channel(());
    // Each connection task holds a receiver: `closed()` resolves once the last one is gone.
    let (connections, connection_token) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stopping = stopping.clone();
        let token = connection_token.clone();
        tokio::spawn(async move {
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let mut draining = false;
            loop {
                tokio::select! {
                    outcome = connection.as_mut() => {
                        // Timeouts end up here too: the client was too slow, nothing to report.
                        if let Err(error) = outcome {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.changed(), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(token);
        });
    }
    drop(stop);
    drop(connection_token);
    connections.closed().await;
}
