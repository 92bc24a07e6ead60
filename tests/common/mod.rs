//! A real Corvid server on an ephemeral loopback port, on SQLite (a temp
//! file) or PostgreSQL (a fresh schema in `CORVID_TEST_POSTGRES_URL`), and a
//! small HTTP client for it.
#![allow(dead_code)] // each test binary uses a different part of this

pub mod gate;
pub mod schema;
pub mod signed;
pub mod tls;

use std::{path::PathBuf, time::Duration};

use corvid::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const POSTGRES_ENV: &str = "CORVID_TEST_POSTGRES_URL";
pub const REDIS_ENV: &str = "CORVID_TEST_REDIS_URL";

/// The Redis for tests, `None` (with a message) when not configured outside
/// CI; in CI a missing Redis is a failure, never a silent skip.
pub fn redis_url() -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => panic!("{REDIS_ENV} must be set in CI"),
        Err(_) => {
            eprintln!("skipping Redis run: set {REDIS_ENV} to enable it");
            None
        }
    }
}

/// Runs `conformance/<dir>/install.sh`, which installs what some tests need
/// (a pinned Synapse, matrix-js-sdk) and prints the program to run them
/// with. `None`, with a message, when that fails outside CI; under `CI` a
/// failure panics, never a silent skip.
pub fn conformance_tool(dir: &str, what: &str) -> Option<PathBuf> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(dir)
        .join("install.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output();
    let problem = match output {
        Ok(out) if out.status.success() => {
            let program = String::from_utf8(out.stdout).expect("program path");
            return Some(PathBuf::from(program.trim()));
        }
        Ok(out) => format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is needed in CI: {problem}"
    );
    eprintln!("skipping the tests that need {what}: {problem}");
    None
}

/// Points `config` at the test Redis under a prefix of its own, so tests
/// running at the same time do not see each other's keys.
pub fn use_redis(config: &mut Config, url: &str) {
    config.redis = Some(corvid::config::Redis {
        url: url.to_owned(),
        key_prefix: format!("corvid-test-{}", uuid_like()),
    });
}

/// Server logs on stderr when `CORVID_TEST_LOG` holds a filter (`corvid=debug`).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("CORVID_TEST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .init();
        }
    });
}

