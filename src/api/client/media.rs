//! spec: "Content repository" (`/_matrix/client/v1/media/*`, and the
//! `/_matrix/media/*` upload, create and deprecated download endpoints).
//!
//! Two departures from the uniform handler shape, both for memory: uploads
//! read their body as a stream (to disk, never whole in memory), so they
//! take the raw request rather than a [`Ruma`] request; downloads answer
//! with a body streamed from the file (with `Range` support) rather than
//! ruma's `Vec<u8>` response.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{post, put},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
#[allow(deprecated)]
use ruma::api::client::media::{
    get_content as legacy_get_content, get_content_as_filename as legacy_get_content_as_filename,
    get_content_thumbnail as legacy_get_content_thumbnail, get_media_config as legacy_media_config,
};
use ruma::{
    OwnedServerName,
    api::client::{
        authenticated_media::{
            get_content, get_content_as_filename, get_content_thumbnail, get_media_config,
        },
        media::{create_content, create_mxc_uri},
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method as RumaMethod,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma, RumaResponse, authenticated_user},
    service::media::{self, Access, Servable, ThumbnailRequest, UploadMeta},
};

#[allow(deprecated)]
pub fn routes(router: Routes) -> Routes {
    router
        .streaming::<create_content::v3::Request>(post(upload))
        .streaming::<ruma::api::client::media::create_content_async::v3::Request>(put(upload_to))
        .ruma(create)
        .ruma(config)
        .ruma(legacy_config)
        .ruma_raw(download)
        .ruma_raw(download_as)
        .ruma_raw(thumbnail)
        .ruma_raw(legacy_download)
        .ruma_raw(legacy_download_as)
        .ruma_raw(legacy_thumbnail)
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

fn upload_meta(req: &Request) -> Result<UploadMeta> {
    let query = Query::<UploadQuery>::try_from_uri(req.uri())
        .map_err(|e| Error::invalid_param(e.body_text()))?;
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Error::invalid_param("Content-Type is not valid text"))
        })
        .transpose()?;
    let declared_size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    Ok(UploadMeta {
        content_type,
        filename: query.0.filename.filter(|f| !f.is_empty()),
        declared_size,
    })
}

async fn upload(State(server): State<Arc<Server>>, req: Request) -> Result<Response> {
    let meta = upload_meta(&req)?;
    let (parts, body) = req.into_parts();
    let user = authenticated_user(&server, &parts).await?;
    let content_uri = media::upload(&server, &user.user_id, meta, body.into_data_stream()).await?;
    Ok(RumaResponse(create_content::v3::Response::new(content_uri)).into_response())
}

async fn upload_to(
    State(server): State<Arc<Server>>,
    Path((server_name, media_id)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let meta = upload_meta(&req)?;
    let (parts, body) = req.into_parts();
    let user = authenticated_user(&server, &parts).await?;
    let server_name = OwnedServerName::try_from(server_name)
        .map_err(|_| Error::not_found("Unknown or expired media ID"))?;
    media::upload_to(
        &server,
        &user.user_id,
        &server_name,
        &media_id,
        meta,
        body.into_data_stream(),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}

async fn create(
    server: Arc<Server>,
    req: Ruma<create_mxc_uri::v1::Request>,
) -> Result<create_mxc_uri::v1::Response> {
    let (content_uri, expires) = media::create(&server, &req.user().user_id).await?;
    let mut response = create_mxc_uri::v1::Response::new(content_uri);
    response.unused_expires_at = Some(ruma::MilliSecondsSinceUnixEpoch(
        ruma::UInt::try_from(expires.max(0) as u64).unwrap_or(ruma::UInt::MAX),
    ));
    Ok(response)
}

fn upload_size(server: &Server) -> ruma::UInt {
    ruma::UInt::try_from(server.config.media.max_upload_size).unwrap_or(ruma::UInt::MAX)
}

async fn config(
    server: Arc<Server>,
    _: Ruma<get_media_config::v1::Request>,
) -> Result<get_media_config::v1::Response> {
    Ok(get_media_config::v1::Response::new(upload_size(&server)))
}

#[allow(deprecated)]
async fn legacy_config(
    server: Arc<Server>,
    _: Ruma<legacy_media_config::v3::Request>,
) -> Result<legacy_media_config::v3::Response> {
    Ok(legacy_media_config::v3::Response::new(upload_size(&server)))
}

/// One download or thumbnail request, whichever endpoint it came through.
struct Download<'a> {
    server: &'a Server,
    server_name: &'a ruma::ServerName,
    media_id: &'a str,
    timeout: Duration,
    access: Access,
}

impl Download<'_> {
    async fn file(self, filename: Option<&str>, headers: &HeaderMap) -> Result<Response> {
        let servable = media::download(
            self.server,
            self.server_name,
            self.media_id,
            self.timeout,
            self.access,
        )
        .await?;
        serve(self.server, servable, filename, headers).await
    }

    async fn thumbnail(
        self,
        width: ruma::UInt,
        height: ruma::UInt,
        method: Option<&RumaMethod>,
        animated: Option<bool>,
        headers: &HeaderMap,
    ) -> Result<Response> {
        let request = ThumbnailRequest::from_params(width, height, method, animated)?;
        let servable = media::thumbnail(
            self.server,
            self.server_name,
            self.media_id,
            request,
            self.timeout,
            self.access,
        )
        .await?;
        serve(self.server, servable, None, headers).await
    }
}

async fn download(
    server: Arc<Server>,
    req: Ruma<get_content::v1::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Authenticated,
    }
    .file(None, &headers)
    .await
}

