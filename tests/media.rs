//! The content repository over HTTP: byte-exact streamed uploads and
//! downloads, ranges, dedup on disk, thumbnails per method and format, the
//! `/create` + `PUT` flow, size and quota limits, the frozen legacy
//! endpoints, safe headers, and the admin's quarantine and purge.

mod common;

use std::{io::Cursor, path::Path, time::Duration};

use common::{TestServer, User, json_of};
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use rand::RngCore;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

on_both_backends!(
    upload_and_download_are_byte_exact_with_ranges,
    identical_uploads_are_stored_once,
    thumbnails_per_method_and_format,
    create_then_upload,
    size_and_quota_limits,
    legacy_endpoints_are_frozen,
    quarantine_and_purge
);

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `POST /media/v3/upload`, with the validated JSON answer.
async fn upload(
    s: &TestServer,
    user: &User,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let path = match filename {
        Some(name) => format!(
            "/_matrix/media/v3/upload?filename={}",
            common::urlencode(name)
        ),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    let res = http()
        .post(format!("{}{path}", s.base))
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    json_of(res, &Method::POST, &path).await
}

async fn upload_ok(s: &TestServer, user: &User, bytes: Vec<u8>, content_type: &str) -> String {
    let (status, body) = upload(s, user, bytes, content_type, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content_uri"].as_str().unwrap().to_owned()
}

/// The server name of an `mxc://server/id`.
fn server_of(uri: &str) -> &str {
    mxc_parts(uri).0
}

/// The media id of an `mxc://server/id`.
fn id_of(uri: &str) -> &str {
    mxc_parts(uri).1
}

fn mxc_parts(uri: &str) -> (&str, &str) {
    uri.strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an mxc URI")
}

async fn get(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> reqwest::Response {
    let mut req = http().get(format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(r) = range {
        req = req.header(header::RANGE, r);
    }
    req.send().await.unwrap()
}

async fn error_of(res: reqwest::Response, path: &str) -> (StatusCode, String) {
    let (status, body) = json_of(res, &Method::GET, path).await;
    (
        status,
        body["errcode"].as_str().unwrap_or_default().to_owned(),
    )
}

fn header_of<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

fn assert_safe_headers(res: &reqwest::Response) {
    assert!(
        header_of(res, "content-security-policy").starts_with("sandbox; default-src 'none'"),
        "{:?}",
        res.headers()
    );
    assert_eq!(header_of(res, "x-content-type-options"), "nosniff");
    assert_eq!(
        header_of(res, "cross-origin-resource-policy"),
        "cross-origin"
    );
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

async fn upload_and_download_are_byte_exact_with_ranges(s: TestServer) {
    let alice = s.register("alice").await;
    let (status, config) = s.get("/_matrix/client/v1/media/config", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["m.upload.size"], s.config.media.max_upload_size);

    let bytes = random_bytes(10 * 1024 * 1024);
    let (status, body) = upload(&s, &alice, bytes.clone(), "video/mp4", Some("clip.mp4")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uri = body["content_uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("mxc://{}/", s.config.server_name)),
        "{uri}"
    );

    let path = format!(
        "/_matrix/client/v1/media/download/{}/{}",
        server_of(uri),
        id_of(uri)
    );
    let res = get(&s, &path, Some(&alice.token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_safe_headers(&res);
    assert_eq!(header_of(&res, "content-type"), "video/mp4");
    let disposition = header_of(&res, "content-disposition").to_owned();
    assert!(
        disposition.starts_with("inline") && disposition.contains("clip.mp4"),
        "{disposition}"
    );
    assert_eq!(header_of(&res, "accept-ranges"), "bytes");
    assert!(
        res.bytes().await.unwrap() == bytes,
        "download is byte-exact"
    );

    let named = get(
        &s,
        &format!(
            "/_matrix/client/v1/media/download/{}/{}/other%20name.mp4",
            server_of(uri),
            id_of(uri)
        ),
        Some(&alice.token),
        None,
    )
    .await;
    assert!(header_of(&named, "content-disposition").contains("other name.mp4"));

    let res = get(&s, &path, Some(&alice.token), Some("bytes=1000-1999")).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header_of(&res, "content-range"),
        format!("bytes 1000-1999/{}", bytes.len())
    );
    assert_eq!(res.bytes().await.unwrap(), bytes[1000..2000]);
    let res = get(&s, &path, Some(&alice.token), Some("bytes=-10")).await;
    assert_eq!(res.bytes().await.unwrap(), bytes[bytes.len() - 10..]);
    let res = get(
        &s,
        &path,
        Some(&alice.token),
        Some(&format!("bytes={}-", bytes.len())),
    )
    .await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header_of(&res, "content-range"),
        format!("bytes */{}", bytes.len())
    );

    let res = get(&s, &path, None, None).await;
    assert_eq!(
        error_of(res, &path).await,
        (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN".into())
    );

    let html = upload_ok(
        &s,
        &alice,
        b"<script>alert(1)</script>".to_vec(),
        "text/html",
    )
    .await;
    let html_path = format!(
        "/_matrix/client/v1/media/download/{}/{}",
        server_of(&html),
        id_of(&html)
    );
    let res = get(&s, &html_path, Some(&alice.token), None).await;
    assert!(header_of(&res, "content-disposition").starts_with("attachment"));
    assert_eq!(header_of(&res, "content-type"), "text/html");
    assert_safe_headers(&res);

    let unknown = format!(
        "/_matrix/client/v1/media/download/{}/nosuchmedia",
        s.config.server_name
    );
    let res = get(&s, &unknown, Some(&alice.token), None).await;
    assert_safe_headers(&res);
    assert_eq!(
        error_of(res, &unknown).await,
        (StatusCode::NOT_FOUND, "M_NOT_FOUND".into())
    );
    let traversal = format!(
        "/_matrix/client/v1/media/download/{}/..%2F..%2Fetc",
        s.config.server_name
    );
    let res = get(&s, &traversal, Some(&alice.token), None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// Files under the media directory (thumbnails included), temp files excluded.
fn stored_files(dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap() != "tmp")
                .map(|p| if p.is_dir() { walk(&p) } else { 1 })
                .sum()
        })
    }
    walk(dir)
}

async fn identical_uploads_are_stored_once(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bytes = random_bytes(100_000);
    let a = upload_ok(&s, &alice, bytes.clone(), "application/pdf").await;
    let b = upload_ok(&s, &bob, bytes.clone(), "application/pdf").await;
    assert_ne!(a, b, "each upload has its own id");
    assert_eq!(stored_files(&s.config.media_dir()), 1, "one file for both");
    for uri in [&a, &b] {
        let res = get(
            &s,
            &format!(
                "/_matrix/client/v1/media/download/{}/{}",
                server_of(uri),
                id_of(uri)
            ),
            Some(&bob.token),
            None,
        )
        .await;
        assert_eq!(res.bytes().await.unwrap(), bytes);
    }
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 256) as u8])
    }))
}

fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder
            .encode_frames((0..frames).map(|i| {
                image::Frame::new(RgbaImage::from_pixel(
                    width,
                    height,
                    image::Rgba([i * 60, 10, 200, 255]),
                ))
            }))
            .unwrap();
    }
    out
}

/// A thumbnail request: status, content type and decoded image (when it is one).
async fn thumb(
    s: &TestServer,
    user: &User,
    uri: &str,
    query: &str,
) -> (StatusCode, String, Option<DynamicImage>, Vec<u8>) {
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{}/{}?{query}",
        server_of(uri),
        id_of(uri)
    );
    let res = get(s, &path, Some(&user.token), None).await;
    assert_safe_headers(&res);
    let status = res.status();
    let content_type = header_of(&res, "content-type").to_owned();
    let bytes = res.bytes().await.unwrap().to_vec();
    (
        status,
        content_type,
        image::load_from_memory(&bytes).ok(),
        bytes,
    )
}

fn dims(image: &Option<DynamicImage>) -> (u32, u32) {
    let image = image.as_ref().expect("an image");
    (image.width(), image.height())
}

async fn thumbnails_per_method_and_format(s: TestServer) {
    let alice = s.register("alice").await;
    let jpeg = upload_ok(
        &s,
        &alice,
        encoded(&photo(1000, 500), ImageFormat::Jpeg),
        "image/jpeg",
    )
    .await;
    let (status, kind, image, _) = thumb(&s, &alice, &jpeg, "width=96&height=96&method=crop").await;
    assert_eq!(
        (status, kind.as_str(), dims(&image)),
        (StatusCode::OK, "image/jpeg", (96, 96))
    );
    let (_, _, image, _) = thumb(&s, &alice, &jpeg, "width=320&height=240&method=scale").await;
    assert_eq!(dims(&image), (320, 160), "scale keeps the aspect ratio");
    let (_, _, image, _) = thumb(&s, &alice, &jpeg, "width=100&height=100&method=scale").await;
    let (w, h) = dims(&image);
    assert!(
        w >= 100 && w * 500 == h * 1000,
        "never smaller than asked: {w}x{h}"
    );
    let (_, _, image, _) = thumb(&s, &alice, &jpeg, "width=150&height=50&method=crop").await;
    assert_eq!(dims(&image), (150, 50), "crop takes the requested aspect");
    let (_, _, image, _) = thumb(&s, &alice, &jpeg, "width=40&height=30").await;
    let (w, h) = dims(&image);
    assert!(
        w >= 40 && h >= 20 && w == 2 * h,
        "default method is scale: {w}x{h}"
    );

    let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(
        300,
        200,
        image::Rgba([0, 0, 255, 90]),
    ));
    let png = upload_ok(&s, &alice, encoded(&clear, ImageFormat::Png), "image/png").await;
    let (_, kind, image, _) = thumb(&s, &alice, &png, "width=32&height=32&method=crop").await;
    assert_eq!(
        (kind.as_str(), dims(&image)),
        ("image/png", (32, 32)),
        "transparency stays PNG"
    );
    let original = encoded(&clear, ImageFormat::Png);
    let (_, _, _, bytes) = thumb(&s, &alice, &png, "width=800&height=600&method=scale").await;
    assert_eq!(bytes, original, "no upscaling: the small original itself");

    let webp = upload_ok(
        &s,
        &alice,
        encoded(&photo(640, 480), ImageFormat::WebP),
        "image/webp",
    )
    .await;
    let (_, kind, image, _) = thumb(&s, &alice, &webp, "width=320&height=240&method=scale").await;
    assert_eq!((kind.as_str(), dims(&image)), ("image/jpeg", (320, 240)));

    let gif = upload_ok(&s, &alice, animated_gif(400, 200, 3), "image/gif").await;
    let (_, kind, image, bytes) =
        thumb(&s, &alice, &gif, "width=100&height=50&animated=true").await;
    assert_eq!((kind.as_str(), dims(&image)), ("image/gif", (100, 50)));
    let frames = image::AnimationDecoder::into_frames(
        image::codecs::gif::GifDecoder::new(Cursor::new(&bytes)).unwrap(),
    )
    .count();
    assert_eq!(frames, 3, "animated=true keeps the animation");
    let (_, kind, image, _) = thumb(&s, &alice, &gif, "width=100&height=50&animated=false").await;
    assert_ne!(
        kind, "image/gif",
        "animated=false: the first frame, as a still"
    );
    let (w, h) = dims(&image);
    assert!(
        w >= 100 && w == 2 * h,
        "a pre-generated still may be larger: {w}x{h}"
    );
    let (_, kind, _, _) = thumb(&s, &alice, &jpeg, "width=96&height=96&animated=true").await;
    assert_eq!(kind, "image/jpeg", "a still cannot be animated");

    let text = upload_ok(&s, &alice, b"just words".to_vec(), "text/plain").await;
    let (status, ..) = thumb(&s, &alice, &text, "width=96&height=96").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, ..) = thumb(&s, &alice, &jpeg, "width=0&height=96").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn put_content(s: &TestServer, user: &User, uri: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/media/v3/upload/{}/{}?filename=late.bin",
        server_of(uri),
        id_of(uri)
    );
    let res = http()
        .put(format!("{}{path}", s.base))
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    json_of(res, &Method::PUT, &path).await
}

