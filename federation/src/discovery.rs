//! Server discovery: from a server name to the address, `Host` header and
//! certificate name to use (spec: server-server API, "Resolving server names").
//!
//! The steps are pure functions over what the network said (the
//! `.well-known` answer, the SRV records), so each branch of the spec's
//! algorithm is tested without DNS; [`Resolver`] does the lookups and caches
//! the outcome.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

const DEFAULT_PORT: u16 = 8448;
/// spec: cache `.well-known` answers 24 h by default, at most 48 h, errors up to 1 h.
pub const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
const FAILURE_TTL: Duration = Duration::from_secs(3600);

/// Where requests for one server name go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// An IP literal, or a DNS name to resolve with A/AAAA records.
    pub connect_host: String,
    pub port: u16,
    /// The `Host` header of every request.
    pub host_header: String,
    /// The name the server's certificate must be valid for.
    pub tls_name: String,
}

/// `host[:port]`, with IPv6 literals in brackets.
fn split_host_port(name: &str) -> (&str, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return (name, None);
        };
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match name.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (name, None),
        },
        None => (name, None),
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// Steps 1 and 2: an IP literal or an explicit port needs no delegation.
pub fn without_delegation(server_name: &str) -> Option<Destination> {
    let (host, port) = split_host_port(server_name);
    if !is_ip_literal(host) && port.is_none() {
        return None;
    }
    Some(Destination {
        connect_host: host.to_owned(),
        port: port.unwrap_or(DEFAULT_PORT),
        host_header: server_name.to_owned(),
        tls_name: host.to_owned(),
    })
}

/// What a valid `.well-known` `m.server` value leads to (step 3).
#[derive(Debug, PartialEq, Eq)]
pub enum Delegation {
    Resolved(Destination),
    /// Step 3.3: look up SRV records for this delegated hostname.
    NeedsSrv(String),
}

pub fn delegate(m_server: &str) -> Delegation {
    match without_delegation(m_server) {
        Some(destination) => Delegation::Resolved(destination),
        None => Delegation::NeedsSrv(m_server.to_owned()),
    }
}

/// Steps 3.3 to 3.5 and 4 to 6: `host` is the delegated hostname (or the
/// server name itself when there was no `.well-known`); the certificate and
/// `Host` header stay `host` whatever the SRV records point at.
pub fn after_srv(host: &str, srv: Option<(String, u16)>) -> Destination {
    let (connect_host, port) = srv.unwrap_or_else(|| (host.to_owned(), DEFAULT_PORT));
    Destination {
        connect_host,
        port,
        host_header: host.to_owned(),
        tls_name: host.to_owned(),
    }
}

/// `m.server` from a `.well-known/matrix/server` body; `None` when invalid.
pub fn parse_well_known(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m_server = value.get("m.server")?.as_str()?;
    let (host, _) = split_host_port(m_server);
    (!host.is_empty()).then(|| m_server.to_owned())
}

/// The lifetime of a `.well-known` answer from its `Cache-Control` header.
pub fn well_known_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|value| {
        value.split(',').find_map(|directive| {
            directive
                .trim()
                .strip_prefix("max-age=")
                .and_then(|s| s.parse::<u64>().ok())
        })
    });
    max_age
        .map(Duration::from_secs)
        .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
        .min(WELL_KNOWN_MAX_TTL)
}

/// A `.well-known` lookup's outcome: `m.server` and how long to trust it.
pub type WellKnown = Option<(String, Duration)>;

