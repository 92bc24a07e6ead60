//! Users, devices, access and refresh tokens, registration tokens, UIA sessions.

use super::{Db, WriteTx};
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub is_admin: i64,
    pub deactivated: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
}

pub struct NewToken<'a> {
    pub token_hash: &'a str,
    pub expires_ts: Option<i64>,
    pub refresh_token_hash: Option<&'a str>,
}

impl Db {
    pub async fn user(&self, user_id: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(
            "SELECT user_id, password_hash, displayname, avatar_url, is_admin, deactivated FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Inserts the user; `false` when the id is taken.
    pub async fn create_user(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        displayname: &str,
        is_admin: bool,
    ) -> Result<bool> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "INSERT INTO users (user_id, password_hash, displayname, is_admin, created_ts) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(displayname)
        .bind(is_admin as i64)
        .bind(crate::now_ms())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_profile_field(
        &self,
        user_id: &str,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<()> {
        let sql = match field {
            ProfileField::Displayname => "UPDATE users SET displayname = $2 WHERE user_id = $1",
            ProfileField::AvatarUrl => "UPDATE users SET avatar_url = $2 WHERE user_id = $1",
        };
        sqlx::query(sql)
            .bind(user_id)
            .bind(value)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks the user deactivated and drops its password, devices and tokens.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let mut w = self.write().await?;
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *w.tx)
            .await?;
        let devices: Vec<(String,)> =
            sqlx::query_as("SELECT device_id FROM devices WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *w.tx)
                .await?;
        for (device_id,) in devices {
            delete_device(&mut w, user_id, &device_id).await?;
        }
        w.commit().await
    }

    pub async fn upsert_device(
        &self,
        w: &mut WriteTx<'_>,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name), \
             last_seen_ts = excluded.last_seen_ts",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(crate::now_ms())
        .execute(&mut *w.tx)
        .await?;
        Ok(())
    }

    /// Creates (or re-uses) a device and issues a token pair for it; any older
    /// tokens of that device stop working, as the spec asks when a client
    /// logs in again with the same device id.
    pub async fn start_session(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token: NewToken<'_>,
    ) -> Result<()> {
        let mut w = self.write().await?;
        self.upsert_device(&mut w, user_id, device_id, display_name)
            .await?;
        delete_device_tokens(&mut w, user_id, device_id).await?;
        insert_tokens(&mut w, user_id, device_id, &token).await?;
        w.commit().await
    }

    /// Read for every authenticated request, so kept in memory for a moment
    /// (see [`super::read_cache`]); a token in steady use is read again in
    /// the background before it expires, not in the path of a request.
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        match self.token_cache.get_refreshing(token_hash) {
            Some((owner, false)) => return Ok(Some(owner)),
            Some((owner, true)) => {
                let db = self.clone();
                let token_hash = token_hash.to_owned();
                tokio::spawn(async move {
                    match db.read_token_owner(&token_hash).await {
                        Ok(Some(_)) => {}
                        // Revoked by another process.
                        Ok(None) => db.token_cache.remove(&token_hash),
                        Err(e) => {
                            tracing::warn!(error = %e, "renewing a cached access token failed")
                        }
                    }
                });
                return Ok(Some(owner));
            }
            None => {}
        }
        self.read_token_owner(token_hash).await
    }

    /// Reads a token's owner, and caches it.
    async fn read_token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        let generation = self.token_cache.generation();
        let owner: Option<TokenOwner> = sqlx::query_as(
            "SELECT user_id, device_id, expires_ts FROM access_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        if let Some(owner) = &owner {
            self.token_cache
                .insert(token_hash.to_owned(), owner.clone(), generation);
        }
        Ok(owner)
    }

    /// Swaps a refresh token for a new token pair. `None` if the refresh token is unknown.
    pub async fn refresh_session(
        &self,
        old_refresh_hash: &str,
        token: NewToken<'_>,
    ) -> Result<Option<(String, String)>> {
        let mut w = self.write().await?;
        let owner: Option<(String, String)> = sqlx::query_as(
            "DELETE FROM refresh_tokens WHERE token_hash = $1 RETURNING user_id, device_id",
        )
        .bind(old_refresh_hash)
        .fetch_optional(&mut *w.tx)
        .await?;
        let Some((user_id, device_id)) = owner else {
            return Ok(None);
        };
        w.tokens_revoked = true;
        sqlx::query("DELETE FROM access_tokens WHERE refresh_token_hash = $1")
            .bind(old_refresh_hash)
            .execute(&mut *w.tx)
            .await?;
        insert_tokens(&mut w, &user_id, &device_id, &token).await?;
        w.commit().await?;
        Ok(Some((user_id, device_id)))
    }

    pub async fn delete_access_token(&self, token_hash: &str) -> Result<()> {
        let mut w = self.write().await?;
        w.tokens_revoked = true;
        let refresh: Option<(Option<String>,)> = sqlx::query_as(
            "DELETE FROM access_tokens WHERE token_hash = $1 RETURNING refresh_token_hash",
        )
        .bind(token_hash)
        .fetch_optional(&mut *w.tx)
        .await?;
        if let Some((Some(refresh),)) = refresh {
            sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1")
                .bind(refresh)
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit().await
    }

    /// Removes devices, everything that authenticates as them, and their
    /// encryption keys; the device-list stream records each removal.
    pub async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> Result<()> {
        let mut w = self.write().await?;
        for device_id in device_ids {
            delete_device(&mut w, user_id, device_id).await?;
        }
        w.commit().await
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        Ok(sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
        Ok(sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Renames a device (its name is part of what `/keys/query` shows, so
    /// the change goes on the device-list stream); `false` when unknown.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(name)
        .execute(&mut *w.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        w.record_device_change(user_id, device_id, false).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Records when and from where devices were last seen, `(user, device,
    /// ip)`, in one statement: on SQLite every other write, a message's
    /// included, waits while this one holds the lock.
    pub async fn touch_devices(&self, seen: &[(String, String, Option<String>)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE devices SET last_seen_ts = $1, last_seen_ip = COALESCE(s.c2, devices.last_seen_ip) \
             FROM ({}) AS s WHERE devices.user_id = s.c0 AND devices.device_id = s.c1",
            self.backend
                .json_array_rows("$2", &["text", "text", "text"])
        );
        let mut w = self.write().await?;
        sqlx::query(&sql)
            .bind(crate::now_ms())
            .bind(serde_json::to_string(seen)?)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    pub async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3) ON CONFLICT (token) DO NOTHING",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_ts)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the token exists, has not expired and has uses left.
    pub async fn registration_token_valid(&self, token: &str) -> Result<bool> {
        let row: Option<(Option<i64>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT uses_allowed, completed, expiry_ts FROM registration_tokens WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => false,
            Some((uses, completed, expiry)) => {
                uses.is_none_or(|u| completed < u) && expiry.is_none_or(|e| e > crate::now_ms())
            }
        })
    }

    pub async fn consume_registration_token(&self, token: &str) -> Result<()> {
        sqlx::query("UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1")
            .bind(token)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn create_login_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_ts: i64,
    ) -> Result<()> {
        self.insert_expiring_token("login_tokens", token_hash, user_id, expires_ts)
            .await
    }

    /// The owner of a login token that has not expired; the token is used up.
    pub async fn consume_login_token(&self, token_hash: &str) -> Result<Option<String>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .filter(|(_, expires)| *expires > crate::now_ms())
            .map(|(u, _)| u))
    }

    pub async fn create_openid_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_ts: i64,
    ) -> Result<()> {
        self.insert_expiring_token("openid_tokens", token_hash, user_id, expires_ts)
            .await
    }

    /// Stores a short-lived token in `table` (`login_tokens` or
    /// `openid_tokens`, same columns), clearing out the expired ones first.
    async fn insert_expiring_token(
        &self,
        table: &str,
        token_hash: &str,
        user_id: &str,
        expires_ts: i64,
    ) -> Result<()> {
        sqlx::query(&format!("DELETE FROM {table} WHERE expires_ts < $1"))
            .bind(crate::now_ms())
            .execute(self.pool())
            .await?;
        sqlx::query(&format!(
            "INSERT INTO {table} (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)"
        ))
        .bind(token_hash)
        .bind(user_id)
        .bind(expires_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The owner of an OpenID token that has not expired (it may be asked again).
    pub async fn openid_token_user(&self, token_hash: &str, now: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(u,)| u))
    }

    pub async fn uia_session(&self, session_id: &str) -> Result<Option<Vec<String>>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT completed FROM uia_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(c,)| {
            c.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    pub async fn save_uia_session(&self, session_id: &str, completed: &[String]) -> Result<()> {
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, completed, created_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id) DO UPDATE SET completed = excluded.completed",
        )
        .bind(session_id)
        .bind(completed.join(","))
        .bind(crate::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_uia_session(&self, session_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn save_admin_nonce(&self, nonce: &str) -> Result<()> {
        sqlx::query("INSERT INTO admin_nonces (nonce, created_ts) VALUES ($1, $2)")
            .bind(nonce)
            .bind(crate::now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Uses up a nonce; `false` if it was unknown, already used or older than a minute.
    pub async fn take_admin_nonce(&self, nonce: &str) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("DELETE FROM admin_nonces WHERE nonce = $1 RETURNING created_ts")
                .bind(nonce)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some_and(|(ts,)| crate::now_ms() - ts < 60_000))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ProfileField {
    Displayname,
    AvatarUrl,
}

pub(super) async fn delete_device(
    w: &mut WriteTx<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<()> {
    delete_device_tokens(w, user_id, device_id).await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *w.tx)
        .await?;
    w.delete_device_keys(user_id, device_id).await?;
    w.record_device_change(user_id, device_id, true).await?;
    Ok(())
}

async fn delete_device_tokens(w: &mut WriteTx<'_>, user_id: &str, device_id: &str) -> Result<()> {
    w.tokens_revoked = true;
    for table in ["access_tokens", "refresh_tokens"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
        ))
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *w.tx)
        .await?;
    }
    Ok(())
}

async fn insert_tokens(
    w: &mut WriteTx<'_>,
    user_id: &str,
    device_id: &str,
    token: &NewToken<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_token_hash) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.token_hash)
    .bind(user_id)
    .bind(device_id)
    .bind(token.expires_ts)
    .bind(token.refresh_token_hash)
    .execute(&mut *w.tx)
    .await?;
    if let Some(refresh) = token.refresh_token_hash {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)",
        )
        .bind(refresh)
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *w.tx)
        .await?;
    }
    Ok(())
}
