//! Token-bucket rate limiting for the endpoints the spec marks rate-limited,
//! keyed by user (when authenticated) or by client IP.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::RateLimit;

pub struct RateLimiter {
    config: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(config: RateLimit) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if !self.config.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let capacity = self.config.burst.max(1) as f64;
        let rate = self.config.per_second.max(f64::MIN_POSITIVE);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_disabled() {
        let limiter = RateLimiter::new(RateLimit {
            enabled: true,
            per_second: 1.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limiter.check("b").is_ok(), "buckets are per key");
        let off = RateLimiter::new(RateLimit {
            enabled: false,
            per_second: 1.0,
            burst: 1,
        });
        for _ in 0..10 {
            assert!(off.check("a").is_ok());
        }
    }
}
