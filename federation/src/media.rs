//! The `multipart/mixed` bodies of the federation media endpoints
//! (spec: server-server API, "Content Repository"): a JSON metadata part,
//! then the file itself (or a `Location` to fetch it from).
//!
//! Both directions stream: [`MultipartWriter`] frames a file that is read
//! from disk, and [`MultipartReader`] yields the file part of a response as
//! it arrives, so a large file is never held whole in memory.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// The head of the metadata part and the headers of the file part may not
/// exceed this; only the file is unbounded (the caller caps it).
const MAX_HEAD: usize = 64 * 1024;

/// Frames one file as the spec's two-part body.
pub struct MultipartWriter {
    boundary: String,
}

impl Default for MultipartWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl MultipartWriter {
    pub fn new() -> Self {
        let boundary = format!("corvid{}", ruma::TransactionId::new()).replace(['-', '_'], "");
        Self { boundary }
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.boundary)
    }

    /// Everything before the file's bytes: the empty metadata object and
    /// the file part's headers.
    pub fn head(&self, content_type: &str, content_disposition: &str) -> Bytes {
        Bytes::from(format!(
            "--{b}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{b}\r\n\
             Content-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n",
            b = self.boundary
        ))
    }

    /// Everything after the file's bytes.
    pub fn tail(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("Content-Type is not multipart/mixed with a boundary")]
    NotMultipart,
    #[error("the body ended before {0}")]
    Truncated(&'static str),
    #[error("malformed body: {0}")]
    Malformed(&'static str),
    #[error("reading the body: {0}")]
    Read(String),
}

/// The boundary of a `multipart/mixed` `Content-Type`.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return Err(MultipartError::NotMultipart);
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or(MultipartError::NotMultipart)
}

/// The file part's headers, as the remote sent them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilePart {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    /// Set when the remote points elsewhere instead of sending the bytes.
    pub location: Option<String>,
}

