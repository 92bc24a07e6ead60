//! The media repository's index: which mxc:// ids and thumbnails point at
//! which content-addressed file (the files themselves are on disk).

use super::Db;
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MediaRow {
    pub server_name: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// `None` while an id made by `/create` waits for its content.
    pub sha256: Option<String>,
    pub size: i64,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub quarantined: i64,
}

/// The content of an upload, once its file is stored.
#[derive(Debug, Clone)]
pub struct Content<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub sha256: &'a str,
    pub size: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub width: i64,
    pub height: i64,
    pub content_type: String,
    pub sha256: String,
    pub size: i64,
}

const MEDIA_COLUMNS: &str = "server_name, media_id, uploader, content_type, filename, sha256, \
     size, created_ts, expires_ts, quarantined";

impl Db {
    pub async fn media(&self, server_name: &str, media_id: &str) -> Result<Option<MediaRow>> {
        let sql =
            format!("SELECT {MEDIA_COLUMNS} FROM media WHERE server_name = $1 AND media_id = $2");
        Ok(sqlx::query_as(&sql)
            .bind(server_name)
            .bind(media_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Records an upload whose content is already stored.
    pub async fn insert_media(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        content: &Content<'_>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (server_name, media_id, uploader, content_type, filename, sha256, size, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(uploader)
        .bind(content.content_type)
        .bind(content.filename)
        .bind(content.sha256)
        .bind(content.size)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Caches another server's media; a row cached meanwhile by another
    /// request stays as it is.
    pub async fn insert_remote_media(&self, row: &MediaRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (server_name, media_id, content_type, filename, sha256, size, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (server_name, media_id) DO NOTHING",
        )
        .bind(&row.server_name)
        .bind(&row.media_id)
        .bind(&row.content_type)
        .bind(&row.filename)
        .bind(&row.sha256)
        .bind(row.size)
        .bind(row.created_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Reserves an id whose content comes later (`POST /media/v1/create`).
    pub async fn insert_pending_media(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        now: i64,
        expires_ts: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (server_name, media_id, uploader, created_ts, expires_ts) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(uploader)
        .bind(now)
        .bind(expires_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ids of `uploader` still waiting for content at `now`.
    pub async fn pending_media_count(&self, uploader: &str, now: i64) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2",
        )
        .bind(uploader)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    /// Gives a pending id its content; false when it has content already
    /// (or expired meanwhile), so two uploads to one id cannot both win.
    pub async fn complete_pending_media(
        &self,
        server_name: &str,
        media_id: &str,
        content: &Content<'_>,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET content_type = $3, filename = $4, sha256 = $5, size = $6, \
             created_ts = $7, expires_ts = NULL \
             WHERE server_name = $1 AND media_id = $2 AND sha256 IS NULL AND expires_ts > $7",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(content.content_type)
        .bind(content.filename)
        .bind(content.sha256)
        .bind(content.size)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Bytes `uploader` has uploaded, counted per upload (a file stored
    /// once for two identical uploads counts twice: each is the user's).
    pub async fn media_usage(&self, uploader: &str) -> Result<i64> {
        let (total,): (Option<i64>,) =
            sqlx::query_as("SELECT CAST(SUM(size) AS BIGINT) FROM media WHERE uploader = $1")
                .bind(uploader)
                .fetch_one(self.pool())
                .await?;
        Ok(total.unwrap_or(0))
    }

    pub async fn thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
        method: &str,
        animated: bool,
    ) -> Result<Vec<ThumbnailRow>> {
        Ok(sqlx::query_as(
            "SELECT width, height, content_type, sha256, size FROM media_thumbnails \
             WHERE server_name = $1 AND media_id = $2 AND method = $3 AND animated = $4 \
             ORDER BY width, height",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(method)
        .bind(i64::from(animated))
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn insert_thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        method: &str,
        animated: bool,
        thumbnail: &ThumbnailRow,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media_thumbnails \
             (server_name, media_id, method, animated, width, height, content_type, sha256, size) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (server_name, media_id, method, animated, width, height) DO NOTHING",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(method)
        .bind(i64::from(animated))
        .bind(thumbnail.width)
        .bind(thumbnail.height)
        .bind(&thumbnail.content_type)
        .bind(&thumbnail.sha256)
        .bind(thumbnail.size)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// False when the media id is unknown.
    pub async fn set_media_quarantined(
        &self,
        server_name: &str,
        media_id: &str,
        quarantined: bool,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET quarantined = $3 WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(i64::from(quarantined))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the media (and their thumbnails) created before `before_ts`:
    /// remote media only, or local media too, and ids whose content never
    /// came and that expired. Returns the files no row points at any more.
    pub async fn purge_media(
        &self,
        local_server: &str,
        before_ts: i64,
        include_local: bool,
        now: i64,
    ) -> Result<PurgeOutcome> {
        let mut w = self.write().await?;
        let condition = "(created_ts < $1 AND (server_name <> $2 OR $3 = 1)) \
             OR (sha256 IS NULL AND expires_ts <= $4)";
        let doomed: Vec<(String, String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT server_name, media_id, sha256 FROM media WHERE {condition}"
        ))
        .bind(before_ts)
        .bind(local_server)
        .bind(i64::from(include_local))
        .bind(now)
        .fetch_all(&mut *w.tx)
        .await?;
        let mut files = Vec::new();
        for (server_name, media_id, sha256) in &doomed {
            let thumbs: Vec<(String,)> = sqlx::query_as(
                "DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2 RETURNING sha256",
            )
            .bind(server_name)
            .bind(media_id)
            .fetch_all(&mut *w.tx)
            .await?;
            sqlx::query("DELETE FROM media WHERE server_name = $1 AND media_id = $2")
                .bind(server_name)
                .bind(media_id)
                .execute(&mut *w.tx)
                .await?;
            files.extend(sha256.iter().cloned());
            files.extend(thumbs.into_iter().map(|(s,)| s));
        }
        files.sort();
        files.dedup();
        let mut unreferenced = Vec::new();
        for sha256 in files {
            let (uses,): (i64,) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) \
                 + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)",
            )
            .bind(&sha256)
            .fetch_one(&mut *w.tx)
            .await?;
            if uses == 0 {
                unreferenced.push(sha256);
            }
        }
        w.commit().await?;
        Ok(PurgeOutcome {
            media: doomed.len(),
            unreferenced_files: unreferenced,
        })
    }
}

#[derive(Debug)]
pub struct PurgeOutcome {
    /// Media ids deleted.
    pub media: usize,
    /// Files on disk that nothing points at any more.
    pub unreferenced_files: Vec<String>,
}
