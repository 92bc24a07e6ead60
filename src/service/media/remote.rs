//! Remote media: fetched over federation the first time a local user asks
//! for `mxc://other.server/id` (spec: server-server API, "Content
//! Repository"), stored like an upload, and served from the cache after.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use ruma::{ServerName, http_headers::ContentDisposition};

use corvid_federation::{
    ClientError,
    media::{self as multipart, MultipartReader},
};

use crate::{Error, Result, Server, now_ms, store::media::MediaRow};

/// Fetches `mxc://{origin}/{media_id}` and caches it.
pub async fn fetch(
    server: &Server,
    origin: &ServerName,
    media_id: &str,
    timeout: Duration,
) -> Result<MediaRow> {
    let path = format!(
        "/_matrix/federation/v1/media/download/{media_id}?timeout_ms={}",
        timeout.as_millis()
    );
    let response = server
        .federation
        .get_streaming(origin, &path)
        .await
        .map_err(|e| unavailable(origin, &e))?;
    let status = response.status();
    if !status.is_success() {
        tracing::info!(%origin, %media_id, %status, "remote media request refused");
        return Err(match status {
            StatusCode::NOT_FOUND => Error::not_found("Media not found"),
            StatusCode::GATEWAY_TIMEOUT => Error::new(
                status,
                "M_NOT_YET_UPLOADED",
                "The content has not been uploaded yet",
            ),
            _ => Error::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                format!("{origin} did not serve the media ({status})"),
            ),
        });
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = multipart::boundary(&content_type).map_err(|e| bad_response(origin, e))?;
    let mut reader = MultipartReader::new(response.into_body().into_data_stream(), &boundary);
    let part = reader
        .read_head()
        .await
        .map_err(|e| bad_response(origin, e))?;
    let limit = server.config.media.max_upload_size;
    let (stored, content_type) = match &part.location {
        Some(url) => {
            let redirected = server
                .federation
                .get_url(url)
                .await
                .map_err(|e| unavailable(origin, &e))?;
            if !redirected.status().is_success() {
                return Err(Error::new(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    format!("the media's location answered {}", redirected.status()),
                ));
            }
            let content_type = redirected
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or(part.content_type.clone());
            let body = redirected.into_body().into_data_stream();
            (
                server.media.blobs.store_stream(body, limit).await?,
                content_type,
            )
        }
        None => {
            let body = Box::pin(reader.into_file());
            (
                server.media.blobs.store_stream(body, limit).await?,
                part.content_type.clone(),
            )
        }
    };
    let filename = part
        .content_disposition
        .as_deref()
        .and_then(|d| d.parse::<ContentDisposition>().ok())
        .and_then(|d| d.filename);
    let row = MediaRow {
        server_name: origin.to_string(),
        media_id: media_id.to_owned(),
        uploader: None,
        content_type,
        filename,
        sha256: Some(stored.sha256),
        size: stored.size as i64,
        created_ts: now_ms(),
        expires_ts: None,
        quarantined: 0,
    };
    server.db.insert_remote_media(&row).await?;
    tracing::info!(%origin, %media_id, size = row.size, "cached remote media");
    // Another request may have cached it first; serve whichever row won.
    server
        .db
        .media(origin.as_str(), media_id)
        .await?
        .ok_or_else(|| Error::not_found("Media not found"))
}

fn unavailable(origin: &ServerName, e: &ClientError) -> Error {
    crate::service::federation::remote_error(origin, "Fetching media", e)
}

fn bad_response(origin: &ServerName, e: multipart::MultipartError) -> Error {
    tracing::info!(%origin, error = %e, "remote media response is malformed");
    Error::new(
        StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
        format!("{origin} sent a malformed media response"),
    )
}
