//! End-to-end encryption keys: device keys, one-time and fallback keys,
//! cross-signing keys and their signatures, and the device-list stream.
//! Keys are stored as the JSON their owner signed; the server never
//! rewrites a signed object, it only merges in signatures others uploaded.

use super::{Backend, Db, StreamItem, WriteTx, placeholders};
use crate::Result;

/// A device's uploaded identity keys and its display name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// A one-time or fallback key as uploaded: `algorithm:key_id` → JSON.
pub struct NewKey<'a> {
    pub algorithm: &'a str,
    pub key_id: &'a str,
    pub key_json: &'a str,
}

/// A signature one key made over another, stored apart from the signed JSON.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignatureRow {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// Someone's membership in a room the syncing user is (or was) in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipChange {
    pub user_id: String,
    pub their_membership: String,
    pub my_membership: String,
}

/// What a signature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Device,
    Master,
}

/// What went wrong storing an upload, for the service to report.
#[derive(Debug)]
pub enum UploadConflict {
    /// A one-time key id already holds a different key.
    OneTimeKey { key_id: String },
}

/// What a sync reports of a device's keys ([`Db::key_stock`]).
#[derive(Debug, Default)]
pub struct KeyStock {
    pub one_time: Vec<(String, i64)>,
    pub unused_fallback: Vec<String>,
}

