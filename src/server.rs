//! The shared state every handler and service works with.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use corvid_federation::{FederationClient, ServerSigningKey, tls::TlsError};

use crate::service::{
    presence::Presence, receipts::DeliveryRecorder, rooms::writer::EventWriter, typing::Typing,
};
use crate::{Config, notify::Notifier, ratelimit::RateLimiter, store::Db};

pub struct Server {
    pub config: Config,
    pub db: Db,
    pub signing_key: Arc<ServerSigningKey>,
    /// Signed requests to other servers.
    pub federation: FederationClient,
    /// Other servers' keys: a short-lived copy of those stored, and when
    /// each server was last asked, so one without the key asked for is not
    /// asked again at once.
    pub remote_keys: crate::service::federation::server_keys::RemoteKeys,
    pub notifier: Notifier,
    pub rate_limiter: RateLimiter,
    pub device_activity: DeviceActivity,
    pub event_writer: EventWriter,
    pub room_versions: RoomVersions,
    pub typing: Typing,
    pub presence: Presence,
    pub deliveries: DeliveryRecorder,
    pub push_rules: crate::service::push::RuleCache,
    pub push_contexts: crate::service::push::RoomContextCache,
    pub ignored_users: crate::service::ignore::IgnoreCache,
    pub delivered_settings: crate::service::receipts::DeliveredSettings,
    pub to_device_acks: crate::service::to_device::AwaitingAck,
    pub media: crate::service::media::Media,
    /// Events of one room are received one at a time.
    pub room_ingest: crate::cache::KeyedLocks,
    /// Transactions of one origin are applied one at a time.
    pub inbound_origins: crate::cache::KeyedLocks,
    pub federation_sender: crate::service::federation::sender::Sender,
    pub backfills: crate::service::federation::backfill::Exhausted,
    /// This server, for work that outlives the request that starts it
    /// (renewing a cached entry in the background).
    pub me: std::sync::Weak<Server>,
}

/// The connections to Redis, when `redis.url` is configured.
#[derive(Clone)]
pub struct RedisLink {
    pub client: redis::Client,
    pub conn: redis::aio::ConnectionManager,
}

impl RedisLink {
    /// Connects to the configured Redis, if any; start-up fails if it is
    /// configured and unreachable.
    pub async fn connect(config: &Config) -> Result<Option<Self>, redis::RedisError> {
        let Some(redis) = &config.redis else {
            return Ok(None);
        };
        let client = redis::Client::open(redis.url.as_str())?;
        let conn = client.get_connection_manager().await?;
        Ok(Some(Self { client, conn }))
    }
}

/// Room id → room version; a room's version never changes.
#[derive(Default)]
pub struct RoomVersions {
    known: Mutex<HashMap<ruma::OwnedRoomId, ruma::RoomVersionId>>,
}

impl RoomVersions {
    const CAPACITY: usize = 100_000;

    pub fn get(&self, room_id: &ruma::RoomId) -> Option<ruma::RoomVersionId> {
        self.known
            .lock()
            .expect("room versions lock")
            .get(room_id)
            .cloned()
    }

    pub fn insert(&self, room_id: &ruma::RoomId, version: ruma::RoomVersionId) {
        let mut known = self.known.lock().expect("room versions lock");
        if known.len() >= Self::CAPACITY {
            known.clear();
        }
        known.insert(room_id.to_owned(), version);
    }
}

/// Throttles "last seen" updates: a device's row is written at most once
/// per interval, not on every request, and off the request's path: a task
/// writes what has queued up over a second in one transaction, after the
/// requests that queued it are done (on SQLite a write waits for any
/// other, an event's included).
pub struct DeviceActivity {
    recorded: Mutex<HashMap<(String, String), Instant>>,
    queue: tokio::sync::mpsc::UnboundedSender<Seen>,
}

/// A device seen making a request: `(user, device, ip)`.
type Seen = (String, String, Option<String>);

