//! Server configuration: built-in defaults, then a TOML file (`--config`),
//! then `CORVID_*` environment variables, each overriding the one before.
//!
//! With no file at all the server is a development server: SQLite in
//! `./corvid-data`, server name `localhost`, open registration. A config
//! file switches registration to closed unless it says otherwise.

use std::{net::SocketAddr, path::PathBuf};

use ruma::OwnedServerName;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server_name: OwnedServerName,
    /// `sqlite://path` or `postgres://…`; by default a SQLite file in `data_dir`.
    #[serde(default)]
    pub database_url: String,
    /// Where the signing key and the SQLite database live.
    pub data_dir: PathBuf,
    pub registration: Registration,
    /// The URL clients use to reach this server, announced in
    /// `/.well-known/matrix/client`; by default the client listener.
    pub public_baseurl: Option<String>,
    /// Enables `/_synapse/admin/v1/register` (shared-secret registration).
    pub registration_shared_secret: Option<String>,
    pub listen: Listen,
    pub rate_limit: RateLimit,
    /// Largest request body accepted, in bytes.
    pub max_request_size: usize,
    /// Lifetime of access tokens issued together with a refresh token.
    pub access_token_lifetime_ms: u64,
    pub presence: Presence,
    /// Whether `org.corvid.delivered` receipts are recorded (spec/extensions.md).
    pub delivery_receipts: bool,
    /// Passes Argon2id makes over its 7 MiB when hashing a new password
    /// (OWASP's setting for 7 MiB: 5). Fewer make hashing faster, not
    /// smaller; only for tests and benchmarks that register many users
    /// (Synapse's `bcrypt_rounds`). Stored hashes keep their own setting.
    pub password_hash_passes: u32,
    /// Shared presence and cross-process wake-ups; in-process when absent.
    pub redis: Option<Redis>,
    pub media: Media,
    pub federation: Federation,
    /// TLS for the listeners named in `tls.listeners`.
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// PEM files of CA certificates trusted for outbound TLS, besides the system's.
    pub extra_ca_files: Vec<PathBuf>,
    /// Notaries asked for the keys of a server that cannot be reached.
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// How long other servers may cache our keys (`valid_until_ts`), in ms.
    pub key_validity_ms: u64,
    /// Keys this server used to sign with, published as `old_verify_keys`:
    /// key id (`ed25519:abc`) → public key and when it stopped being used.
    pub old_verify_keys: std::collections::BTreeMap<String, OldVerifyKey>,
    /// Accept any certificate from other servers. Only for a development
    /// set-up on one machine; never in production.
    pub insecure_skip_tls_verify_for_local_development: bool,
    /// Whether this process sends transactions to other servers. With
    /// several processes on one database, exactly one should.
    pub send_transactions: bool,
    /// The first wait before retrying a failed transaction, in ms; each
    /// failure doubles it, up to `retry_max_ms`.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// Served as `/.well-known/matrix/server`: the host (and port) other
    /// servers should connect to for this server name. Unset: not served.
    pub well_known_server: Option<OwnedServerName>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldVerifyKey {
    /// Unpadded base64 ed25519 public key.
    pub key: String,
    pub expired_ts: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// Which listeners serve TLS.
    pub listeners: Vec<ListenerKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Client,
    Federation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Largest file accepted by an upload, in bytes.
    pub max_upload_size: u64,
    /// Total bytes one user may have uploaded; unlimited when absent.
    pub user_quota: Option<u64>,
    /// How long an id from `POST /media/v1/create` waits for its content.
    pub pending_upload_expiry_ms: u64,
    /// Ids a user may have waiting for content at once.
    pub max_pending_uploads: u32,
    /// spec: the deprecated unauthenticated downloads are frozen; they serve
    /// only media uploaded (or cached) before this time, in ms since the
    /// epoch. The default, 0, serves nothing there.
    pub unauthenticated_before_ms: i64,
    /// Images larger than this many pixels are not thumbnailed.
    pub max_thumbnail_pixels: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    pub enabled: bool,
    /// An online user with no activity for this long becomes `unavailable`.
    pub idle_after_ms: u64,
    /// A user whose clients stopped syncing this long ago becomes `offline`.
    pub offline_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel, so servers can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
}

