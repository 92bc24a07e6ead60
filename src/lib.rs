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
//!   A transaction that takes stream positions takes them before it locks a
//!   room (on PostgreSQL the other order deadlocks with the event writer).
//!   Events from other servers are received one room at a time in a process
//!   (`Server::room_ingest`), and placed under the same room lock.
//! - **Stream positions**: one global counter in the database, advanced inside
//!   each write transaction, so positions are totally ordered across processes
//!   and a sync token (`service::sync::SyncToken`) stays valid forever.

pub mod api;
pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod listen;
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

/// Connects, migrates and serves `config` on `listeners` until `shutdown`
/// resolves; what `corvid serve` and the integration tests both run.
pub async fn run_server(
    config: Config,
    listeners: listen::Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let tls = match &config.tls {
        Some(tls) => Some((
            std::sync::Arc::new(corvid_federation::tls::server_config(
                &tls.certificate,
                &tls.private_key,
            )?),
            tls.listeners.clone(),
        )),
        None => None,
    };
    let tls_for = |kind: config::ListenerKind| {
        tls.as_ref()
            .filter(|(_, on)| on.contains(&kind))
            .map(|(config, _)| config.clone())
    };
    let db = store::Db::connect(&config.database_url).await?;
    db.migrate().await?;
    db.start_checkpoints();
    let key = corvid_federation::ServerSigningKey::load_or_generate(&config.signing_key_path())?;
    let redis = server::RedisLink::connect(&config).await?;
    let server = Server::with_redis(config, db.clone(), key, redis)?;
    tokio::spawn(service::typing::expire_forever(server.clone()));
    tokio::spawn(service::presence::sweep_forever(server.clone()));
    tokio::spawn(service::federation::sender::run_election(server.clone()));
    // Long-polls answer at once when shutdown starts, so in-flight requests
    // finish quickly instead of holding the shutdown for their timeout.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let notifier_owner = server.clone();
    tokio::spawn(async move {
        shutdown.await;
        notifier_owner.notifier.shut_down();
        let _ = stop.send(true);
    });
    let client_apis = match listeners.federation {
        Some(_) => api::Apis::Client,
        None => api::Apis::All,
    };
    let mut serving = vec![tokio::spawn(listen::serve(
        listeners.client,
        api::router(server.clone(), client_apis),
        tls_for(config::ListenerKind::Client),
        stopped.clone(),
    ))];
    if let Some(federation) = listeners.federation {
        serving.push(tokio::spawn(listen::serve(
            federation,
            api::router(server.clone(), api::Apis::Federation),
            tls_for(config::ListenerKind::Federation),
            stopped,
        )));
    }
    for task in serving {
        task.await??;
    }
    db.close().await;
    Ok(())
}
