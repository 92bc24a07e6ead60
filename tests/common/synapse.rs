//! A real Synapse (PyPI `matrix-synapse`, the version pinned in
//! `conformance/synapse/install.sh`) on a loopback port, federating over TLS
//! with a certificate from the test CA, for interop tests against Corvid.
//!
//! Not part of `common` (every test binary would pay for it): a test binary
//! that wants it includes it beside `common`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/synapse.rs"]
//! mod synapse;
//! ```
#![allow(dead_code)] // each test binary uses a different part of this

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{User, free_port_for_another_process, tls::TestCa};

/// How long Synapse may take to answer `/versions` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct TestSynapse {
    port: u16,
    child: Child,
    http: reqwest::Client,
    // Last, so it is removed after the process was killed.
    dir: tempfile::TempDir,
}

impl TestSynapse {
    /// Installs Synapse if needed and starts it. `None` (with a message) when
    /// it cannot be installed outside CI; under `CI` that is a failure.
    pub async fn start() -> Option<Self> {
        let python =
            tokio::task::spawn_blocking(|| crate::common::conformance_tool("synapse", "Synapse"))
                .await
                .unwrap()?;
        let port = free_port_for_another_process();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), port);
        let log = fs::File::create(dir.path().join("stdout.log")).expect("stdout log");
        let mut command = Command::new(&python);
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .current_dir(dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut command);
        let child = command.spawn().expect("start Synapse");
        let mut synapse = Self {
            port,
            child,
            http: TestCa::get().http_client(),
            dir,
        };
        synapse.wait_until_up().await;
        Some(synapse)
    }

    async fn wait_until_up(&mut self) {
        let started = Instant::now();
        let url = format!("{}/_matrix/client/versions", self.base());
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait().expect("Synapse status") {
                panic!(
                    "Synapse exited during start-up ({status}):\n{}",
                    self.log_tail(40)
                );
            }
            let answer = self.http.get(&url).timeout(Duration::from_secs(5)).send();
            if answer.await.is_ok_and(|res| res.status().is_success()) {
                eprintln!(
                    "Synapse {} up in {:.1} s",
                    self.server_name(),
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "Synapse did not answer {url} within {START_TIMEOUT:?}:\n{}",
            self.log_tail(40)
        );
    }

    /// `https://127.0.0.1:PORT`: the client and federation APIs, one listener.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `localhost:PORT` (discovery step 2: the port is given, no well-known).
    pub fn server_name(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The last `lines` of Synapse's log and of its stdout/stderr, for
    /// failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- homeserver.log ---\n{}\n--- stdout/stderr ---\n{}",
            tail("homeserver.log"),
            tail("stdout.log")
        )
    }

    /// Log lines containing `needle`, e.g. a path, to show what Synapse did
    /// with a request.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let text = fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request to Synapse");
        let status = res.status();
        let text = res.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON response from Synapse to {path}: {text}"));
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

    /// Registers `name` (open registration, `m.login.dummy`).
    pub async fn register(&self, name: &str) -> User {
        let body = json!({
            "username": name,
            "password": "secret-pw",
            "auth": {"type": "m.login.dummy"},
        });
        let (status, res) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {name} on Synapse: {res}");
        User {
            user_id: res["user_id"].as_str().unwrap().into(),
            token: res["access_token"].as_str().unwrap().into(),
        }
    }
}

impl Drop for TestSynapse {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Writes `homeserver.yaml` (and its signing key and log configuration)
/// into `dir`; returns its path.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let ca = TestCa::get();
    let seed: [u8; 32] = rand::random();
    let key_id = format!("a_{}", hex::encode(&seed[..2]));
    let signing_key = dir.join("signing.key");
    fs::write(
        &signing_key,
        format!("ed25519 {key_id} {}\n", base64_unpadded(&seed)),
    )
    .unwrap();
    let log_config = dir.join("log.yaml");
    fs::write(&log_config, log_config_yaml(&dir.join("homeserver.log"))).unwrap();

    // Every rate limit out of the way: tests send in bursts.
    let hi = json!({"per_second": 1_000_000, "burst_count": 1_000_000});
    let mut config = json!({
        "server_name": format!("localhost:{port}"),
        "pid_file": dir.join("homeserver.pid"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": true,
            "x_forwarded": false,
            "resources": [{"names": ["client", "federation"], "compress": false}],
        }],
        "tls_certificate_path": ca.certificate(),
        "tls_private_key_path": ca.private_key(),
        // Outbound federation verifies certificates against the test CA only.
        "federation_verify_certificates": true,
        "federation_custom_ca_list": [ca.ca_file()],
        // Synapse refuses outbound requests to loopback by default (its
        // `ip_range_blacklist`); the allowlist lets federation reach Corvid
        // while keeping the rest of the blocklist.
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        "database": {"name": "sqlite3", "args": {"database": dir.join("homeserver.db")}},
        "media_store_path": dir.join("media_store"),
        "signing_key_path": signing_key,
        "log_config": log_config,
        "macaroon_secret_key": hex::encode(rand::random::<[u8; 16]>()),
        "form_secret": hex::encode(rand::random::<[u8; 16]>()),
        "enable_registration": true,
        "enable_registration_without_verification": true,
        "bcrypt_rounds": 4,
        // Keys come from the servers themselves: no notary off loopback.
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "report_stats": false,
        "enable_metrics": false,
        "allow_public_rooms_over_federation": true,
        "rc_federation": {"window_size": 1000, "sleep_limit": 1_000_000, "sleep_delay": 1,
                          "reject_limit": 1_000_000, "concurrent": 1_000_000},
        "rc_login": {"address": hi, "account": hi, "failed_attempts": hi},
        "rc_joins": {"local": hi, "remote": hi},
        "rc_invites": {"per_room": hi, "per_user": hi, "per_issuer": hi},
        "rc_presence": {"per_user": hi},
    });
    for key in [
        "rc_message",
        "rc_registration",
        "rc_registration_token_validity",
        "rc_admin_redaction",
        "rc_joins_per_room",
        "rc_key_requests",
        "rc_3pid_validation",
        "rc_third_party_invite",
        "rc_media_create",
        "rc_delayed_event_mgmt",
        "rc_room_creation",
        "rc_reports",
        "rc_user_directory",
        "rc_profile",
    ] {
        config[key] = hi.clone();
    }
    let path = dir.join("homeserver.yaml");
    fs::write(&path, serde_norway::to_string(&config).unwrap()).unwrap();
    path
}

/// Python logging to one file, unbuffered (so a failure's tail is complete),
/// without the per-query SQL lines.
fn log_config_yaml(file: &Path) -> String {
    let config = json!({
        "version": 1,
        "formatters": {"precise": {
            "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s",
        }},
        "handlers": {"file": {
            "class": "logging.FileHandler",
            "formatter": "precise",
            "filename": file,
            "encoding": "utf8",
        }},
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": false,
    });
    serde_norway::to_string(&config).unwrap()
}

fn base64_unpadded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Synapse gets SIGKILL when the thread that started it ends, so a test
/// binary that dies (or is killed) leaves no Synapse behind. Start it from
/// the test's own task, not from `spawn_blocking` (whose threads come and go).
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
