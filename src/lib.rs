//! Corvid, a Matrix homeserver.
//!
//! The few decisions the rest of the code leans on:
//!
//! - **Errors**: one type, [`Error`], carrying the Matrix `errcode` and HTTP
//!   status. Services pick the code because the spec ties codes to behaviour;
//!   the HTTP layer only serialises it (see `error.rs`).
//! - **Handlers** take ruma's request types and return ruma's response types
//!   (`api::Ruma`), so the spec's shapes are checked by the compiler. Logic
//!   lives in `service`, SQL in `store`.
//! - **The event graph**: every room event, local or not, is a signed PDU with
//!   prev/auth events and a reference-hash event id (`service::rooms::timeline`).
//! - **Locking**: events of one room are created one at a time inside one
//!   database transaction that locks the room (`store::WriteTx::lock_room`).
//! - **Stream positions**: one global counter in the database, advanced inside
//!   each write transaction, so positions are totally ordered across processes
//!   and a sync token (`service::sync::SyncToken`) stays valid forever.

pub mod api;
pub mod cache;
pub mod config;
pub mod error;
pub mod notify;
pub mod ratelimit;
pub mod server;
pub mod service;
pub mod store;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Connects, migrates and serves `config` on `listener` until `shutdown`
/// resolves; what `corvid serve` and the integration tests both run.
pub async fn run_server(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = store::Db::connect(&config.database_url).await?;
    db.migrate().await?;
    db.start_checkpoints();
    let key = corvid_federation::ServerSigningKey::load_or_generate(&config.signing_key_path())?;
    let redis = server::RedisLink::connect(&config).await?;
    let server = Server::with_redis(config, db.clone(), key, redis);
    tokio::spawn(service::typing::expire_forever(server.clone()));
    tokio::spawn(service::presence::sweep_forever(server.clone()));
    let app =
        api::router(server.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Long-polls answer at once when shutdown starts, so in-flight requests
    // finish quickly instead of holding the shutdown for their timeout.
    let shutdown = async move {
        shutdown.await;
        server.notifier.shut_down();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    db.close().await;
    Ok(())
}