pub struct TestServer {
    pub base: String,
    /// `https://…` of the federation listener, when it has one of its own.
    pub federation_base: Option<String>,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// `None` for a sibling, which shares its first server's directory.
    _dir: Option<tempfile::TempDir>,
    http: reqwest::Client,
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl TestServer {
    /// `None` when PostgreSQL is not configured outside CI; in CI a missing
    /// database is a failure, never a silent skip.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like `start`, with the configuration changed by `tweak` first.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("corvid.db").display()),
            Backend::Postgres => match std::env::var(POSTGRES_ENV) {
                Ok(url) => fresh_schema(&url).await,
                Err(_) if std::env::var_os("CI").is_some() => {
                    panic!("{POSTGRES_ENV} must be set in CI")
                }
                Err(_) => {
                    eprintln!("skipping PostgreSQL run: set {POSTGRES_ENV} to enable it");
                    return None;
                }
            },
        };
        let mut config = Config::load(None).expect("default config");
        config.data_dir = dir.path().to_path_buf();
        config.database_url = database_url;
        config.rate_limit.enabled = false;
        // Tests register thousands of users; the default's five passes are
        // pinned by the accounts module's own test.
        config.password_hash_passes = 1;
        config.registration_shared_secret = Some("test-shared-secret".into());
        // Tests never leave loopback: no notary unless a test names one.
        config.federation.trusted_key_servers.clear();
        tweak(&mut config);
        let http = match config.tls {
            Some(_) => tls::TestCa::get().http_client(),
            None => reqwest::Client::new(),
        };
        let mut server = Self {
            base: String::new(),
            federation_base: None,
            config,
            stop: None,
            thread: None,
            _dir: Some(dir),
            http,
        };
        server.boot().await;
        Some(server)
    }

    /// A second server process on the same database, signing key and
    /// configuration (Redis included), as when scaling out.
    /// Other servers reach the first process's federation listener; the
    /// sibling serves the federation API on its client port only.
    pub async fn sibling(&self) -> Self {
        let mut config = self.config.clone();
        config.listen.federation = None;
        let mut sibling = Self {
            base: String::new(),
            federation_base: None,
            config,
            stop: None,
            thread: None,
            _dir: None,
            http: self.http.clone(),
        };
        sibling.boot().await;
        sibling
    }

    /// Two server processes on one fresh PostgreSQL database, without
    /// Redis; `None` when PostgreSQL is not configured outside CI.
    pub async fn two_processes_on_postgres() -> Option<(Self, Self)> {
        if !postgres_configured() {
            return None;
        }
        let first = Self::start(Backend::Postgres).await?;
        let second = first.sibling().await;
        Some((first, second))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// A server that federates: its own TLS federation listener (a
    /// certificate from the test CA, which it also trusts for outbound
    /// requests) and a server name with that listener's port, `localhost:PORT`
    /// or `127.0.0.1:PORT` (discovery steps 2 and 1).
    pub async fn start_federating(
        backend: Backend,
        host: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let port = free_port().await;
        Self::start_federating_at(backend, host, port, port, tweak).await
    }

    /// A federating server named after `gate`'s port, reached through it.
    pub async fn start_federating_behind(
        backend: Backend,
        host: &str,
        gate: &gate::Gate,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let listen_port = free_port().await;
        let server =
            Self::start_federating_at(backend, host, gate.port(), listen_port, tweak).await?;
        gate.forward_to(format!("127.0.0.1:{listen_port}").parse().unwrap());
        Some(server)
    }

    async fn start_federating_at(
        backend: Backend,
        host: &str,
        name_port: u16,
        listen_port: u16,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let ca = tls::TestCa::get();
        Self::start_with(backend, |config| {
            let name = format!("{host}:{name_port}");
            config.server_name = name.try_into().expect("server name");
            config.listen.federation = Some(format!("127.0.0.1:{listen_port}").parse().unwrap());
            config.tls = Some(corvid::config::Tls {
                certificate: ca.certificate(),
                private_key: ca.private_key(),
                listeners: vec![corvid::config::ListenerKind::Federation],
            });
            config.federation.extra_ca_files = vec![ca.ca_file()];
            tweak(config);
        })
        .await
    }

    /// The HTTP client that trusts the test CA when the server uses TLS.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Graceful shutdown, waiting until the server has stopped.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().expect("server thread"))
                .await
                .unwrap();
        }
    }

    pub fn server_name(&self) -> &str {
        self.config.server_name.as_str()
    }

    fn client_scheme(&self) -> &'static str {
        let tls_on_client = self
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.listeners.contains(&corvid::config::ListenerKind::Client));
        if tls_on_client { "https" } else { "http" }
    }

    async fn boot(&mut self) {
        let listener = match self.base.split_once("://") {
            Some((_, addr)) => tokio::net::TcpListener::bind(addr)
                .await
                .expect("rebind port"),
            None => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        };
        self.base = format!(
            "{}://{}",
            self.client_scheme(),
            listener.local_addr().unwrap()
        );
        self.config.listen.client = listener.local_addr().unwrap();
        let federation = match self.config.listen.federation {
            Some(addr) => {
                let listener = match take_reserved_port(addr.port()) {
                    Some(listener) => listener,
                    None => tokio::net::TcpListener::bind(addr)
                        .await
                        .expect("bind federation port")
                        .into_std()
                        .expect("std listener"),
                };
                self.federation_base = Some(format!("https://{addr}"));
                Some(listener)
            }
            None => None,
        };
        let (tx, rx) = oneshot::channel();
        let config = self.config.clone();
        let listener = listener.into_std().expect("std listener");
        // The server gets its own runtime, as it has in production; the test's
        // runtime only plays the client.
        self.thread = Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let listeners = corvid::listen::Listeners {
                    client: listener,
                    federation: federation
                        .map(|l| tokio::net::TcpListener::from_std(l).expect("listener")),
                };
                corvid::run_server(config, listeners, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
            });
        }));
        self.stop = Some(tx);
        let mut probes = vec![format!("{}/_matrix/client/versions", self.base)];
        probes.extend(
            (self.federation_base.iter()).map(|base| format!("{base}/_matrix/key/v2/server")),
        );
        for probe in probes {
            self.wait_until_served(&probe).await;
        }
    }

    async fn wait_until_served(&self, url: &str) {
        for _ in 0..100 {
            if self.http.get(url).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not come up: {url}");
    }

    /// Graceful shutdown (unless it is already down) and start again on the
    /// same ports and database.
    pub async fn restart(&mut self) {
        self.shut_down().await;
        self.boot().await;
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON response to {path}: {text}"));
        schema::check(&method, path, status, &value);
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    /// Registers `name` and returns `(user_id, access_token)`.
    pub async fn register(&self, name: &str) -> User {
        let (status, body) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": name, "password": "secret-pw", "auth": {"type": "m.login.dummy"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {name}: {body}");
        User {
            user_id: body["user_id"].as_str().unwrap().into(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    /// Logs `user` (made by [`TestServer::register`]) in again: a new
    /// device, `device_id` if given, with its own token.
    pub async fn login(&self, user: &User, device_id: Option<&str>) -> User {
        let mut login = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": "secret-pw",
        });
        if let Some(device_id) = device_id {
            login["device_id"] = json!(device_id);
        }
        let (status, body) = self
            .request(Method::POST, "/_matrix/client/v3/login", None, Some(login))
            .await;
        assert_eq!(status, StatusCode::OK, "login {}: {body}", user.user_id);
        User {
            user_id: user.user_id.clone(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let (status, res) = self
            .post("/_matrix/client/v3/createRoom", &user.token, body)
            .await;
        assert_eq!(status, StatusCode::OK, "createRoom: {res}");
        res["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, user: &User, room: &str, txn: &str, text: &str) -> String {
        let (status, res) = self
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                &user.token,
                json!({"msgtype": "m.text", "body": text}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    /// Sends an event of any type under a fresh transaction id; returns its id.
    pub async fn send_event(&self, user: &User, room: &str, kind: &str, content: Value) -> String {
        let txn = next_txn();
        let (status, res) = self
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
                &user.token,
                content,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send {kind}: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn redact(&self, user: &User, room: &str, event_id: &str) {
        let txn = next_txn();
        let (status, res) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/redact/{}/{txn}",
                    urlencode(event_id)
                ),
                &user.token,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "redact: {res}");
    }

    pub async fn event(&self, user: &User, room: &str, event_id: &str) -> Value {
        let (status, res) = self
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/event/{}",
                    urlencode(event_id)
                ),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "event: {res}");
        res
    }

    /// `GET /relations/{eventId}?{query}`, expected to succeed.
    pub async fn relations(&self, user: &User, room: &str, event_id: &str, query: &str) -> Value {
        let (status, res) = self
            .get(
                &format!(
                    "/_matrix/client/v1/rooms/{room}/relations/{}?{query}",
                    urlencode(event_id)
                ),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "relations: {res}");
        res
    }

    /// `GET /relations/{eventId}/{relType}?{query}`, expected to succeed.
    pub async fn relations_of_type(
        &self,
        user: &User,
        room: &str,
        event_id: &str,
        rel_type: &str,
        query: &str,
    ) -> Value {
        let (status, res) = self
            .get(
                &format!(
                    "/_matrix/client/v1/rooms/{room}/relations/{}/{rel_type}?{query}",
                    urlencode(event_id)
                ),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "relations: {res}");
        res
    }

    /// `GET /relations/{eventId}/{relType}/{eventType}?{query}`, expected to succeed.
    pub async fn relations_of_types(
        &self,
        user: &User,
        room: &str,
        event_id: &str,
        types: (&str, &str),
        query: &str,
    ) -> Value {
        let (rel_type, event_type) = types;
        let (status, res) = self
            .get(
                &format!(
                    "/_matrix/client/v1/rooms/{room}/relations/{}/{rel_type}/{event_type}?{query}",
                    urlencode(event_id)
                ),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "relations: {res}");
        res
    }

    /// `GET /rooms/{roomId}/threads?{query}`, expected to succeed.
    pub async fn threads(&self, user: &User, room: &str, query: &str) -> Value {
        let (status, res) = self
            .get(
                &format!("/_matrix/client/v1/rooms/{room}/threads?{query}"),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "threads: {res}");
        res
    }

    pub async fn join(&self, user: &User, room: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/_matrix/client/v3/join/{}", urlencode(room)),
            &user.token,
            json!({}),
        )
        .await
    }

    /// New users `alice` and `bob`, both joined to a public room of Alice's.
    pub async fn alice_and_bob_in_a_room(&self) -> (User, User, String) {
        let alice = self.register("alice").await;
        let bob = self.register("bob").await;
        let room = self
            .create_room(&alice, json!({"preset": "public_chat"}))
            .await;
        let (status, body) = self.join(&bob, &room).await;
        assert_eq!(status, StatusCode::OK, "join: {body}");
        (alice, bob, room)
    }

    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        let (status, body) = self.get(&path, &user.token).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        body
    }
}

impl TestServer {
    /// Starts a long-polling `/sync` (20 s, not marking the user online) in
    /// the background; it yields how long it was held and the response.
    pub fn long_poll(
        &self,
        user: &User,
        since: &str,
    ) -> tokio::task::JoinHandle<(Duration, Value)> {
        let url = format!(
            "{}/_matrix/client/v3/sync?timeout=20000&since={since}&set_presence=offline",
            self.base
        );
        let (http, token) = (self.http.clone(), user.token.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let body: Value = response.json().await.unwrap();
            (started.elapsed(), body)
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A transaction id not used before in this process.
fn next_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("txn{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A new schema per test, so tests run in parallel on one database.
pub async fn fresh_schema(url: &str) -> String {
    use sqlx::Connection;
    let schema = format!("t_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach {POSTGRES_ENV}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs each listed scenario once on SQLite and once on PostgreSQL.
/// Runs each `async fn(Backend)` on SQLite and on PostgreSQL (when
/// configured; under `CI` a missing database fails in `TestServer`).
#[macro_export]
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::common::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::postgres_configured() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            })*
        }
    };
}

#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let server = $crate::common::TestServer::start($crate::common::Backend::Sqlite).await.unwrap();
                super::$name(server).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(server) = $crate::common::TestServer::start($crate::common::Backend::Postgres).await {
                    super::$name(server).await;
                }
            })*
        }
    };
}

