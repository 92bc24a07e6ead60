//! Storage: SQLite or PostgreSQL through one sqlx `Any` pool.
//!
//! Queries are built at run time with portable SQL (`$1` placeholders,
//! `ON CONFLICT … DO UPDATE`, `WITH RECURSIVE` work on both), so one
//! repository serves both backends; the test suite runs on both.
//!
//! Writes that extend a room or a stream happen in a [`WriteTx`]. Stream
//! positions come from one counter row updated inside the transaction, so
//! they become visible in order: a reader that has seen position N has seen
//! everything below N. On SQLite a process-wide mutex serialises writers
//! (SQLite has one writer anyway, and this avoids `SQLITE_BUSY` on lock
//! upgrades); on PostgreSQL the counter row lock orders the commits.
//!
//! Every position is taken for a named kind of item ([`StreamItem`]). Each
//! commit records what its positions hold in this process's [`journal`], so
//! a sync reads only the kinds that moved since its token; where another
//! process took positions in between (PostgreSQL shared by several servers,
//! the admin command line), the journal cannot tell and the sync reads
//! every kind.

pub mod accounts;
pub mod backup;
pub mod events;
pub mod federation;
pub mod journal;
pub mod keys;
pub mod media;
pub mod push;
pub mod read_cache;
pub mod receipts;
pub mod relations;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod state;
pub mod statements;
pub mod to_device;
pub mod user_data;
pub mod user_directory;

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Any, AnyPool, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
};
use tokio::sync::{Mutex, MutexGuard};

use crate::Result;
pub use journal::StreamItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Rows per multi-row statement of `columns` bound parameters each. On
    /// PostgreSQL every statement is a round trip, so they are large. sqlx
    /// on SQLite looks each parameter's name up in the statement's list of
    /// them, so binding costs grow with the square of the parameter count
    /// (3,000 parameters took milliseconds), while a statement costs little
    /// in-process: there they are small.
    pub fn rows_per_statement(self, columns: usize) -> usize {
        let parameters = match self {
            Backend::Sqlite => 256,
            Backend::Postgres => 4096,
        };
        (parameters / columns.max(1)).max(1)
    }

    /// SQL: `SELECT` one row per element of the JSON array of arrays in
    /// parameter `param`, column `c{i}` being element `i` as `types[i]`.
    fn json_array_rows(self, param: &str, types: &[&str]) -> String {
        let columns: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| match self {
                Backend::Sqlite => format!("json_extract(r.value, '$[{i}]') AS c{i}"),
                Backend::Postgres if *t == "text" => format!("r.value->>{i} AS c{i}"),
                Backend::Postgres => format!("(r.value->>{i})::{t} AS c{i}"),
            })
            .collect();
        match self {
            // SQLite needs the WHERE to tell an upsert's ON CONFLICT from a join's.
            Backend::Sqlite => format!(
                "SELECT {} FROM json_each({param}) AS r WHERE true",
                columns.join(", ")
            ),
            Backend::Postgres => format!(
                "SELECT {} FROM json_array_elements({param}::json) AS r(value)",
                columns.join(", ")
            ),
        }
    }
}

/// A pooled PostgreSQL connection idle this long is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    sqlite_writer: Arc<Mutex<()>>,
    state_cache: Arc<read_cache::StateCache>,
    token_cache: Arc<read_cache::TokenCache>,
    rooms_cache: Arc<read_cache::RoomsCache>,
    /// The highest stream position this process knows to be committed.
    /// Commits come in position order, so every position up to it is. On
    /// SQLite this process is the only writer of positions: once known, it
    /// is the current position and the database need not be asked (a sync
    /// asks at every start and every long-poll). On PostgreSQL other
    /// processes commit too, and it is only a lower bound.
    committed: Arc<AtomicI64>,
    /// What the recent positions hold (see [`journal`]).
    journal: Arc<journal::Journal>,
}