fn default_redis_prefix() -> String {
    "corvid".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Anyone may register (`m.login.dummy`).
    Open,
    /// Registration needs a token made with `corvid registration-token create`.
    Token,
    /// Only the admin CLI and shared-secret registration create accounts.
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The client and media APIs, and the federation API too when
    /// `federation` is not set (one port for small set-ups).
    pub client: SocketAddr,
    /// A listener of its own for the federation and key APIs.
    pub federation: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub enabled: bool,
    /// Sustained requests per second to rate-limited endpoints, per user and per IP.
    pub per_second: f64,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = PathBuf::from("corvid-data");
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            database_url: format!("sqlite://{}/corvid.db", data_dir.display()),
            data_dir,
            registration: Registration::Open,
            public_baseurl: None,
            registration_shared_secret: None,
            listen: Listen {
                client: "127.0.0.1:8008".parse().expect("valid address"),
                federation: None,
            },
            rate_limit: RateLimit {
                enabled: true,
                per_second: 10.0,
                burst: 50,
            },
            max_request_size: 50 * 1024 * 1024,
            access_token_lifetime_ms: 60 * 60 * 1000,
            presence: Presence {
                enabled: true,
                idle_after_ms: 5 * 60 * 1000,
                offline_after_ms: 60 * 1000,
            },
            delivery_receipts: true,
            password_hash_passes: 5,
            redis: None,
            media: Media {
                max_upload_size: 100 * 1024 * 1024,
                user_quota: None,
                pending_upload_expiry_ms: 24 * 60 * 60 * 1000,
                max_pending_uploads: 10,
                unauthenticated_before_ms: 0,
                max_thumbnail_pixels: 32 * 1024 * 1024,
            },
            federation: Federation {
                extra_ca_files: Vec::new(),
                trusted_key_servers: vec!["matrix.org".try_into().expect("valid server name")],
                key_validity_ms: 24 * 60 * 60 * 1000,
                old_verify_keys: Default::default(),
                insecure_skip_tls_verify_for_local_development: false,
                send_transactions: true,
                retry_min_ms: 1000,
                retry_max_ms: 10 * 60 * 1000,
                well_known_server: None,
            },
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {key}: {message}")]
    Env { key: String, message: String },
}

impl Config {
    /// Defaults, then the file (if any), then `CORVID_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut table = toml::Table::try_from(Self::default_table()).expect("defaults serialise");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let parsed: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
            table.insert("registration".into(), "closed".into());
            merge(&mut table, parsed);
        }
        for (key, value) in std::env::vars() {
            if let Some(name) = key.strip_prefix("CORVID_").filter(|n| is_config_key(n)) {
                apply_env(&mut table, name, &value).map_err(|message| ConfigError::Env {
                    key: key.clone(),
                    message,
                })?;
            }
        }
        let origin = file
            .map(|p| p.to_owned())
            .unwrap_or_else(|| "<defaults>".into());
        let mut config: Self =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.clone(),
                    message: e.to_string(),
                })?;
        config.fill_derived();
        config.validate(&origin)?;
        Ok(config)
    }

    fn default_table() -> toml::Value {
        let d = Self::default();
        toml::toml! {
            server_name = (d.server_name.as_str())
            data_dir = (d.data_dir.display().to_string())
            registration = "open"
            max_request_size = (d.max_request_size as i64)
            access_token_lifetime_ms = (d.access_token_lifetime_ms as i64)
            delivery_receipts = (d.delivery_receipts)
            password_hash_passes = (d.password_hash_passes as i64)
            [listen]
            client = (d.listen.client.to_string())
            [rate_limit]
            enabled = (d.rate_limit.enabled)
            per_second = (d.rate_limit.per_second)
            burst = (d.rate_limit.burst as i64)
            [presence]
            enabled = (d.presence.enabled)
            idle_after_ms = (d.presence.idle_after_ms as i64)
            offline_after_ms = (d.presence.offline_after_ms as i64)
            [media]
            max_upload_size = (d.media.max_upload_size as i64)
            pending_upload_expiry_ms = (d.media.pending_upload_expiry_ms as i64)
            max_pending_uploads = (d.media.max_pending_uploads as i64)
            unauthenticated_before_ms = (d.media.unauthenticated_before_ms)
            max_thumbnail_pixels = (d.media.max_thumbnail_pixels as i64)
            [federation]
            extra_ca_files = []
            trusted_key_servers = ["matrix.org"]
            key_validity_ms = (d.federation.key_validity_ms as i64)
            old_verify_keys = {}
            insecure_skip_tls_verify_for_local_development = false
            send_transactions = (d.federation.send_transactions)
            retry_min_ms = (d.federation.retry_min_ms as i64)
            retry_max_ms = (d.federation.retry_max_ms as i64)
        }
        .into()
    }

    /// The database URL defaults to a file inside `data_dir`, wherever that is.
    fn fill_derived(&mut self) {
        if self.database_url.is_empty() {
            self.database_url = format!("sqlite://{}/corvid.db", self.data_dir.display());
        }
    }

    /// What the types alone do not rule out.
    fn validate(&self, origin: &std::path::Path) -> Result<(), ConfigError> {
        if self.password_hash_passes == 0 {
            return Err(ConfigError::Parse {
                path: origin.to_owned(),
                message: "password_hash_passes must be at least 1".into(),
            });
        }
        Ok(())
    }

    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir
            .join(format!("{}.signing.key", self.server_name))
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Variables with the prefix that are not configuration: the CLI's own and the tests'.
fn is_config_key(name: &str) -> bool {
    !matches!(name, "CONFIG" | "NEW_USER_PASSWORD") && !name.starts_with("TEST_")
}

