//! The listeners: plain TCP through `axum::serve`, TLS through a rustls
//! accept loop feeding the same router. Both stop accepting when shutdown
//! starts and let the requests in flight finish.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight on TLS connections may take once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets `corvid serve` listens on, bound before the server starts
/// (tests bind port 0 and read the port back).
pub struct Listeners {
    pub client: TcpListener,
    /// Without it, the client listener serves the federation API too.
    pub federation: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &crate::config::Listen) -> std::io::Result<Self> {
        let client = bind(config.client).await?;
        let federation = match config.federation {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self { client, federation })
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        return axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop))
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tcp.set_nodelay(true).ok();
                    let connection = serve_tls_connection(acceptor.clone(), tcp, peer, app.clone(), &graceful);
                    tokio::spawn(connection);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut stopping => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("TLS connections still open after the drain timeout");
    }
    Ok(())
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn serve_tls_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    graceful: &GracefulShutdown,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let watcher = graceful.watcher();
    async move {
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
        }
    }
}