/// A response's JSON body, validated against the spec's schema for `path`.
pub async fn json_of(res: reqwest::Response, method: &Method, path: &str) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap();
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON from {path}: {text}"));
    schema::check(method, path, status, &value);
    (status, value)
}

/// Whether PostgreSQL tests run here (in CI they must: see `TestServer::start`).
pub fn postgres_configured() -> bool {
    match std::env::var(POSTGRES_ENV) {
        Ok(_) => true,
        Err(_) if std::env::var_os("CI").is_some() => panic!("{POSTGRES_ENV} must be set in CI"),
        Err(_) => {
            eprintln!("skipping PostgreSQL run: set {POSTGRES_ENV} to enable it");
            false
        }
    }
}

/// A loopback port for a server name that must carry the port before the
/// server starts. It stays bound (see [`take_reserved_port`]) until a
/// server takes it: a port merely free a moment ago could meanwhile be
/// handed to another test running in parallel.
pub async fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let port = listener.local_addr().unwrap().port();
    RESERVED_PORTS.lock().unwrap().insert(port, listener);
    port
}

/// A loopback port that was free a moment ago, for a server of another
/// process (which binds it itself).
pub fn free_port_for_another_process() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().unwrap().port()
}

static RESERVED_PORTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<u16, std::net::TcpListener>>,
> = std::sync::LazyLock::new(Default::default);

/// The listener [`free_port`] holds for `port`, if it made that one.
fn take_reserved_port(port: u16) -> Option<std::net::TcpListener> {
    RESERVED_PORTS.lock().unwrap().remove(&port)
}
