//! Per-user data: account data (global and per room) and sync filters.

use super::{Db, StreamItem};
use crate::Result;

/// Account data has room id `""` when global.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountDataRow {
    pub room_id: String,
    pub data_type: String,
    pub content: String,
}

impl Db {
    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(c,)| c))
    }

    /// The global account data of `data_type` of each of `users` that has
    /// some, as `(user_id, content)`: one statement per few hundred users.
    pub async fn global_account_data_of(
        &self,
        users: &[&str],
        data_type: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut rows = Vec::new();
        for chunk in users.chunks(self.backend().rows_per_statement(1)) {
            let sql = format!(
                "SELECT user_id, content FROM account_data \
                 WHERE room_id = '' AND data_type = $1 AND user_id IN ({})",
                super::placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as(&sql).bind(data_type);
            for user in chunk {
                q = q.bind(*user);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// Stores account data and returns its stream position.
    pub async fn put_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        content: &str,
    ) -> Result<i64> {
        let mut w = self.write().await?;
        let pos = w
            .next_stream_position(StreamItem::AccountData { user_id })
            .await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_ordering) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_ordering = excluded.stream_ordering",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(pos)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(pos)
    }

    /// All of a user's account data for one room.
    pub async fn room_account_data(
        &self,
        user_id: &str,
        room_id: &str,
    ) -> Result<Vec<AccountDataRow>> {
        Ok(sqlx::query_as(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND room_id = $2",
        )
        .bind(user_id)
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Account data changed after `since` (all of it when `since` is 0).
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<AccountDataRow>> {
        Ok(sqlx::query_as(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// Stores a filter and returns its id (per user, counting from 0).
    pub async fn create_filter(&self, user_id: &str, filter_json: &str) -> Result<i64> {
        let mut w = self.write().await?;
        let (next,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&mut *w.tx)
        .await?;
        sqlx::query("INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(next)
            .bind(filter_json)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(next)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(f,)| f))
    }
}
