//! The content repository (spec: client-server API, "Content repository"):
//! uploads (direct, or to an id reserved by `/create`), downloads, and
//! thumbnails; other servers' media fetched over federation and cached.

pub mod blobs;
pub mod remote;
pub mod thumbnail;

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::Stream;
use http::StatusCode;
use ruma::{OwnedMxcUri, ServerName, UserId};
use tokio::sync::{Notify, Semaphore};

use self::thumbnail::{Method, Probe};
use crate::{
    Error, Result, Server, now_ms,
    store::media::{Content, MediaRow, ThumbnailRow},
};

/// The media repository's shared state.
pub struct Media {
    pub blobs: blobs::Blobs,
    /// Woken when an id reserved by `/create` gets its content.
    uploaded: Notify,
    /// Decoding images takes CPU and memory: a few at a time.
    thumbnailers: Semaphore,
}

impl Media {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            blobs: blobs::Blobs::new(dir),
            uploaded: Notify::new(),
            thumbnailers: Semaphore::new(2),
        }
    }
}

/// What an upload says about itself, besides its bytes.
#[derive(Debug, Default)]
pub struct UploadMeta {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// From `Content-Length`, to refuse too large a file before reading it.
    pub declared_size: Option<u64>,
}

/// A file to send: media content or a thumbnail.
#[derive(Debug)]
pub struct Servable {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

/// spec: media ids are `[A-Za-z0-9_-]+`, which also keeps them safe as file names.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn new_media_id() -> String {
    crate::service::accounts::random_string(24)
}

fn mxc(server: &Server, media_id: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(format!("mxc://{}/{media_id}", server.config.server_name))
}

/// `POST /media/v3/upload`.
pub async fn upload<S, E>(
    server: &Arc<Server>,
    user: &UserId,
    meta: UploadMeta,
    body: S,
) -> Result<OwnedMxcUri>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let content = store_content(server, user, &meta, body).await?;
    let media_id = new_media_id();
    let row = Content {
        content_type: meta.content_type.as_deref(),
        filename: meta.filename.as_deref(),
        sha256: &content.sha256,
        size: content.size as i64,
    };
    let server_name = server.config.server_name.as_str();
    server
        .db
        .insert_media(server_name, &media_id, user.as_str(), &row, now_ms())
        .await?;
    pregenerate_thumbnails(server, &media_id);
    Ok(mxc(server, &media_id))
}

/// `POST /media/v1/create`: an id now, its content later.
pub async fn create(server: &Server, user: &UserId) -> Result<(OwnedMxcUri, i64)> {
    let now = now_ms();
    let limits = &server.config.media;
    let pending = server.db.pending_media_count(user.as_str(), now).await?;
    if pending >= i64::from(limits.max_pending_uploads) {
        return Err(Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            format!(
                "At most {} uploads may be pending",
                limits.max_pending_uploads
            ),
        ));
    }
    let media_id = new_media_id();
    let expires = now + limits.pending_upload_expiry_ms as i64;
    server
        .db
        .insert_pending_media(
            server.config.server_name.as_str(),
            &media_id,
            user.as_str(),
            now,
            expires,
        )
        .await?;
    Ok((mxc(server, &media_id), expires))
}

/// `PUT /media/v3/upload/{serverName}/{mediaId}`: the content of an id from `/create`.
pub async fn upload_to<S, E>(
    server: &Arc<Server>,
    user: &UserId,
    server_name: &ServerName,
    media_id: &str,
    meta: UploadMeta,
    body: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let unknown = || Error::not_found("Unknown or expired media ID");
    if server_name != server.config.server_name || !valid_media_id(media_id) {
        return Err(unknown());
    }
    let row = server
        .db
        .media(server_name.as_str(), media_id)
        .await?
        .ok_or_else(unknown)?;
    if row.uploader.as_deref() != Some(user.as_str()) {
        return Err(Error::forbidden(
            "This media ID was created by another user",
        ));
    }
    if row.sha256.is_some() {
        return Err(cannot_overwrite());
    }
    if row.expires_ts.is_some_and(|t| t <= now_ms()) {
        return Err(unknown());
    }
    let content = store_content(server, user, &meta, body).await?;
    let row = Content {
        content_type: meta.content_type.as_deref(),
        filename: meta.filename.as_deref(),
        sha256: &content.sha256,
        size: content.size as i64,
    };
    if !server
        .db
        .complete_pending_media(server_name.as_str(), media_id, &row, now_ms())
        .await?
    {
        return Err(cannot_overwrite());
    }
    server.media.uploaded.notify_waiters();
    pregenerate_thumbnails(server, media_id);
    Ok(())
}

fn cannot_overwrite() -> Error {
    Error::new(
        StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
        "Media already uploaded",
    )
}