/// Resolves server names, caching each result for as long as the spec allows.
pub struct Resolver {
    dns: Option<hickory_resolver::TokioResolver>,
    cache: Mutex<HashMap<String, (Destination, Instant)>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub fn new() -> Self {
        let dns = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration; SRV lookups disabled");
                None
            }
        };
        Self {
            dns,
            cache: Mutex::default(),
        }
    }

    /// Resolves `server_name`; `well_known` fetches
    /// `https://<hostname>/.well-known/matrix/server` (the caller owns the
    /// HTTP client).
    pub async fn resolve<F, Fut>(&self, server_name: &str, well_known: F) -> Destination
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = WellKnown>,
    {
        if let Some(destination) = without_delegation(server_name) {
            return destination;
        }
        if let Some(cached) = self.cached(server_name) {
            return cached;
        }
        let (destination, ttl) = match well_known(server_name.to_owned()).await {
            Some((m_server, ttl)) => match delegate(&m_server) {
                Delegation::Resolved(destination) => (destination, ttl),
                Delegation::NeedsSrv(host) => (self.with_srv(&host).await, ttl),
            },
            None => (self.with_srv(server_name).await, FAILURE_TTL),
        };
        self.cache.lock().expect("discovery cache").insert(
            server_name.to_owned(),
            (destination.clone(), Instant::now() + ttl),
        );
        destination
    }

    fn cached(&self, server_name: &str) -> Option<Destination> {
        let cache = self.cache.lock().expect("discovery cache");
        cache
            .get(server_name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(destination, _)| destination.clone())
    }

    async fn with_srv(&self, host: &str) -> Destination {
        let mut srv = None;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            srv = self.srv_lookup(&format!("{service}.{host}.")).await;
            if srv.is_some() {
                break;
            }
        }
        after_srv(host, srv)
    }

    /// The best record: lowest priority, then highest weight.
    async fn srv_lookup(&self, name: &str) -> Option<(String, u16)> {
        let records = self.dns.as_ref()?.srv_lookup(name).await.ok()?;
        let best = records
            .iter()
            .min_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())))?;
        let target = best.target().to_utf8();
        Some((target.trim_end_matches('.').to_owned(), best.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(connect: &str, port: u16, host: &str, tls: &str) -> Destination {
        Destination {
            connect_host: connect.into(),
            port,
            host_header: host.into(),
            tls_name: tls.into(),
        }
    }

    #[test]
    fn ip_literals_use_their_port_or_8448() {
        assert_eq!(
            without_delegation("127.0.0.1:8500"),
            Some(dest("127.0.0.1", 8500, "127.0.0.1:8500", "127.0.0.1"))
        );
        assert_eq!(
            without_delegation("[::1]"),
            Some(dest("::1", 8448, "[::1]", "::1"))
        );
        assert_eq!(
            without_delegation("[::1]:9000"),
            Some(dest("::1", 9000, "[::1]:9000", "::1"))
        );
    }

    #[test]
    fn an_explicit_port_skips_well_known() {
        assert_eq!(
            without_delegation("example.org:8500"),
            Some(dest("example.org", 8500, "example.org:8500", "example.org"))
        );
        assert_eq!(without_delegation("example.org"), None);
    }

    #[test]
    fn well_known_delegation_follows_the_spec_branches() {
        // 3.1: IP literal, Host header with the port given.
        assert_eq!(
            delegate("10.0.0.1:443"),
            Delegation::Resolved(dest("10.0.0.1", 443, "10.0.0.1:443", "10.0.0.1"))
        );
        // 3.2: hostname and port.
        assert_eq!(
            delegate("matrix.example.org:443"),
            Delegation::Resolved(dest(
                "matrix.example.org",
                443,
                "matrix.example.org:443",
                "matrix.example.org"
            ))
        );
        // 3.3: hostname alone: SRV on the delegated name.
        assert_eq!(
            delegate("matrix.example.org"),
            Delegation::NeedsSrv("matrix.example.org".into())
        );
    }

    #[test]
    fn srv_targets_keep_the_original_name_for_tls_and_host() {
        assert_eq!(
            after_srv("example.org", Some(("fed.example.net".into(), 8000))),
            dest("fed.example.net", 8000, "example.org", "example.org")
        );
        // step 6 / 3.5: no SRV record, port 8448.
        assert_eq!(
            after_srv("example.org", None),
            dest("example.org", 8448, "example.org", "example.org")
        );
    }

    #[test]
    fn well_known_bodies_are_validated() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#),
            Some("matrix.example.org:443".into())
        );
        assert_eq!(parse_well_known(br#"{"m.server": ""}"#), None);
        assert_eq!(parse_well_known(br#"{"m.server": 3}"#), None);
        assert_eq!(parse_well_known(b"<html>"), None);
    }

    #[test]
    fn well_known_ttl_honours_max_age_up_to_48_hours() {
        assert_eq!(well_known_ttl(None), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(
            well_known_ttl(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(well_known_ttl(Some("max-age=99999999")), WELL_KNOWN_MAX_TTL);
    }

    #[tokio::test]
    async fn resolver_uses_and_caches_well_known() {
        let resolver = Resolver::new();
        let first = resolver
            .resolve("corvid.test", |_| async {
                Some(("127.0.0.1:9999".to_owned(), Duration::from_secs(60)))
            })
            .await;
        assert_eq!(
            first,
            dest("127.0.0.1", 9999, "127.0.0.1:9999", "127.0.0.1")
        );
        // Cached: a second lookup does not ask again.
        let second = resolver
            .resolve("corvid.test", |_| async { panic!("asked twice") })
            .await;
        assert_eq!(first, second);
    }
}
