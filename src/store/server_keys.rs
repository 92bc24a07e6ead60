//! Other servers' signing keys, cached with their validity.

use super::Db;
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerKeyRow {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: i64,
    pub response_json: String,
}

/// One key from a verified key response.
pub struct FetchedKey<'a> {
    pub key_id: &'a str,
    pub public_key: &'a str,
    pub valid_until_ts: i64,
}

impl Db {
    pub async fn server_keys(&self, server_name: &str) -> Result<Vec<ServerKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT key_id, public_key, valid_until_ts, response_json FROM server_signing_keys \
             WHERE server_name = $1",
        )
        .bind(server_name)
        .fetch_all(self.pool())
        .await?)
    }

    /// Stores the keys of one verified response. A key already known keeps
    /// the later of the two validity times, so an older response relayed
    /// by a notary never shortens what a fresher one said.
    pub async fn store_server_keys(
        &self,
        server_name: &str,
        keys: &[FetchedKey<'_>],
        response_json: &str,
        now: i64,
    ) -> Result<()> {
        let mut w = self.write().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_signing_keys \
                 (server_name, key_id, public_key, valid_until_ts, response_json, fetched_ts) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts, \
                 response_json = excluded.response_json, fetched_ts = excluded.fetched_ts \
                 WHERE excluded.valid_until_ts >= server_signing_keys.valid_until_ts",
            )
            .bind(server_name)
            .bind(key.key_id)
            .bind(key.public_key)
            .bind(key.valid_until_ts)
            .bind(response_json)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        }
        w.commit().await
    }
}