async fn create_then_upload(mut s: TestServer) {
    s.config.media.max_pending_uploads = 3;
    s.restart().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (status, created) = s
        .post(
            "/_matrix/media/v1/create",
            &alice.token,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let uri = created["content_uri"].as_str().unwrap().to_owned();
    let expires = created["unused_expires_at"].as_i64().unwrap();
    assert!(
        expires > corvid::now_ms() + 23 * 3600 * 1000,
        "about a day to upload"
    );

    let path = format!(
        "/_matrix/client/v1/media/download/{}/{}?timeout_ms=200",
        server_of(&uri),
        id_of(&uri)
    );
    let res = get(&s, &path, Some(&alice.token), None).await;
    assert_eq!(
        error_of(res, &path).await,
        (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED".into())
    );

    // A download waiting for the content gets it as soon as it is uploaded.
    let waiting = {
        let path = format!(
            "{}/_matrix/client/v1/media/download/{}/{}?timeout_ms=10000",
            s.base,
            server_of(&uri),
            id_of(&uri)
        );
        let token = bob.token.clone();
        tokio::spawn(async move { http().get(path).bearer_auth(token).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = put_content(&s, &bob, &uri, b"late bytes").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (status, body) = put_content(&s, &alice, &uri, b"late bytes").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let res = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header_of(&res, "content-disposition").contains("late.bin"));
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"late bytes");

    let (status, body) = put_content(&s, &alice, &uri, b"again").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_CANNOT_OVERWRITE_MEDIA"))
    );
    let unknown = format!("mxc://{}/neverCreated", s.config.server_name);
    let (status, body) = put_content(&s, &alice, &unknown, b"x").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    for _ in 0..3 {
        let (status, _) = s
            .post(
                "/_matrix/media/v1/create",
                &alice.token,
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = s
        .post(
            "/_matrix/media/v1/create",
            &alice.token,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("M_LIMIT_EXCEEDED"))
    );
}

async fn size_and_quota_limits(mut s: TestServer) {
    s.config.media.max_upload_size = 1024 * 1024;
    s.config.media.user_quota = Some(1536 * 1024);
    s.restart().await;
    let alice = s.register("alice").await;
    let (status, body) = upload(
        &s,
        &alice,
        random_bytes(2 * 1024 * 1024),
        "application/zip",
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );

    // Without a Content-Length the limit is found while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(random_bytes(100_000))).collect();
    let path = "/_matrix/media/v3/upload";
    let res = http()
        .post(format!("{}{path}", s.base))
        .bearer_auth(&alice.token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res, &Method::POST, path).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );

    upload_ok(&s, &alice, random_bytes(1024 * 1024), "application/zip").await;
    let (status, body) = upload(
        &s,
        &alice,
        random_bytes(1024 * 1024),
        "application/zip",
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_RESOURCE_LIMIT_EXCEEDED")),
        "{body}"
    );
    upload_ok(&s, &alice, random_bytes(400 * 1024), "application/zip").await;
    assert_eq!(
        std::fs::read_dir(s.config.media_dir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "refused uploads leave nothing behind"
    );
}

async fn legacy_endpoints_are_frozen(mut s: TestServer) {
    let alice = s.register("alice").await;
    let png = encoded(&photo(200, 200), ImageFormat::Png);
    let uri = upload_ok(&s, &alice, png.clone(), "image/png").await;
    let download = format!(
        "/_matrix/media/v3/download/{}/{}",
        server_of(&uri),
        id_of(&uri)
    );
    let thumbnail = format!(
        "/_matrix/media/v3/thumbnail/{}/{}?width=32&height=32",
        server_of(&uri),
        id_of(&uri)
    );
    for path in [&download, &thumbnail] {
        let res = get(&s, path, None, None).await;
        assert_safe_headers(&res);
        assert_eq!(
            error_of(res, path).await,
            (StatusCode::NOT_FOUND, "M_NOT_FOUND".into()),
            "{path}"
        );
    }

    // Media from before the freeze stays reachable without a token.
    s.config.media.unauthenticated_before_ms = corvid::now_ms() + 60_000;
    s.restart().await;
    let res = get(&s, &download, None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_safe_headers(&res);
    assert_eq!(res.bytes().await.unwrap(), png);
    let named = format!(
        "/_matrix/media/v3/download/{}/{}/pic.png",
        server_of(&uri),
        id_of(&uri)
    );
    let res = get(&s, &named, None, None).await;
    assert!(header_of(&res, "content-disposition").contains("pic.png"));
    let res = get(&s, &thumbnail, None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let image = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    let (status, config) = s.get("/_matrix/media/v3/config", &alice.token).await;
    assert_eq!(
        (status, config["m.upload.size"].as_u64()),
        (StatusCode::OK, Some(s.config.media.max_upload_size))
    );
}

/// Runs the `corvid` binary against this server's database and data directory.
fn corvid_cli(s: &TestServer, args: &[&str]) -> String {
    let config = s.data_dir().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = {:?}\ndatabase_url = {:?}\ndata_dir = {:?}\n",
            s.config.server_name.as_str(),
            s.config.database_url,
            s.config.data_dir.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "corvid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn quarantine_and_purge(s: TestServer) {
    let alice = s.register("alice").await;
    let kept = upload_ok(&s, &alice, random_bytes(1000), "application/octet-stream").await;
    let bad = upload_ok(&s, &alice, random_bytes(1000), "application/octet-stream").await;
    let path = |uri: &str| {
        format!(
            "/_matrix/client/v1/media/download/{}/{}",
            server_of(uri),
            id_of(uri)
        )
    };

    corvid_cli(&s, &["media", "quarantine", &bad]);
    let res = get(&s, &path(&bad), Some(&alice.token), None).await;
    assert_eq!(
        error_of(res, &path(&bad)).await,
        (StatusCode::NOT_FOUND, "M_NOT_FOUND".into())
    );
    corvid_cli(&s, &["media", "quarantine", "--undo", &bad]);
    assert_eq!(
        get(&s, &path(&bad), Some(&alice.token), None)
            .await
            .status(),
        StatusCode::OK
    );

    // Without --local only the remote cache goes: nothing here.
    let out = corvid_cli(&s, &["media", "purge", "--before", "2999-01-01"]);
    assert!(out.contains("purged 0 media"), "{out}");
    assert_eq!(
        get(&s, &path(&kept), Some(&alice.token), None)
            .await
            .status(),
        StatusCode::OK
    );
    let out = corvid_cli(&s, &["media", "purge", "--before", "2999-01-01", "--local"]);
    assert!(out.contains("purged 2 media"), "{out}");
    for uri in [&kept, &bad] {
        assert_eq!(
            get(&s, &path(uri), Some(&alice.token), None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        stored_files(&s.config.media_dir()),
        0,
        "their files are gone too"
    );
}