/// Reads a two-part body: first the heads (up to the file's bytes), then
/// the file as a stream.
pub struct MultipartReader<S> {
    stream: S,
    buf: BytesMut,
    /// `\r\n--boundary`: what ends every part.
    delimiter: Vec<u8>,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(stream: S, boundary: &str) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
        }
    }

    async fn fill(&mut self, what: &'static str) -> Result<(), MultipartError> {
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(())
            }
            Some(Err(e)) => Err(MultipartError::Read(e.to_string())),
            None => Err(MultipartError::Truncated(what)),
        }
    }

    /// Reads until `needle` is in the buffer and returns what came before
    /// it, consuming both.
    async fn until(&mut self, needle: &[u8], what: &'static str) -> Result<Bytes, MultipartError> {
        loop {
            if let Some(at) = find(&self.buf, needle) {
                let before = self.buf.split_to(at).freeze();
                let _ = self.buf.split_to(needle.len());
                return Ok(before);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(MultipartError::Malformed("part headers too long"));
            }
            self.fill(what).await?;
        }
    }

    /// Reads the metadata part and the file part's headers.
    pub async fn read_head(&mut self) -> Result<FilePart, MultipartError> {
        // The first delimiter may open the body without a leading CRLF.
        self.buf.extend_from_slice(b"\r\n");
        let delimiter = self.delimiter.clone();
        self.until(&delimiter, "the first part").await?;
        let _metadata_headers = self.until(b"\r\n\r\n", "the metadata headers").await?;
        let metadata = self.until(&delimiter, "the metadata").await?;
        if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&metadata).is_err()
        {
            return Err(MultipartError::Malformed(
                "the metadata part is not a JSON object",
            ));
        }
        let headers = self.until(b"\r\n\r\n", "the file headers").await?;
        // What follows the delimiter on its line: CRLF before the headers.
        let headers = headers.strip_prefix(b"\r\n").unwrap_or(&headers);
        Ok(parse_headers(headers))
    }

    /// The file's bytes, ending at the closing delimiter; an error if the
    /// body ends without one (a truncated transfer must not be cached).
    pub fn into_file(self) -> impl Stream<Item = Result<Bytes, MultipartError>> {
        futures::stream::unfold(Some(self), |state| async move {
            let mut reader = state?;
            loop {
                if let Some(at) = find(&reader.buf, &reader.delimiter) {
                    let rest = reader.buf.split_to(at).freeze();
                    return Some((Ok(rest), None));
                }
                // A delimiter may be arriving split across chunks: hold back
                // what could be its start.
                let keep = reader.delimiter.len() - 1;
                if reader.buf.len() > keep {
                    let ready = reader.buf.split_to(reader.buf.len() - keep).freeze();
                    return Some((Ok(ready), Some(reader)));
                }
                if let Err(e) = reader.fill("the end of the file").await {
                    return Some((Err(e), None));
                }
            }
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(offset) = haystack[start..].iter().position(|&b| b == needle[0]) {
        let at = start + offset;
        let candidate = haystack.get(at..at + needle.len())?;
        if candidate == needle {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

fn parse_headers(block: &[u8]) -> FilePart {
    let mut part = FilePart::default();
    for line in String::from_utf8_lossy(block).split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => part.content_type = value,
            "content-disposition" => part.content_disposition = value,
            "location" => part.location = value,
            _ => {}
        }
    }
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(body: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let parts: Vec<Result<Bytes, String>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts)
    }

    async fn read_back(body: &[u8], boundary: &str, size: usize) -> (FilePart, Vec<u8>) {
        let mut reader = MultipartReader::new(chunks(body, size), boundary);
        let head = reader.read_head().await.expect("head");
        let mut file = Vec::new();
        let mut stream = Box::pin(reader.into_file());
        while let Some(chunk) = stream.next().await {
            file.extend_from_slice(&chunk.expect("chunk"));
        }
        (head, file)
    }

    #[tokio::test]
    async fn what_the_writer_frames_the_reader_takes_apart_in_any_chunking() {
        let writer = MultipartWriter::new();
        let file: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = writer
            .head("image/png", "inline; filename=cat.png")
            .to_vec();
        body.extend_from_slice(&file);
        body.extend_from_slice(&writer.tail());
        let boundary = boundary(&writer.content_type()).unwrap();
        for size in [1, 7, 4096, body.len()] {
            let (head, got) = read_back(&body, &boundary, size).await;
            assert_eq!(head.content_type.as_deref(), Some("image/png"));
            assert_eq!(
                head.content_disposition.as_deref(),
                Some("inline; filename=cat.png")
            );
            assert_eq!(got, file, "chunk size {size}");
        }
    }

    #[tokio::test]
    async fn a_location_part_has_no_bytes() {
        let body = b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nLocation: https://cdn.example/f\r\n\r\n\r\n--xyz--\r\n";
        let (head, file) = read_back(body, "xyz", 5).await;
        assert_eq!(head.location.as_deref(), Some("https://cdn.example/f"));
        assert!(file.is_empty());
    }

    #[tokio::test]
    async fn a_truncated_file_is_an_error() {
        let body = b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nContent-Type: text/plain\r\n\r\nhalf a fi";
        let mut reader = MultipartReader::new(chunks(body, 4), "xyz");
        reader.read_head().await.unwrap();
        let results: Vec<_> = reader.into_file().collect().await;
        assert!(results.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn bad_metadata_is_refused() {
        let body = b"--xyz\r\nContent-Type: application/json\r\n\r\nnot json\r\n--xyz\r\n\r\n";
        let mut reader = MultipartReader::new(chunks(body, 100), "xyz");
        assert!(matches!(
            reader.read_head().await,
            Err(MultipartError::Malformed(_))
        ));
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        assert_eq!(
            boundary("multipart/mixed; boundary=\"abc\"").unwrap(),
            "abc"
        );
        assert_eq!(boundary("Multipart/Mixed;boundary=abc").unwrap(), "abc");
        assert_eq!(
            boundary("application/json"),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(
            boundary("multipart/mixed"),
            Err(MultipartError::NotMultipart)
        );
    }
}
