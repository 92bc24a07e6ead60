//! `media`: one large file uploaded and downloaded through the content
//! repository, both streamed on the client side too (the file is generated
//! chunk by chunk and never held whole), with throughput each way and,
//! given `--pid`, the server's resident memory at rest and at its peak.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use serde::{Deserialize, Serialize};

use super::Workload;
use crate::{
    client::{ApiError, ApiResult, User},
    report::Report,
    setup::Ctx,
    stats::read_status,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Size of the file, MiB (the server's upload limit must allow it).
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Size of each chunk sent, KiB.
    #[arg(long, default_value_t = 256)]
    pub chunk_kib: usize,
}

/// Pseudo-random bytes (xorshift64*), the same for the same seed, so the
/// download can be checked without keeping the upload.
struct Content {
    state: u64,
    left: u64,
}

impl Content {
    fn new(seed: u64, size: u64) -> Self {
        Self {
            state: seed | 1,
            left: size,
        }
    }

    fn chunk(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let len = (max as u64).min(self.left) as usize;
        self.left -= len as u64;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            out.extend_from_slice(&self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        Some(out)
    }
}

/// FNV-1a over the bytes in order: enough to tell a wrong byte from the right one.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// The uploading user.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    user: User,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let user = ctx.register("media", 0).await?;
        Ok(Setup { user })
    }

    async fn measure(
        &self,
        ctx: &Ctx,
        Setup { user }: Setup,
        report: &mut Report,
    ) -> ApiResult<()> {
        report.param("size_mib", self.size_mib);
        report.param("chunk_kib", self.chunk_kib);
        round_trip(ctx, self, &user, report).await
    }
}

async fn round_trip(ctx: &Ctx, a: &Args, user: &User, report: &mut Report) -> ApiResult<()> {
    let size = a.size_mib * 1024 * 1024;
    let chunk = a.chunk_kib.max(1) * 1024;
    let idle = ctx.pid.and_then(read_status);

    let seed = rand::random::<u64>();
    let mut expected = Checksum::new();
    let mut check = Content::new(seed, size);
    while let Some(part) = check.chunk(chunk) {
        expected.update(&part);
    }

    let mut content = Content::new(seed, size);
    let body = futures::stream::iter(std::iter::from_fn(move || {
        content
            .chunk(chunk)
            .map(|c| Ok::<_, std::io::Error>(Bytes::from(c)))
    }));
    let started = Instant::now();
    let uri = ctx
        .client
        .upload_stream(user, reqwest::Body::wrap_stream(body), size)
        .await?;
    let upload_time = started.elapsed();
    let after_upload = ctx.pid.and_then(read_status);

    let started = Instant::now();
    let response = ctx.client.download(user, &uri).await?;
    let mut got = Checksum::new();
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| ApiError {
            method: "GET".into(),
            url: uri.clone(),
            request_body: None,
            status: Some(200),
            response_body: format!("download interrupted after {received} bytes: {e}"),
        })?;
        received += part.len() as u64;
        got.update(&part);
    }
    let download_time = started.elapsed();

    report.figure(
        "upload_mib_per_s",
        "upload",
        mib_per_s(size, upload_time),
        "MiB/s",
    );
    report.figure(
        "download_mib_per_s",
        "download",
        mib_per_s(received, download_time),
        "MiB/s",
    );
    report.count("bytes_received", "bytes downloaded", received);
    let intact = received == size && got.0 == expected.0;
    report.count(
        "intact",
        "download identical to upload (1 = yes)",
        u64::from(intact),
    );
    if let Some((rss, _)) = idle {
        report.figure(
            "idle_rss_mib",
            "server RSS before the upload",
            rss as f64 / 1024.0,
            "MiB",
        );
    }
    if let Some((rss, hwm)) = after_upload {
        report.figure(
            "after_upload_rss_mib",
            "server RSS after the upload",
            rss as f64 / 1024.0,
            "MiB",
        );
        report.figure(
            "upload_hwm_mib",
            "server VmHWM after the upload",
            hwm as f64 / 1024.0,
            "MiB",
        );
    }
    if !intact {
        eprintln!(
            "  error: downloaded {received} of {size} bytes, checksum match: {}",
            got.0 == expected.0
        );
    }
    Ok(())
}
