//! Presence in Redis (`redis.url`), shared by every server process.
//!
//! Keys, under the configured prefix:
//! - `presence:user:<user id>`: the record as JSON, expiring a week after
//!   its last change (a user gone that long is offline);
//! - `presence:changes`: sorted set, user → position of their latest
//!   announcement;
//! - `presence:pos`: the position counter, created at the Unix time in
//!   milliseconds so positions keep growing if Redis loses its data;
//! - `presence:not_offline`: set of users whose record is not offline (what
//!   the sweeps look at).

use redis::aio::ConnectionManager;

use super::Record;
use crate::{Error, Result};

const RECORD_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Announces a record atomically: new position, record, change index.
const ANNOUNCE: &str = r"
redis.call('SET', KEYS[1], ARGV[4], 'NX')
local pos = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], pos, ARGV[2])
if ARGV[5] == '1' then redis.call('SADD', KEYS[4], ARGV[2]) else redis.call('SREM', KEYS[4], ARGV[2]) end
return pos
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisStore {
    pub fn new(conn: ConnectionManager, prefix: String) -> Self {
        Self { conn, prefix }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:presence:{name}", self.prefix)
    }

    fn user_key(&self, user: &str) -> String {
        self.key(&format!("user:{user}"))
    }

    pub async fn get(&self, user: &str) -> Result<Option<Record>> {
        let json: Option<String> = redis::cmd("GET")
            .arg(self.user_key(user))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        json.map(|j| serde_json::from_str(&j).map_err(Error::internal))
            .transpose()
    }

    pub async fn put(&self, user: &str, record: &Record, announce: bool) -> Result<()> {
        let json = serde_json::to_string(record)?;
        let not_offline = if record.state == "offline" { "0" } else { "1" };
        let mut conn = self.conn.clone();
        if announce {
            let _: i64 = redis::cmd("EVAL")
                .arg(ANNOUNCE)
                .arg(4)
                .arg(self.key("pos"))
                .arg(self.user_key(user))
                .arg(self.key("changes"))
                .arg(self.key("not_offline"))
                .arg(&json)
                .arg(user)
                .arg(RECORD_TTL_MS)
                .arg(crate::now_ms())
                .arg(not_offline)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        } else {
            let membership = if not_offline == "1" { "SADD" } else { "SREM" };
            let _: () = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(self.user_key(user))
                .arg(&json)
                .arg("PX")
                .arg(RECORD_TTL_MS)
                .ignore()
                .cmd(membership)
                .arg(self.key("not_offline"))
                .arg(user)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        Ok(())
    }

    pub async fn position(&self) -> Result<i64> {
        let pos: Option<i64> = redis::cmd("GET")
            .arg(self.key("pos"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(pos.unwrap_or(0))
    }

    pub async fn changed(&self, since: Option<i64>, upto: i64) -> Result<Vec<(String, Record)>> {
        let min = since.map_or("-inf".to_owned(), |s| format!("({s}"));
        let users: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("changes"))
            .arg(min)
            .arg(upto)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        self.records(users).await
    }

    pub async fn not_offline(&self) -> Result<Vec<(String, Record)>> {
        let users: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("not_offline"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        self.records(users).await
    }

    /// The records of `users` that still exist, in the same order.
    async fn records(&self, users: Vec<String>) -> Result<Vec<(String, Record)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = users.iter().map(|u| self.user_key(u)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        users
            .into_iter()
            .zip(values)
            .filter_map(|(user, json)| Some((user, json?)))
            .map(|(user, json)| Ok((user, serde_json::from_str(&json).map_err(Error::internal)?)))
            .collect()
    }
}

pub fn redis_error(e: redis::RedisError) -> Error {
    Error::internal(format!("redis: {e}"))
}
