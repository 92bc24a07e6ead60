//! spec: server-server API, "Content Repository": our media, for other
//! servers, as `multipart/mixed` (an empty metadata object, then the file
//! streamed from disk).

use std::sync::Arc;

use axum::{body::Body, response::Response};
use futures::StreamExt;
use http::{HeaderMap, header};
use ruma::api::federation::authenticated_media::{get_content, get_content_thumbnail};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma, client::media_disposition},
    service::media::{self, Access, Servable, ThumbnailRequest},
};
use corvid_federation::media::MultipartWriter;

pub fn routes(router: Routes) -> Routes {
    router.ruma_raw(download).ruma_raw(thumbnail)
}

async fn download(
    server: Arc<Server>,
    req: Ruma<get_content::v1::Request>,
    _: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    let servable = media::download(
        &server,
        server.server_name(),
        &r.media_id,
        r.timeout_ms,
        Access::Federation,
    )
    .await?;
    multipart(&server, servable).await
}

async fn thumbnail(
    server: Arc<Server>,
    req: Ruma<get_content_thumbnail::v1::Request>,
    _: HeaderMap,
) -> Result<Response> {
    let r = &req.body;
    let request = ThumbnailRequest::from_params(r.width, r.height, r.method.as_ref(), r.animated)?;
    let servable = media::thumbnail(
        &server,
        server.server_name(),
        &r.media_id,
        request,
        r.timeout_ms,
        Access::Federation,
    )
    .await?;
    multipart(&server, servable).await
}

async fn multipart(server: &Server, servable: Servable) -> Result<Response> {
    let file = server.media.blobs.open(&servable.sha256).await?;
    let writer = MultipartWriter::new();
    let disposition = media_disposition(&servable.content_type, servable.filename.as_deref());
    let head = writer.head(&servable.content_type, &disposition.to_string());
    let tail = writer.tail();
    let length = head.len() as u64 + servable.size + tail.len() as u64;
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024))
        .chain(futures::stream::once(async move { Ok(tail) }));
    Response::builder()
        .header(header::CONTENT_TYPE, writer.content_type())
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(body))
        .map_err(Error::internal)
}
