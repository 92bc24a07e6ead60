//! Room aliases, the public room directory and content reports.

use super::Db;
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PublicRoomRow {
    pub room_id: String,
    pub joined: i64,
}

impl Db {
    pub async fn alias_room(&self, alias: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT room_id FROM room_aliases WHERE alias = $1")
                .bind(alias)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(r,)| r))
    }

    /// `false` when the alias is taken.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `(room_id, creator)` of an alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
                .bind(alias)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<()> {
        sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                .bind(room_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    pub async fn set_room_public(&self, room_id: &str, public: bool) -> Result<()> {
        sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(public as i64)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Published rooms with their joined member counts, largest first.
    pub async fn public_rooms(&self) -> Result<Vec<PublicRoomRow>> {
        Ok(sqlx::query_as(
            "SELECT r.room_id, (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined \
             FROM rooms r WHERE r.is_public = 1 ORDER BY joined DESC, r.room_id",
        )
        .fetch_all(self.pool())
        .await?)
    }
}

impl super::WriteTx<'_> {
    pub async fn insert_alias(&mut self, alias: &str, room_id: &str, creator: &str) -> Result<()> {
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_room_public(&mut self, room_id: &str, public: bool) -> Result<()> {
        sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(public as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

/// A report for the server's admins; unused targets are `None`.
pub struct NewReport<'a> {
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl Db {
    pub async fn insert_report(&self, report: &NewReport<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO reports (reporter, room_id, event_id, user_id, reason, received_ts) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(report.reporter)
        .bind(report.room_id)
        .bind(report.event_id)
        .bind(report.user_id)
        .bind(report.reason)
        .bind(crate::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