/// `CORVID_RATE_LIMIT__ENABLED=false` sets `rate_limit.enabled`: a double
/// underscore separates table levels, since keys contain single underscores.
fn apply_env(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), String> {
    let path: Vec<String> = name
        .to_ascii_lowercase()
        .split("__")
        .map(str::to_owned)
        .collect();
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cursor = table;
    for part in parents {
        cursor = cursor
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    cursor.insert(last.clone(), parse_env_value(raw));
    Ok(())
}

/// Numbers and booleans are typed; anything else is a string.
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return b.into();
    }
    if let Ok(i) = raw.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = raw.parse::<f64>() {
        return f.into();
    }
    raw.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_is_an_open_dev_server() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.server_name.as_str(), "localhost");
        assert_eq!(c.registration, Registration::Open);
        assert!(c.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn config_file_closes_registration_and_names_bad_keys() {
        let dir = tempfile_dir("cfg");
        let path = dir.join("corvid.toml");
        std::fs::write(
            &path,
            "server_name = \"example.org\"\n[rate_limit]\nenabled = false\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.server_name.as_str(), "example.org");
        assert_eq!(c.registration, Registration::Closed);
        assert!(!c.rate_limit.enabled);
        assert_eq!(c.rate_limit.burst, 50, "untouched keys keep their defaults");

        std::fs::write(&path, "server_nmae = \"x\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("server_nmae"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn password_hashing_needs_at_least_one_pass() {
        assert_eq!(Config::default().password_hash_passes, 5);
        let dir = tempfile_dir("passes");
        let path = dir.join("corvid.toml");
        std::fs::write(&path, "password_hash_passes = 0\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("password_hash_passes"), "{err}");
        std::fs::write(&path, "password_hash_passes = 1\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().password_hash_passes, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn readme_example_config_loads() {
        let readme = include_str!("../README.md");
        let example = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README.md has a ```toml example");
        let dir = tempfile_dir("readme");
        let path = dir.join("corvid.toml");
        std::fs::write(&path, example).unwrap();
        let c = Config::load(Some(&path)).unwrap_or_else(|e| panic!("README example: {e}"));
        assert_eq!(c.server_name.as_str(), "example.org");
        assert!(c.delivery_receipts);
        assert_eq!(c.media.max_upload_size, 104_857_600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn env_values_are_typed_and_nested() {
        let mut t = toml::Table::new();
        apply_env(&mut t, "RATE_LIMIT__PER_SECOND", "2.5").unwrap();
        apply_env(&mut t, "SERVER_NAME", "a.b").unwrap();
        assert_eq!(t["rate_limit"]["per_second"].as_float(), Some(2.5));
        assert_eq!(t["server_name"].as_str(), Some("a.b"));
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("corvid-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