/// [`Db::committed`] before the first read of the counter.
const UNKNOWN_POSITION: i64 = i64::MIN;

/// A write transaction; on SQLite it also holds the writer lock.
pub struct WriteTx<'a> {
    pub tx: Transaction<'static, Any>,
    backend: Backend,
    _writer: Option<MutexGuard<'a, ()>>,
    staged: events::Staged,
    /// Stream positions taken from the counter and not used yet.
    positions: std::ops::Range<i64>,
    state_cache: Arc<read_cache::StateCache>,
    token_cache: Arc<read_cache::TokenCache>,
    /// Whether stored events were redacted or replaced: once committed, no
    /// cached state may hold them as they were.
    events_changed: bool,
    /// Whether access tokens were revoked: once committed, none may stay cached.
    tokens_revoked: bool,
    /// The lowest and highest stream positions taken; the highest is
    /// published to `committed` on commit.
    first_taken: Option<i64>,
    highest_taken: Option<i64>,
    committed: Arc<AtomicI64>,
    /// What the positions taken hold, for the journal.
    changes: journal::Changes,
    /// See [`WriteTx::heads_kept_by_caller`].
    caller_keeps_heads: bool,
    journal: Arc<journal::Journal>,
}

impl WriteTx<'_> {
    pub async fn commit(mut self) -> Result<()> {
        self.flush().await?;
        if self.caller_keeps_heads {
            self.changes.head_rooms.clear();
        }
        if self.first_taken.is_none() && !self.changes.head_rooms.is_empty() {
            // Only the journal tells the event writer that a head it keeps
            // changed, and it records commits by their positions.
            self.next_stream_position(StreamItem::Internal).await?;
        }
        self.tx.commit().await?;
        if self.events_changed {
            self.state_cache.clear();
        }
        if self.tokens_revoked {
            self.token_cache.clear();
        }
        if let (Some(first), Some(last)) = (self.first_taken, self.highest_taken) {
            self.journal
                .committed(first, last, std::mem::take(&mut self.changes));
            self.committed.fetch_max(last, Ordering::Release);
        }
        Ok(())
    }

    /// Takes the next position of the global stream for `item`. Every
    /// persisted stream item (event, account data, …) gets one, in commit
    /// order.
    pub async fn next_stream_position(&mut self, item: StreamItem<'_>) -> Result<i64> {
        self.reserve_stream_positions(1).await?;
        let pos = self.positions.start;
        self.positions.start += 1;
        self.changes.record(&item);
        Ok(pos)
    }

    /// The rooms whose heads changed after position `since` and before this
    /// transaction's positions; `None` when that is not known (positions
    /// taken by another process, or not reserved yet).
    ///
    /// Every transaction that reads or changes a room's head takes its
    /// positions first (the event writer, federation's joins, placements and
    /// received events; a commit that changed a head without one takes one),
    /// and holds them until it commits: SQLite's writer lock, PostgreSQL's
    /// lock on the counter row. So no head can change between a
    /// transaction's reservation and its commit, and the journal names
    /// every change before it.
    pub fn head_rooms_changed_since(&self, since: i64) -> Option<HashSet<String>> {
        let upto = self.first_taken? - 1;
        Some(self.journal.changes_between(since, upto)?.head_rooms)
    }

    /// The caller (the event writer) keeps the heads of the rooms this
    /// transaction changed itself, so the journal need not name them (every
    /// sync would otherwise copy them). Returns the last position taken, from
    /// which [`WriteTx::head_rooms_changed_since`] can later tell whether a
    /// kept head is still current; `None` when the transaction took none.
    pub fn heads_kept_by_caller(&mut self) -> Option<i64> {
        self.caller_keeps_heads = true;
        self.highest_taken
    }

    /// Takes `count` positions from the counter in one step, for a batch
    /// (unused ones are simply gaps: positions are ordered, not dense).
    pub async fn reserve_stream_positions(&mut self, count: i64) -> Result<()> {
        if !self.positions.is_empty() {
            return Ok(());
        }
        let (last,): (i64,) = sqlx::query_as(
            "UPDATE stream_positions SET position = position + $1 WHERE name = 'main' RETURNING position",
        )
        .bind(count.max(1))
        .fetch_one(&mut *self.tx)
        .await?;
        self.positions = last - count.max(1) + 1..last + 1;
        self.first_taken = self.first_taken.or(Some(self.positions.start));
        self.highest_taken = Some(last);
        Ok(())
    }
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_core.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_messenger.sql"),
    ),
    (3, include_str!("../../migrations/sqlite/0003_search.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_relations.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_login_tokens.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_unread_counts.sql"),
    ),
    (7, include_str!("../../migrations/sqlite/0007_e2ee.sql")),
    (8, include_str!("../../migrations/sqlite/0008_media.sql")),
    (
        9,
        include_str!("../../migrations/sqlite/0009_server_keys.sql"),
    ),
    (
        10,
        include_str!("../../migrations/sqlite/0010_openid_tokens.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_federation.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_notifications_per_event.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_core.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_messenger.sql"),
    ),
    (3, include_str!("../../migrations/postgres/0003_search.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_relations.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_login_tokens.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_unread_counts.sql"),
    ),
    (7, include_str!("../../migrations/postgres/0007_e2ee.sql")),
    (8, include_str!("../../migrations/postgres/0008_media.sql")),
    (
        9,
        include_str!("../../migrations/postgres/0009_server_keys.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_openid_tokens.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_federation.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_notifications_per_event.sql"),
    ),
];

