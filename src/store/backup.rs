//! Server-side key backup (spec: "Server-side key backups"): versions and
//! the encrypted room keys stored under them.

use super::{Db, WriteTx};
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

/// One backed-up Megolm session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoomKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: i64,
    pub session_data: String,
}

/// Which room keys of a backup a read or delete is about.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl KeyScope<'_> {
    /// The SQL condition on `room_keys` after `user_id = $1 AND version = $2`.
    fn condition(&self) -> &'static str {
        match self {
            KeyScope::All => "",
            KeyScope::Room(_) => " AND room_id = $3",
            KeyScope::Session(..) => " AND room_id = $3 AND session_id = $4",
        }
    }

    fn bind<'q, O>(
        &self,
        q: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
    where
        Self: 'q,
    {
        match *self {
            KeyScope::All => q,
            KeyScope::Room(room) => q.bind(room),
            KeyScope::Session(room, session) => q.bind(room).bind(session),
        }
    }
}

/// Why a write to a backup's keys was refused.
#[derive(Debug)]
pub enum NotCurrent {
    /// No live backup has that version.
    Unknown,
    /// The version asked for is live but not the latest one; carries the latest.
    WrongVersion(i64),
}

impl Db {
    /// Creates a new backup version, the user's latest from now on.
    pub async fn create_backup(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64> {
        let mut w = self.write().await?;
        let (last,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM room_key_backups WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *w.tx)
                .await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO room_key_backups (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(version)
    }

    /// A live backup version (`None`: the latest), with its key count.
    pub async fn backup(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<(BackupRow, i64)>> {
        let row: Option<BackupRow> = match version {
            Some(v) => sqlx::query_as(
                "SELECT version, algorithm, auth_data, etag FROM room_key_backups WHERE user_id = $1 AND version = $2 AND deleted = 0",
            )
            .bind(user_id)
            .bind(v),
            None => sqlx::query_as(
                "SELECT version, algorithm, auth_data, etag FROM room_key_backups WHERE user_id = $1 AND deleted = 0 \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(user_id),
        }
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM room_keys WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(row.version)
                .fetch_one(self.pool())
                .await?;
        Ok(Some((row, count)))
    }

    /// Replaces a live version's auth data; `false` when there is no such version.
    pub async fn update_backup(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE room_key_backups SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a version and its keys; `false` when there is no such version.
    pub async fn delete_backup(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE room_key_backups SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query("DELETE FROM room_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores sessions in the user's current backup, each only if it is
    /// better than the one already there (`better(new, old)`); returns the
    /// new `(etag, count)`.
    pub async fn put_room_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[RoomKeyRow],
        better: impl Fn(&RoomKeyRow, &RoomKeyRow) -> bool,
    ) -> Result<std::result::Result<(i64, i64), NotCurrent>> {
        let mut w = self.write().await?;
        if let Err(e) = w.check_current_backup(user_id, version).await? {
            return Ok(Err(e));
        }
        let mut changed = false;
        for key in keys {
            let old: Option<RoomKeyRow> = sqlx::query_as(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
                 FROM room_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *w.tx)
            .await?;
            if old.as_ref().is_some_and(|old| !better(key, old)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO room_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(key.is_verified)
            .bind(&key.session_data)
            .execute(&mut *w.tx)
            .await?;
            changed = true;
        }
        let etag_count = w.backup_etag_and_count(user_id, version, changed).await?;
        w.commit().await?;
        Ok(Ok(etag_count))
    }

    /// The sessions of a live backup version in `scope`.
    pub async fn room_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<Vec<RoomKeyRow>> {
        let sql = format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
             FROM room_keys WHERE user_id = $1 AND version = $2{} ORDER BY room_id, session_id",
            scope.condition()
        );
        let q = sqlx::query_as::<_, RoomKeyRow>(&sql)
            .bind(user_id)
            .bind(version);
        Ok(scope.bind(q).fetch_all(self.pool()).await?)
    }

    /// Deletes the sessions in `scope` from the user's current backup;
    /// returns the new `(etag, count)`.
    pub async fn delete_room_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<std::result::Result<(i64, i64), NotCurrent>> {
        let mut w = self.write().await?;
        if let Err(e) = w.check_current_backup(user_id, version).await? {
            return Ok(Err(e));
        }
        let sql = format!(
            "DELETE FROM room_keys WHERE user_id = $1 AND version = $2{} RETURNING session_id",
            scope.condition()
        );
        let q = sqlx::query_as::<_, (String,)>(&sql)
            .bind(user_id)
            .bind(version);
        let deleted = scope.bind(q).fetch_all(&mut *w.tx).await?;
        let etag_count = w
            .backup_etag_and_count(user_id, version, !deleted.is_empty())
            .await?;
        w.commit().await?;
        Ok(Ok(etag_count))
    }
}

impl WriteTx<'_> {
    /// spec: keys may only be written to the current (latest) version.
    async fn check_current_backup(
        &mut self,
        user_id: &str,
        version: i64,
    ) -> Result<std::result::Result<(), NotCurrent>> {
        let latest: Option<(i64,)> = sqlx::query_as(
            "SELECT version FROM room_key_backups WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let live: Option<(i64,)> = sqlx::query_as(
            "SELECT version FROM room_key_backups WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(match (live, latest) {
            (None, _) | (_, None) => Err(NotCurrent::Unknown),
            (Some(_), Some((latest,))) if latest != version => {
                Err(NotCurrent::WrongVersion(latest))
            }
            _ => Ok(()),
        })
    }

    /// Bumps the etag when the keys changed, and reads `(etag, count)`.
    async fn backup_etag_and_count(
        &mut self,
        user_id: &str,
        version: i64,
        changed: bool,
    ) -> Result<(i64, i64)> {
        if changed {
            sqlx::query(
                "UPDATE room_key_backups SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            )
            .bind(user_id)
            .bind(version)
            .execute(&mut *self.tx)
            .await?;
        }
        let (etag, count): (i64, i64) = sqlx::query_as(
            "SELECT etag, (SELECT COUNT(*) FROM room_keys WHERE user_id = $1 AND version = $2) \
             FROM room_key_backups WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((etag, count))
    }
}