async fn download_as(
    server: Arc<Server>,
    req: Ruma<get_content_as_filename::v1::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Authenticated,
    }
    .file(Some(&r.filename), &headers)
    .await
}

async fn thumbnail(
    server: Arc<Server>,
    req: Ruma<get_content_thumbnail::v1::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Authenticated,
    }
    .thumbnail(r.width, r.height, r.method.as_ref(), r.animated, &headers)
    .await
}

#[allow(deprecated)]
async fn legacy_download(
    server: Arc<Server>,
    req: Ruma<legacy_get_content::v3::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Legacy,
    }
    .file(None, &headers)
    .await
}

#[allow(deprecated)]
async fn legacy_download_as(
    server: Arc<Server>,
    req: Ruma<legacy_get_content_as_filename::v3::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Legacy,
    }
    .file(Some(&r.filename), &headers)
    .await
}

#[allow(deprecated)]
async fn legacy_thumbnail(
    server: Arc<Server>,
    req: Ruma<legacy_get_content_thumbnail::v3::Request>,
    headers: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    Download {
        server: &server,
        server_name: &r.server_name,
        media_id: &r.media_id,
        timeout: r.timeout_ms,
        access: Access::Legacy,
    }
    .thumbnail(r.width, r.height, r.method.as_ref(), r.animated, &headers)
    .await
}

/// spec: "Serving inline content": types a browser will not run as a page.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

pub(crate) fn disposition(content_type: &str, filename: Option<&str>) -> ContentDisposition {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    ContentDisposition::new(kind).with_filename(filename.map(str::to_owned))
}

/// A byte range of a file of `size` bytes, from a `Range: bytes=…` header.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// One range (`a-b`, `a-`, `-n`); several ranges, or a header we cannot
/// read, get the whole file, as RFC 9110 allows.
fn parse_range(header: Option<&HeaderValue>, size: u64) -> Range {
    let Some(spec) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(size.saturating_sub(1)))),
        (Ok(start), Err(_)) if last.is_empty() => Some((start, size.saturating_sub(1))),
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => {
            Some((size.saturating_sub(suffix), size.saturating_sub(1)))
        }
        _ => return Range::Whole,
    };
    match parsed {
        Some((start, end)) if start < size && start <= end => Range::Part { start, end },
        _ => Range::Unsatisfiable,
    }
}

/// The file, streamed from disk: whole, or the requested range.
async fn serve(
    server: &Server,
    servable: Servable,
    filename: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response> {
    let size = servable.size;
    let filename = filename.or(servable.filename.as_deref());
    let mut file = server.media.blobs.open(&servable.sha256).await?;
    let range = parse_range(headers.get(header::RANGE), size);
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, &servable.content_type)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&servable.content_type, filename).to_string(),
        )
        .header(header::ACCEPT_RANGES, "bytes");
    let (builder, start, len) = match range {
        Range::Whole => (builder.status(StatusCode::OK), 0, size),
        Range::Part { start, end } => (
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            start,
            end - start + 1,
        ),
        Range::Unsatisfiable => {
            let mut response = Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "M_UNKNOWN",
                format!("The range is outside the file's {size} bytes"),
            )
            .into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
            );
            return Ok(response);
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(Error::internal)?;
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        64 * 1024,
    ));
    builder
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .map_err(Error::internal)
}

/// spec: "the server SHOULD provide a `Content-Security-Policy` header" and
/// `Cross-Origin-Resource-Policy: cross-origin` on media; with `nosniff`, a
/// browser renders media only as its declared type. Set on every response
/// under a media path, errors included.
pub async fn safe_headers(req: Request, next: Next) -> Response {
    let is_media = is_media_path(req.uri().path());
    let mut response = next.run(req).await;
    if is_media {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                 style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
            ),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        );
    }
    response
}

fn is_media_path(path: &str) -> bool {
    path.starts_with("/_matrix/media/")
        || path.starts_with("/_matrix/client/v1/media/")
        || path.starts_with("/_matrix/client/unstable/org.matrix.msc3916/media/")
        || path.starts_with("/_matrix/federation/v1/media/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Range {
        parse_range(Some(&HeaderValue::from_str(value).unwrap()), size)
    }

    #[test]
    fn ranges_are_clamped_and_bad_ones_give_the_whole_file() {
        assert_eq!(parse_range(None, 10), Range::Whole);
        assert_eq!(range("bytes=0-3", 10), Range::Part { start: 0, end: 3 });
        assert_eq!(range("bytes=5-", 10), Range::Part { start: 5, end: 9 });
        assert_eq!(range("bytes=-4", 10), Range::Part { start: 6, end: 9 });
        assert_eq!(range("bytes=8-100", 10), Range::Part { start: 8, end: 9 });
        assert_eq!(range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(range("bytes=0-1,4-5", 10), Range::Whole);
        assert_eq!(range("bytes=x-y", 10), Range::Whole);
        assert_eq!(range("items=0-1", 10), Range::Whole);
    }

    #[test]
    fn only_safe_types_are_inline() {
        let inline = disposition("image/png", Some("cat.png")).to_string();
        assert!(inline.starts_with("inline"), "{inline}");
        assert!(inline.contains("cat.png"));
        let html = disposition("text/html; charset=utf-8", None).to_string();
        assert!(html.starts_with("attachment"), "{html}");
        let svg = disposition("image/svg+xml", None).to_string();
        assert!(svg.starts_with("attachment"), "{svg}");
    }
}