impl Db {
    /// The identity keys of `user_id`'s devices (`devices` empty: all of them).
    pub async fn device_keys(
        &self,
        user_id: &str,
        devices: &[String],
    ) -> Result<Vec<DeviceKeysRow>> {
        let mut sql =
            "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM device_keys k \
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1"
                .to_owned();
        if !devices.is_empty() {
            sql += &format!(" AND k.device_id IN ({})", placeholders(2, devices.len()));
        }
        let mut q = sqlx::query_as::<_, DeviceKeysRow>(&sql).bind(user_id);
        for device in devices {
            q = q.bind(device);
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// Stores what `/keys/upload` carries for one device, in one transaction.
    /// Returns the new device-list position when the identity keys changed.
    pub async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        device_keys: Option<&str>,
        one_time_keys: &[NewKey<'_>],
        fallback_keys: &[NewKey<'_>],
    ) -> Result<std::result::Result<Option<i64>, UploadConflict>> {
        let mut w = self.write().await?;
        if let Some(clash) = w
            .store_one_time_keys(user_id, device_id, one_time_keys)
            .await?
        {
            return Ok(Err(clash));
        }
        for key in fallback_keys {
            // Re-uploading the same key keeps its `used` mark; a new key is unused.
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, \
                 used = CASE WHEN fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE 0 END",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key.algorithm)
            .bind(key.key_id)
            .bind(key.key_json)
            .execute(&mut *w.tx)
            .await?;
        }
        let mut changed = None;
        if let Some(json) = device_keys {
            let existing: Option<(String,)> = sqlx::query_as(
                "SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(&mut *w.tx)
            .await?;
            if existing.is_none_or(|(old,)| old != json) {
                sqlx::query(
                    "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(json)
                .execute(&mut *w.tx)
                .await?;
                changed = Some(w.record_device_change(user_id, device_id, false).await?);
            }
        }
        w.commit().await?;
        Ok(Ok(changed))
    }

    /// Unclaimed one-time keys of a device, per algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// A device's unclaimed one-time keys per algorithm and the algorithms
    /// of its fallback keys nobody has claimed yet, in one read (every sync
    /// reports both).
    pub async fn key_stock(&self, user_id: &str, device_id: &str) -> Result<KeyStock> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT 'one_time', algorithm, COUNT(*) FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm \
             UNION ALL \
             SELECT 'fallback', algorithm, CAST(0 AS BIGINT) FROM fallback_keys \
             WHERE user_id = $1 AND device_id = $2 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?;
        let mut stock = KeyStock::default();
        for (kind, algorithm, count) in rows {
            match kind.as_str() {
                "one_time" => stock.one_time.push((algorithm, count)),
                _ => stock.unused_fallback.push(algorithm),
            }
        }
        stock.unused_fallback.sort();
        Ok(stock)
    }

    /// Takes one key of `algorithm` from a device: a one-time key, removed
    /// so no one else gets it, or else its fallback key (marked used).
    /// Returns `(key_id, key_json)`.
    pub async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        let mut w = self.write().await?;
        // PostgreSQL: concurrent claims skip a row another claim has locked
        // instead of both deleting it (one of them would get nothing back).
        // SQLite: the writer lock already serialises claims.
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = \
             (SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
              ORDER BY key_id LIMIT 1{lock}) RETURNING key_id, key_json"
        );
        let claimed: Option<(String, String)> = sqlx::query_as(&sql)
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&mut *w.tx)
            .await?;
        let claimed = match claimed {
            Some(key) => Some(key),
            None => {
                sqlx::query_as(
                    "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                     RETURNING key_id, key_json",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .fetch_optional(&mut *w.tx)
                .await?
            }
        };
        w.commit().await?;
        Ok(claimed)
    }

    /// `(key_type, key_json)` of a user's cross-signing keys.
    pub async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Replaces some of a user's cross-signing keys; returns the position
    /// of the change. A new master key voids the signatures made on the old one.
    pub async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(&str, String)],
        old_master_public: Option<&str>,
    ) -> Result<i64> {
        let mut w = self.write().await?;
        let pos = w.next_stream_position(StreamItem::DeviceList).await?;
        for (key_type, json) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, key_json, stream_ordering) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json, stream_ordering = excluded.stream_ordering",
            )
            .bind(user_id)
            .bind(*key_type)
            .bind(json)
            .bind(pos)
            .execute(&mut *w.tx)
            .await?;
        }
        if let Some(old) = old_master_public {
            sqlx::query(
                "DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2",
            )
            .bind(user_id)
            .bind(old)
            .execute(&mut *w.tx)
            .await?;
        }
        w.commit().await?;
        Ok(pos)
    }

    /// Signatures others uploaded on any key of these users.
    pub async fn key_signatures(&self, target_user_ids: &[&str]) -> Result<Vec<SignatureRow>> {
        let mut rows = Vec::new();
        for chunk in target_user_ids.chunks(200) {
            let sql = format!(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature \
                 FROM key_signatures WHERE target_user_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, SignatureRow>(&sql);
            for user in chunk {
                q = q.bind(*user);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// Stores verified signatures and puts each target on the device-list
    /// stream (a device's change, or its owner's cross-signing change when
    /// the target is a master key); returns the position of the change.
    pub async fn add_key_signatures(&self, signatures: &[(SignatureRow, KeyKind)]) -> Result<i64> {
        let mut w = self.write().await?;
        let pos = w.next_stream_position(StreamItem::DeviceList).await?;
        for (s, kind) in signatures {
            sqlx::query(
                "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) \
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&s.target_user_id)
            .bind(&s.target_key_id)
            .bind(&s.signer_user_id)
            .bind(&s.signer_key_id)
            .bind(&s.signature)
            .execute(&mut *w.tx)
            .await?;
            let sql = match kind {
                KeyKind::Device => {
                    "UPDATE device_list_changes SET stream_ordering = $3 WHERE user_id = $1 AND device_id = $2"
                }
                KeyKind::Master => {
                    "UPDATE cross_signing_keys SET stream_ordering = $3 WHERE user_id = $1 AND key_type = 'master' AND $2 <> ''"
                }
            };
            let updated = sqlx::query(sql)
                .bind(&s.target_user_id)
                .bind(&s.target_key_id)
                .bind(pos)
                .execute(&mut *w.tx)
                .await?;
            if updated.rows_affected() == 0 && matches!(kind, KeyKind::Device) {
                w.put_device_change(&s.target_user_id, &s.target_key_id, false, pos)
                    .await?;
            }
        }
        w.commit().await?;
        Ok(pos)
    }

    /// Users among all whose devices or cross-signing keys changed in `(since, upto]`.
    pub async fn users_with_key_changes(&self, since: i64, upto: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT user_id FROM device_list_changes WHERE stream_ordering > $1 AND stream_ordering <= $2 \
             UNION SELECT user_id FROM cross_signing_keys WHERE stream_ordering > $1 AND stream_ordering <= $2",
        )
        .bind(since)
        .bind(upto)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Memberships that changed after `since` in the rooms `user_id` is
    /// joined to, and every membership of the rooms whose own membership
    /// changed after `since` (joined or left).
    pub async fn membership_changes_around(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<MembershipChange>> {
        Ok(sqlx::query_as(
            "SELECT theirs.user_id, theirs.membership AS their_membership, mine.membership AS my_membership \
             FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id \
             WHERE mine.user_id = $1 AND mine.stream_ordering > $2 \
             UNION ALL \
             SELECT theirs.user_id, theirs.membership, mine.membership \
             FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id AND theirs.stream_ordering > $2 \
             WHERE mine.user_id = $1 AND mine.membership = 'join' AND mine.stream_ordering <= $2",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// MSC3814: the user's dehydrated device, `(device_id, device_data)`.
    pub async fn dehydrated_device(&self, user_id: &str) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Creates the user's dehydrated device, replacing (and deleting) the
    /// previous one; the device's keys are uploaded separately.
    pub async fn put_dehydrated_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &str,
    ) -> Result<()> {
        let mut w = self.write().await?;
        w.delete_dehydrated_device(user_id).await?;
        super::accounts::delete_device(&mut w, user_id, device_id).await?;
        self.upsert_device(&mut w, user_id, device_id, display_name)
            .await?;
        sqlx::query(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(device_data)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// Deletes the user's dehydrated device; returns its id.
    pub async fn delete_dehydrated_device(&self, user_id: &str) -> Result<Option<String>> {
        let mut w = self.write().await?;
        let deleted = w.delete_dehydrated_device(user_id).await?;
        w.commit().await?;
        Ok(deleted)
    }
}

impl WriteTx<'_> {
    /// Puts a device's change on the device-list stream.
    pub async fn record_device_change(
        &mut self,
        user_id: &str,
        device_id: &str,
        deleted: bool,
    ) -> Result<i64> {
        let pos = self.next_stream_position(StreamItem::DeviceList).await?;
        self.put_device_change(user_id, device_id, deleted, pos)
            .await?;
        Ok(pos)
    }

    async fn put_device_change(
        &mut self,
        user_id: &str,
        device_id: &str,
        deleted: bool,
        pos: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_list_changes (user_id, device_id, deleted, stream_ordering) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET deleted = excluded.deleted, stream_ordering = excluded.stream_ordering",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(i64::from(deleted))
        .bind(pos)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Removes a deleted device's keys and pending messages.
    pub async fn delete_device_keys(&mut self, user_id: &str, device_id: &str) -> Result<()> {
        for table in [
            "device_keys",
            "one_time_keys",
            "fallback_keys",
            "to_device_messages",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
            ))
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *self.tx)
            .await?;
        }
        sqlx::query("DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn delete_dehydrated_device(&mut self, user_id: &str) -> Result<Option<String>> {
        let old: Option<(String,)> =
            sqlx::query_as("DELETE FROM dehydrated_devices WHERE user_id = $1 RETURNING device_id")
                .bind(user_id)
                .fetch_optional(&mut *self.tx)
                .await?;
        if let Some((device_id,)) = &old {
            super::accounts::delete_device(self, user_id, device_id).await?;
        }
        Ok(old.map(|(d,)| d))
    }

    /// Adds a device's new one-time keys in two statements whatever their
    /// number (clients upload dozens at a time, and on SQLite a message's
    /// writer waits while this holds the lock). The same key uploaded again is
    /// no change; another key under an id in use is a conflict, and nothing is
    /// stored.
    async fn store_one_time_keys(
        &mut self,
        user_id: &str,
        device_id: &str,
        keys: &[NewKey<'_>],
    ) -> Result<Option<UploadConflict>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let rows: Vec<(&str, &str, &str)> = keys
            .iter()
            .map(|k| (k.algorithm, k.key_id, k.key_json))
            .collect();
        let rows = serde_json::to_string(&rows)?;
        let uploaded = self
            .backend
            .json_array_rows("$3", &["text", "text", "text"]);
        let clash: Option<(String, String)> = sqlx::query_as(&format!(
            "SELECT k.algorithm, k.key_id FROM one_time_keys k JOIN ({uploaded}) AS s \
             ON k.algorithm = s.c0 AND k.key_id = s.c1 \
             WHERE k.user_id = $1 AND k.device_id = $2 AND k.key_json <> s.c2 LIMIT 1"
        ))
        .bind(user_id)
        .bind(device_id)
        .bind(&rows)
        .fetch_optional(&mut *self.tx)
        .await?;
        if let Some((algorithm, key_id)) = clash {
            let key_id = format!("{algorithm}:{key_id}");
            return Ok(Some(UploadConflict::OneTimeKey { key_id }));
        }
        // SQLite needs the WHERE to tell the upsert's ON CONFLICT from a join's.
        sqlx::query(&format!(
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) \
             SELECT $1, $2, s.c0, s.c1, s.c2 FROM ({uploaded}) AS s WHERE true ON CONFLICT DO NOTHING"
        ))
        .bind(user_id)
        .bind(device_id)
        .bind(&rows)
        .execute(&mut *self.tx)
        .await?;
        Ok(None)
    }
}
