//! The shared state every handler and service works with.

use std::sync::Arc;

use corvid_federation::ServerSigningKey;

use crate::{Config, notify::Notifier, ratelimit::RateLimiter, store::Db};

pub struct Server {
    pub config: Config,
    pub db: Db,
    pub signing_key: ServerSigningKey,
    pub notifier: Notifier,
    pub rate_limiter: RateLimiter,
}

impl Server {
    pub fn new(config: Config, db: Db, signing_key: ServerSigningKey) -> Arc<Self> {
        let rate_limiter = RateLimiter::new(config.rate_limit.clone());
        Arc::new(Self {
            config,
            db,
            signing_key,
            notifier: Notifier::default(),
            rate_limiter,
        })
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }
}