/// Streams the body to disk within the size limit and the user's quota.
async fn store_content<S, E>(
    server: &Server,
    user: &UserId,
    meta: &UploadMeta,
    body: S,
) -> Result<blobs::Stored>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limits = &server.config.media;
    let max = limits.max_upload_size;
    if meta.declared_size.is_some_and(|n| n > max) {
        return Err(blobs::too_large(max));
    }
    let quota_left = match limits.user_quota {
        Some(quota) => {
            let used = server.db.media_usage(user.as_str()).await?.max(0) as u64;
            Some(quota.saturating_sub(used))
        }
        None => None,
    };
    let over_quota = |quota_left: u64| {
        Error::new(
            StatusCode::FORBIDDEN,
            "M_RESOURCE_LIMIT_EXCEEDED",
            format!("Upload would exceed your media quota ({quota_left} bytes left)"),
        )
    };
    if let (Some(left), Some(size)) = (quota_left, meta.declared_size)
        && size > left
        && size <= max
    {
        return Err(over_quota(left));
    }
    let limit = quota_left.map_or(max, |left| left.min(max));
    match server.media.blobs.store_stream(body, limit).await {
        Err(e) if e.errcode == "M_TOO_LARGE" && limit < max => {
            Err(over_quota(quota_left.unwrap_or(0)))
        }
        other => other,
    }
}

/// Which endpoint asks: the deprecated unauthenticated ones serve only
/// media from before their freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A local user, through `/_matrix/client/v1/media`: remote media is
    /// fetched on a miss.
    Authenticated,
    Legacy,
    /// Another server: only what we host, never what we cached from others.
    Federation,
}

/// The media row with content, waiting up to `timeout` for an id from
/// `/create` to get it.
async fn find(
    server: &Server,
    server_name: &ServerName,
    media_id: &str,
    timeout: Duration,
    access: Access,
) -> Result<MediaRow> {
    let not_found = || Error::not_found("Media not found");
    if !valid_media_id(media_id) {
        return Err(not_found());
    }
    // spec: clients may ask to wait; the repository bounds the wait.
    let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(60));
    loop {
        // Registered before the read, so an upload finishing in between still wakes us.
        let woken = server.media.uploaded.notified();
        let remote = server_name != server.server_name();
        let row = match server.db.media(server_name.as_str(), media_id).await? {
            Some(row) if !(remote && access == Access::Federation) => row,
            None if remote && access == Access::Authenticated => {
                remote::fetch(server, server_name, media_id, timeout).await?
            }
            _ => return Err(not_found()),
        };
        if row.quarantined != 0 {
            return Err(not_found());
        }
        if access == Access::Legacy
            && row.created_ts >= server.config.media.unauthenticated_before_ms
        {
            return Err(not_found());
        }
        if row.sha256.is_some() {
            return Ok(row);
        }
        if row.expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(not_found());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "The content has not been uploaded yet",
            ));
        }
        // Another process may finish the upload: look again now and then.
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            woken,
        )
        .await;
    }
}

/// The content of `mxc://{server_name}/{media_id}`.
pub async fn download(
    server: &Server,
    server_name: &ServerName,
    media_id: &str,
    timeout: Duration,
    access: Access,
) -> Result<Servable> {
    let row = find(server, server_name, media_id, timeout, access).await?;
    Ok(servable(row))
}

fn servable(row: MediaRow) -> Servable {
    Servable {
        sha256: row.sha256.unwrap_or_default(),
        size: row.size.max(0) as u64,
        content_type: row
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        filename: row.filename,
    }
}

/// What a thumbnail request asks for.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

impl ThumbnailRequest {
    /// From the query parameters, which the client and federation
    /// endpoints share.
    pub fn from_params(
        width: ruma::UInt,
        height: ruma::UInt,
        method: Option<&ruma::media::Method>,
        animated: Option<bool>,
    ) -> Result<Self> {
        let dimension = |value: ruma::UInt| {
            u32::try_from(u64::from(value))
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    Error::invalid_param("Thumbnail dimensions must be positive integers")
                })
        };
        let method = match method {
            Some(ruma::media::Method::Crop) => Method::Crop,
            Some(ruma::media::Method::Scale) | None => Method::Scale,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown thumbnail method {}",
                    other.as_str()
                )));
            }
        };
        Ok(Self {
            width: dimension(width)?,
            height: dimension(height)?,
            method,
            animated: animated.unwrap_or(false),
        })
    }
}

/// A thumbnail of the media, from the stored ones when one is good enough,
/// rendered (and stored) otherwise; the original when it is small enough.
pub async fn thumbnail(
    server: &Server,
    server_name: &ServerName,
    media_id: &str,
    request: ThumbnailRequest,
    timeout: Duration,
    access: Access,
) -> Result<Servable> {
    if request.width == 0 || request.height == 0 {
        return Err(Error::invalid_param("width and height must be positive"));
    }
    let row = find(server, server_name, media_id, timeout, access).await?;
    let sha256 = row.sha256.clone().unwrap_or_default();
    let probe = probe(server, &sha256).await?.ok_or_else(|| {
        Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "This content cannot be thumbnailed",
        )
    })?;
    if probe.pixels() > server.config.media.max_thumbnail_pixels {
        return Err(Error::too_large("The image is too large to thumbnail"));
    }
    // spec: `animated=true` on something that cannot move is `animated=false`.
    let animated = request.animated && probe.animated;
    let original = (probe.width, probe.height);
    let requested = (request.width, request.height);
    let target = match thumbnail::target_size(original, requested, request.method) {
        Some(target) => target,
        // The original is small enough; but `animated=false` must not get an animation.
        None if probe.animated && !animated => original,
        None => return Ok(servable(row)),
    };
    let method = request.method;
    let stored = server
        .db
        .thumbnails(server_name.as_str(), media_id, method.as_str(), animated)
        .await?;
    let best = stored
        .into_iter()
        .find(|t| thumbnail::satisfies((t.width as u32, t.height as u32), target, method));
    let thumb = match best {
        Some(t) => t,
        None => make_thumbnail(server, &row, &sha256, target, method, animated).await?,
    };
    Ok(Servable {
        sha256: thumb.sha256,
        size: thumb.size as u64,
        content_type: thumb.content_type,
        filename: None,
    })
}