impl Db {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(sqlx::Error::Configuration(
                format!(
                    "database_url must start with sqlite:// or postgres://, got {}",
                    redact_url(url)
                )
                .into(),
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        // SQLite has one writer and sync reads its rooms one at a time, so a
        // few connections (each with a 1 MiB page cache) serve it; every
        // connection more is memory held for nothing.
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            // sqlx pings every connection it hands out by default: on
            // SQLite a hand-off to the connection's thread, on PostgreSQL a
            // round trip, doubling the cost of a one-statement read. An
            // embedded connection cannot go away; a PostgreSQL one is checked
            // only when it has sat idle long enough to have been dropped.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres && meta.idle_for >= IDLE_BEFORE_PING {
                        use sqlx::Connection as _;
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor as _;
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA cache_size = -1024; PRAGMA journal_size_limit = 67108864;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend,
            sqlite_writer: Arc::new(Mutex::new(())),
            state_cache: Arc::new(read_cache::state_cache()),
            token_cache: Arc::new(read_cache::token_cache()),
            rooms_cache: Arc::default(),
            committed: Arc::new(AtomicI64::new(UNKNOWN_POSITION)),
            journal: Arc::default(),
        })
    }

    /// SQLite: copies the write-ahead log back into the database once a
    /// second, in the background, so the automatic checkpoint a commit runs
    /// when the log passes its threshold finds little left to copy (that copy
    /// made its sender wait: the tail of send latency). The automatic one
    /// stays as the bound on the log's size.
    pub fn start_checkpoints(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !pool.is_closed() {
                tick.tick().await;
                if let Err(e) = sqlx::raw_sql("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                    && !pool.is_closed()
                {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn write(&self) -> Result<WriteTx<'_>> {
        let writer = match self.backend {
            Backend::Sqlite => Some(self.sqlite_writer.lock().await),
            Backend::Postgres => None,
        };
        let tx = match self.backend {
            // IMMEDIATE takes the write lock up front: a deferred transaction
            // that reads first fails with SQLITE_BUSY_SNAPSHOT when another
            // connection (or process, e.g. the admin CLI) wrote in between.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx {
            tx,
            backend: self.backend,
            staged: events::Staged::default(),
            positions: 0..0,
            state_cache: self.state_cache.clone(),
            token_cache: self.token_cache.clone(),
            events_changed: false,
            tokens_revoked: false,
            first_taken: None,
            highest_taken: None,
            committed: self.committed.clone(),
            changes: journal::Changes::default(),
            caller_keeps_heads: false,
            journal: self.journal.clone(),
            _writer: writer,
        })
    }

    /// Applies the migrations this database has not seen yet, each in its own transaction.
    pub async fn migrate(&self) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ts BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let migrations = match self.backend {
            Backend::Sqlite => MIGRATIONS_SQLITE,
            Backend::Postgres => MIGRATIONS_POSTGRES,
        };
        let mut applied = Vec::new();
        for &(version, sql) in migrations {
            let _writer = self.sqlite_writer.lock().await;
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                // Two processes starting together must not both migrate.
                sqlx::query("SELECT pg_advisory_xact_lock(7301)")
                    .execute(&mut *tx)
                    .await?;
            }
            let done: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_ts) VALUES ($1, $2)")
                .bind(version)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            applied.push(version);
        }
        Ok(applied)
    }

    /// PostgreSQL: takes the session-level advisory lock `(key, name)` on a
    /// connection of its own, held for as long as the returned connection
    /// lives (`None`: another process holds it). `name` scopes the lock
    /// (advisory locks are per database, which several servers may share).
    /// SQLite has one process.
    pub async fn try_session_lock(
        &self,
        key: i32,
        name: &str,
    ) -> Result<Option<Option<sqlx::pool::PoolConnection<Any>>>> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(None));
        }
        let mut conn = self.pool.acquire().await?;
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(key)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        Ok(locked.then_some(Some(conn)))
    }

    /// The current position of the global stream.
    pub async fn stream_position(&self) -> Result<i64> {
        let known = self.committed.load(Ordering::Acquire);
        if self.backend == Backend::Sqlite && known != UNKNOWN_POSITION {
            return Ok(known);
        }
        let (pos,): (i64,) =
            sqlx::query_as("SELECT position FROM stream_positions WHERE name = 'main'")
                .fetch_one(&self.pool)
                .await?;
        self.committed.fetch_max(pos, Ordering::AcqRel);
        Ok(pos)
    }

    /// A committed position past `since` when this process knows one, else
    /// the current position. Every position up to the one returned is
    /// committed, but others may have committed more: a sync that stops
    /// there is still correct, and its next one (from a token this process
    /// knows nothing past) asks the database. Syncs woken by this process's
    /// own commits so skip a round trip on PostgreSQL.
    pub async fn stream_position_past(&self, since: Option<i64>) -> Result<i64> {
        let known = self.committed.load(Ordering::Acquire);
        match since {
            Some(since) if known > since => Ok(known),
            _ => self.stream_position().await,
        }
    }

    /// What was committed in `(since, upto]`, when this process knows
    /// (see [`journal`]); `None` means anything may have.
    pub fn changes_between(&self, since: i64, upto: i64) -> Option<journal::Changes> {
        self.journal.changes_between(since, upto)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A database URL with any password replaced, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}://{}:***{}",
                    &url[..scheme_end],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The rows of a multi-row `VALUES`: `rows` rows of `own` parameters each,
/// numbered from `$first` on, each set in `frame` in place of its `{}`:
/// `"({})"`, or e.g. `"($1, {}, $2)"` around parameters every row shares.
pub fn values_rows(rows: usize, first: usize, own: usize, frame: &str) -> String {
    (0..rows)
        .map(|r| frame.replacen("{}", &placeholders(first + r * own, own), 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Placeholder list `$from, $from+1, …` for an `IN (…)` clause.
pub fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rows_number_parameters_row_by_row() {
        assert_eq!(values_rows(2, 1, 3, "({})"), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(
            values_rows(2, 3, 3, "($1, {}, $2)"),
            "($1, $3, $4, $5, $2), ($1, $6, $7, $8, $2)"
        );
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
