//! Files on disk, named by the sha256 of their bytes: identical uploads are
//! one file. An upload streams into a temporary file while it is hashed and
//! counted, then is renamed to its name, so a reader never sees half a file
//! and memory holds one chunk at a time, whatever the file's size.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

pub struct Blobs {
    root: PathBuf,
}

/// A file now stored under its hash.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

impl Blobs {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `ab/cd/abcd…`: two levels of fan-out keep directories small.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(crate::service::accounts::random_string(24))
    }

    /// Stores the bytes of `body`, refusing with `M_TOO_LARGE` once they pass `limit`.
    pub async fn store_stream<S, E>(&self, body: S, limit: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let temp = self.temp_path();
        let result = self.write_temp(&temp, body, limit).await;
        match result {
            Ok(stored) => self.keep(&temp, stored).await,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    async fn write_temp<S, E>(&self, temp: &Path, mut body: S, limit: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        create_parent(temp).await?;
        let mut file = tokio::fs::File::create(temp).await.map_err(io_error)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::new(
                    http::StatusCode::BAD_REQUEST,
                    "M_UNKNOWN",
                    format!("Upload interrupted: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_error)?;
        }
        file.sync_all().await.map_err(io_error)?;
        Ok(Stored {
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    /// Moves the temp file to its name, or drops it when that file exists.
    async fn keep(&self, temp: &Path, stored: Stored) -> Result<Stored> {
        let path = self.path(&stored.sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tokio::fs::remove_file(temp).await.map_err(io_error)?;
        } else {
            create_parent(&path).await?;
            tokio::fs::rename(temp, &path).await.map_err(io_error)?;
        }
        Ok(stored)
    }

    /// Stores bytes already in memory (a thumbnail).
    pub async fn store_bytes(&self, bytes: Vec<u8>) -> Result<Stored> {
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
        self.store_stream(body, u64::MAX).await
    }

    pub async fn open(&self, sha256: &str) -> Result<tokio::fs::File> {
        tokio::fs::File::open(self.path(sha256))
            .await
            .map_err(io_error)
    }

    pub async fn remove(&self, sha256: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
            _ => Ok(()),
        }
    }
}

pub fn too_large(limit: u64) -> Error {
    Error::too_large(format!("File is larger than the limit of {limit} bytes"))
}

async fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io_error)?;
    }
    Ok(())
}

fn io_error(e: std::io::Error) -> Error {
    Error::internal(format_args!("media store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn identical_content_is_one_file_and_limits_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let a = blobs
            .store_stream(chunks(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        let b = blobs
            .store_stream(chunks(&[b"hello world"]), 100)
            .await
            .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.size, 11);
        assert_eq!(
            std::fs::read(blobs.path(&a.sha256)).unwrap(),
            b"hello world"
        );

        let err = blobs
            .store_stream(chunks(&[b"0123456789", b"x"]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.errcode, "M_TOO_LARGE");
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "a refused upload leaves no temp file");
    }
}
