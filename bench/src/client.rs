//! A small Matrix client-server API client: just the calls the workloads
//! need, each returning the exact request and response when the server says
//! no, so a failure can be reported as it happened.

use std::{
    fmt,
    time::{Duration, Instant},
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rand::{Rng, distributions::Alphanumeric};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

/// A failed call: what was sent and what came back.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub method: String,
    pub url: String,
    pub request_body: Option<String>,
    pub status: Option<u16>,
    pub response_body: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)?;
        if let Some(body) = &self.request_body {
            write!(f, " body={body}")?;
        }
        match self.status {
            Some(s) => write!(f, " -> HTTP {s}: {}", self.response_body),
            None => write!(f, " -> transport error: {}", self.response_body),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A failure on this side, before any request: a bad URL, a bad state file.
    pub fn local(what: &str, detail: String) -> Self {
        Self {
            method: "-".into(),
            url: what.into(),
            request_body: None,
            status: None,
            response_body: detail,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "url": self.url,
            "request_body": self.request_body,
            "status": self.status,
            "response_body": self.response_body,
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Refuses anything but loopback: this tool generates load, and load goes
/// only to servers on this machine.
pub fn check_loopback(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!("URL {url:?}: scheme must be http or https"));
    }
    match parsed.host() {
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => Ok(parsed),
        Some(url::Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST => Ok(parsed),
        Some(url::Host::Ipv6(ip)) if ip == std::net::Ipv6Addr::LOCALHOST => Ok(parsed),
        _ => Err(format!(
            "refusing {url:?}: the host must be 127.0.0.1, ::1 or localhost"
        )),
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// A registered user with its access token.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

pub fn enc(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

pub fn random_suffix(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

impl Client {
    pub fn new(base: &Url) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// A client of another server, which must be on loopback too.
    pub fn on_loopback(url: &str) -> ApiResult<Self> {
        let base = check_loopback(url).map_err(|e| ApiError::local(url, e))?;
        Ok(Self::new(&base))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3{path}", self.base)
    }

    /// One request; a non-2xx answer or a body that is not JSON is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResult<(Value, usize)> {
        let (value, bytes, _) = self.call_timed(method, path, token, body).await?;
        Ok((value, bytes))
    }

    /// [`Client::call`], also returning when the whole response had arrived:
    /// a timing that stops there leaves out this client's own JSON parsing,
    /// which is not the server's work.
    pub async fn call_timed(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResult<(Value, usize, Instant)> {
        let url = self.url(path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body_text = body.map(|b| b.to_string());
        if let Some(b) = &body_text {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let err = |status: Option<StatusCode>, text: String| ApiError {
            method: method.to_string(),
            url: url.clone(),
            request_body: body_text.clone(),
            status: status.map(|s| s.as_u16()),
            response_body: text,
        };
        let resp = req.send().await.map_err(|e| err(None, e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| err(Some(status), format!("reading body: {e}")))?;
        let received = Instant::now();
        if !status.is_success() {
            return Err(err(
                Some(status),
                String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned(),
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            err(
                Some(status),
                format!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                ),
            )
        })?;
        Ok((value, bytes.len(), received))
    }

    pub async fn register(&self, username: &str, password: &str) -> ApiResult<User> {
        let body = json!({
            "username": username,
            "password": password,
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "corvid-bench",
        });
        let (v, _) = self
            .call(Method::POST, "/register", None, Some(&body))
            .await?;
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ApiError {
                    method: "POST".into(),
                    url: self.url("/register"),
                    request_body: Some(body.to_string()),
                    status: Some(200),
                    response_body: format!("no {name} in response: {v}"),
                })
        };
        Ok(User {
            user_id: field("user_id")?,
            token: field("access_token")?,
        })
    }

    /// Creates a public room (anyone may join by id) and returns its id.
    pub async fn create_room(&self, user: &User, name: &str) -> ApiResult<String> {
        let body = json!({"preset": "public_chat", "name": name});
        let (v, _) = self
            .call(Method::POST, "/createRoom", Some(&user.token), Some(&body))
            .await?;
        v.get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                method: "POST".into(),
                url: self.url("/createRoom"),
                request_body: Some(body.to_string()),
                status: Some(200),
                response_body: format!("no room_id in response: {v}"),
            })
    }

    pub async fn join(&self, user: &User, room_id: &str) -> ApiResult<()> {
        self.call(
            Method::POST,
            &format!("/rooms/{}/join", enc(room_id)),
            Some(&user.token),
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    /// Joins a room of another server through `via` (a federated join).
    pub async fn join_via(&self, user: &User, room_id: &str, via: &str) -> ApiResult<()> {
        self.call(
            Method::POST,
            &format!("/join/{}?via={}", enc(room_id), enc(via)),
            Some(&user.token),
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    pub async fn leave(&self, user: &User, room_id: &str) -> ApiResult<()> {
        self.call(
            Method::POST,
            &format!("/rooms/{}/leave", enc(room_id)),
            Some(&user.token),
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    pub async fn send(
        &self,
        user: &User,
        room_id: &str,
        txn_id: &str,
        content: &Value,
    ) -> ApiResult<String> {
        let path = format!(
            "/rooms/{}/send/m.room.message/{}",
            enc(room_id),
            enc(txn_id)
        );
        let (v, _) = self
            .call(Method::PUT, &path, Some(&user.token), Some(content))
            .await?;
        Ok(v.get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// `/sync`; returns the body, its size in bytes and when it had arrived.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&Value>,
    ) -> ApiResult<(Value, usize, Instant)> {
        let mut q = format!("?timeout={timeout_ms}");
        if let Some(s) = since {
            q.push_str("&since=");
            q.push_str(&enc(s));
        }
        if let Some(f) = filter {
            q.push_str("&filter=");
            q.push_str(&enc(&f.to_string()));
        }
        self.call_timed(Method::GET, &format!("/sync{q}"), Some(&user.token), None)
            .await
    }

    /// `POST /_matrix/media/v3/upload` of a streamed body; returns the mxc URI.
    pub async fn upload_stream(
        &self,
        user: &User,
        body: reqwest::Body,
        size: u64,
    ) -> ApiResult<String> {
        let url = format!("{}/_matrix/media/v3/upload", self.base);
        let err = |status: Option<u16>, text: String| ApiError {
            method: "POST".into(),
            url: url.clone(),
            request_body: Some(format!("<{size} bytes>")),
            status,
            response_body: text,
        };
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .timeout(Duration::from_secs(3600))
            .body(body)
            .send()
            .await
            .map_err(|e| err(None, e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| err(Some(status), e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match value["content_uri"].as_str() {
            Some(uri) if status == 200 => Ok(uri.to_owned()),
            _ => Err(err(Some(status), text)),
        }
    }

    /// `GET /_matrix/client/v1/media/download/…`, the body left to stream.
    pub async fn download(&self, user: &User, mxc: &str) -> ApiResult<reqwest::Response> {
        let path = mxc.strip_prefix("mxc://").unwrap_or(mxc);
        let url = format!("{}/_matrix/client/v1/media/download/{path}", self.base);
        let err = |status: Option<u16>, text: String| ApiError {
            method: "GET".into(),
            url: url.clone(),
            request_body: None,
            status,
            response_body: text,
        };
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&user.token)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| err(None, e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(err(Some(status), resp.text().await.unwrap_or_default()));
        }
        Ok(resp)
    }

    /// One page of `/messages`, backwards.
    pub async fn messages_back(
        &self,
        user: &User,
        room_id: &str,
        from: Option<&str>,
        limit: usize,
    ) -> ApiResult<Value> {
        let mut q = format!("?dir=b&limit={limit}");
        if let Some(f) = from {
            q.push_str("&from=");
            q.push_str(&enc(f));
        }
        let path = format!("/rooms/{}/messages{q}", enc(room_id));
        self.call(Method::GET, &path, Some(&user.token), None)
            .await
            .map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::check_loopback;

    #[test]
    fn loopback_only() {
        assert!(check_loopback("http://127.0.0.1:8008").is_ok());
        assert!(check_loopback("http://localhost:8008/").is_ok());
        assert!(check_loopback("http://[::1]:8008").is_ok());
        assert!(check_loopback("http://127.0.0.2:8008").is_err());
        assert!(check_loopback("http://10.0.0.1:8008").is_err());
        assert!(check_loopback("http://example.org").is_err());
        assert!(check_loopback("http://localhost.example.org").is_err());
        assert!(check_loopback("ftp://127.0.0.1").is_err());
    }
}