impl DeviceActivity {
    const INTERVAL: Duration = Duration::from_secs(60);
    const GATHER: Duration = Duration::from_secs(1);

    fn start(server: std::sync::Weak<Server>) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while crate::batch::gather(&mut rx, &mut batch, Self::GATHER, 5_000).await {
                let Some(server) = server.upgrade() else {
                    return;
                };
                if let Err(e) = server.db.touch_devices(&batch).await {
                    tracing::warn!(error = %e, "recording device activity failed");
                }
                batch.clear();
            }
        });
        Self {
            recorded: Mutex::default(),
            queue,
        }
    }

    /// Notes a request by the device; its row is updated soon after.
    pub fn seen(&self, user_id: &str, device_id: &str, ip: Option<&str>) {
        if self.should_record(user_id, device_id) {
            let seen = (
                user_id.to_owned(),
                device_id.to_owned(),
                ip.map(str::to_owned),
            );
            let _ = self.queue.send(seen);
        }
    }

    fn should_record(&self, user_id: &str, device_id: &str) -> bool {
        let now = Instant::now();
        let mut recorded = self.recorded.lock().expect("device activity lock");
        if recorded.len() > 100_000 {
            recorded.retain(|_, at| now.duration_since(*at) < Self::INTERVAL);
        }
        let key = (user_id.to_owned(), device_id.to_owned());
        match recorded.get(&key) {
            Some(at) if now.duration_since(*at) < Self::INTERVAL => false,
            _ => {
                recorded.insert(key, now);
                true
            }
        }
    }
}

impl Server {
    /// Must be called inside a tokio runtime: it starts the event writer.
    /// Fails when the outbound TLS configuration (CA files) cannot be loaded.
    pub fn new(
        config: Config,
        db: Db,
        signing_key: ServerSigningKey,
    ) -> Result<Arc<Self>, TlsError> {
        Self::with_redis(config, db, signing_key, None)
    }

    /// Must be called inside a tokio runtime. With `redis`, presence and
    /// sync wake-ups are shared with the other processes using that Redis.
    pub fn with_redis(
        config: Config,
        db: Db,
        signing_key: ServerSigningKey,
        redis: Option<RedisLink>,
    ) -> Result<Arc<Self>, TlsError> {
        let signing_key = Arc::new(signing_key);
        let federation = FederationClient::new(
            config.server_name.clone(),
            signing_key.clone(),
            crate::service::federation::outbound_tls(&config.federation)?,
        );
        let rate_limiter = RateLimiter::new(config.rate_limit.clone());
        let prefix = config.redis.as_ref().map(|r| r.key_prefix.clone());
        let presence = Presence::new(
            config.presence.clone(),
            redis
                .as_ref()
                .zip(prefix.clone())
                .map(|(r, p)| (r.conn.clone(), p)),
        );
        let media = crate::service::media::Media::new(config.media_dir());
        let server = Arc::new_cyclic(|me| Self {
            media,
            config,
            db,
            signing_key,
            federation,
            remote_keys: Default::default(),
            notifier: Notifier::default(),
            rate_limiter,
            device_activity: DeviceActivity::start(me.clone()),
            event_writer: EventWriter::start(me.clone()),
            room_versions: RoomVersions::default(),
            typing: Typing::default(),
            presence,
            deliveries: DeliveryRecorder::start(me.clone()),
            push_rules: Default::default(),
            push_contexts: Default::default(),
            ignored_users: Default::default(),
            delivered_settings: Default::default(),
            to_device_acks: Default::default(),
            room_ingest: Default::default(),
            inbound_origins: Default::default(),
            federation_sender: crate::service::federation::sender::Sender::new(me.clone()),
            backfills: Default::default(),
            me: me.clone(),
        });
        if let (Some(link), Some(prefix)) = (redis, prefix) {
            crate::notify::join_redis_bus(Arc::downgrade(&server), link.client, link.conn, &prefix);
        }
        Ok(server)
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }
}