async fn probe(server: &Server, sha256: &str) -> Result<Option<Probe>> {
    let path = server.media.blobs.path(sha256);
    tokio::task::spawn_blocking(move || thumbnail::probe(&path))
        .await
        .map_err(Error::internal)
}

async fn make_thumbnail(
    server: &Server,
    row: &MediaRow,
    sha256: &str,
    size: (u32, u32),
    method: Method,
    animated: bool,
) -> Result<ThumbnailRow> {
    let _permit = server
        .media
        .thumbnailers
        .acquire()
        .await
        .map_err(Error::internal)?;
    let path = server.media.blobs.path(sha256);
    let max_pixels = server.config.media.max_thumbnail_pixels;
    let rendered = tokio::task::spawn_blocking(move || {
        thumbnail::render(&path, size, method, animated, max_pixels)
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", e.to_string()))?;
    let content_type = rendered.content_type.to_owned();
    let (width, height) = (rendered.width, rendered.height);
    let stored = server.media.blobs.store_bytes(rendered.bytes).await?;
    let thumb = ThumbnailRow {
        width: i64::from(width),
        height: i64::from(height),
        content_type,
        sha256: stored.sha256,
        size: stored.size as i64,
    };
    server
        .db
        .insert_thumbnail(
            &row.server_name,
            &row.media_id,
            method.as_str(),
            animated,
            &thumb,
        )
        .await?;
    Ok(thumb)
}

/// spec: the recommended sizes are made at upload, in the background, so
/// the first thumbnail request finds them ready.
fn pregenerate_thumbnails(server: &Arc<Server>, media_id: &str) {
    let server = server.clone();
    let media_id = media_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = pregenerate(&server, &media_id).await {
            tracing::warn!(%media_id, error = %e, "pre-generating thumbnails failed");
        }
    });
}

async fn pregenerate(server: &Server, media_id: &str) -> Result<()> {
    let server_name = server.config.server_name.as_str();
    let Some(row) = server.db.media(server_name, media_id).await? else {
        return Ok(());
    };
    let Some(sha256) = row.sha256.clone() else {
        return Ok(());
    };
    let Some(probe) = probe(server, &sha256).await? else {
        return Ok(());
    };
    if probe.pixels() > server.config.media.max_thumbnail_pixels {
        return Ok(());
    }
    let mut made = Vec::new();
    for (width, height, method) in thumbnail::RECOMMENDED {
        let Some(size) =
            thumbnail::target_size((probe.width, probe.height), (width, height), method)
        else {
            continue;
        };
        if !made.contains(&(size, method)) {
            make_thumbnail(server, &row, &sha256, size, method, false).await?;
            made.push((size, method));
        }
    }
    Ok(())
}

/// `corvid media quarantine`: a quarantined id is no longer served.
pub async fn set_quarantined(server: &Server, uri: &str, quarantined: bool) -> Result<()> {
    let (server_name, media_id) = parse_mxc(uri)?;
    if !server
        .db
        .set_media_quarantined(&server_name, &media_id, quarantined)
        .await?
    {
        return Err(Error::not_found(format!("No media {uri}")));
    }
    Ok(())
}

fn parse_mxc(uri: &str) -> Result<(String, String)> {
    let mxc = <&ruma::MxcUri>::from(uri);
    let (server_name, media_id) = mxc
        .parts()
        .map_err(|e| Error::invalid_param(format!("{uri} is not an mxc:// URI: {e}")))?;
    Ok((server_name.to_string(), media_id.to_owned()))
}

/// `corvid media purge`: the remote cache (and with `include_local` local
/// media too) from before `before_ts`, files and all; returns how many
/// media ids went.
pub async fn purge(server: &Server, before_ts: i64, include_local: bool) -> Result<usize> {
    let outcome = server
        .db
        .purge_media(
            server.config.server_name.as_str(),
            before_ts,
            include_local,
            now_ms(),
        )
        .await?;
    for sha256 in &outcome.unreferenced_files {
        server.media.blobs.remove(sha256).await?;
    }
    Ok(outcome.media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_restricted_to_the_specs_characters() {
        assert!(valid_media_id("AbC_09-x"));
        assert!(!valid_media_id(""));
        assert!(!valid_media_id("../etc"));
        assert!(!valid_media_id("a%2e"));
        assert!(!valid_media_id("é"));
    }
}
