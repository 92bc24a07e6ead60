//! Full-text search of room events. The index (`event_search`) is kept by
//! triggers on `events` (`migrations/*/0003_search.sql`); the dialects differ
//! only in how a query matches and ranks, which is all in [`Dialect`]:
//! FTS5 `MATCH` and `bm25` on SQLite, `tsquery` and `ts_rank` on PostgreSQL.

use std::collections::HashMap;

use super::{Backend, Db, events::StoredEvent, events::prefixed_event_columns, placeholders};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first, then newest.
    Rank,
    /// Newest first.
    Recent,
}

/// Where a page of hits ended: the last hit's rank and stream ordering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchCursor {
    pub rank: f64,
    pub stream_ordering: i64,
}

/// What to search for, and where.
pub struct EventSearch<'a> {
    /// Words of letters and digits, lower-cased; every one must start a word
    /// of the event's text.
    pub terms: &'a [String],
    pub rooms: &'a [String],
    pub event_types: &'a [&'a str],
    /// Only events at or before this stream position.
    pub upto: i64,
    pub order: SearchOrder,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchHit {
    #[sqlx(flatten)]
    pub event: StoredEvent,
    /// Higher is a better match.
    pub rank: f64,
}

impl SearchHit {
    pub fn cursor(&self) -> SearchCursor {
        SearchCursor {
            rank: self.rank,
            stream_ordering: self.event.stream_ordering,
        }
    }
}

/// Rooms per statement: one bound parameter each.
const ROOMS_PER_STATEMENT: usize = 500;

struct Dialect {
    /// The index joined to `events e`, and the query as `q` where needed.
    from: &'static str,
    matches: &'static str,
    rank: &'static str,
}

impl Dialect {
    fn of(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self {
                from: "event_search CROSS JOIN events e",
                matches: "event_search MATCH $1 AND e.stream_ordering = event_search.rowid",
                // bm25 is lower for better matches.
                rank: "-bm25(event_search)",
            },
            Backend::Postgres => Self {
                from: "to_tsquery('simple', $1) q CROSS JOIN event_search s CROSS JOIN events e",
                matches: "s.vector @@ q AND e.stream_ordering = s.stream_ordering",
                rank: "ts_rank(s.vector, q)::float8",
            },
        }
    }

    /// The terms as a query of the backend's syntax: each a word prefix, all
    /// required. Terms are letters and digits only, so quoting them is enough.
    fn query(backend: Backend, terms: &[String]) -> String {
        match backend {
            Backend::Sqlite => terms
                .iter()
                .map(|t| format!("\"{t}\"*"))
                .collect::<Vec<_>>()
                .join(" AND "),
            Backend::Postgres => terms
                .iter()
                .map(|t| format!("'{t}':*"))
                .collect::<Vec<_>>()
                .join(" & "),
        }
    }
}

impl Db {
    /// Up to `limit` hits after `after`, in the search's order.
    pub async fn search_events(
        &self,
        search: &EventSearch<'_>,
        after: Option<SearchCursor>,
        limit: i64,
    ) -> Result<Vec<SearchHit>> {
        let mut hits = Vec::new();
        for rooms in search.rooms.chunks(ROOMS_PER_STATEMENT) {
            hits.extend(self.search_chunk(search, rooms, after, limit).await?);
        }
        // Each chunk of rooms is ordered on its own; merge them.
        match search.order {
            SearchOrder::Rank => hits.sort_by(|a, b| {
                b.rank
                    .total_cmp(&a.rank)
                    .then(b.event.stream_ordering.cmp(&a.event.stream_ordering))
            }),
            SearchOrder::Recent => hits.sort_by_key(|h| std::cmp::Reverse(h.event.stream_ordering)),
        }
        hits.truncate(limit.max(0) as usize);
        Ok(hits)
    }

    async fn search_chunk(
        &self,
        search: &EventSearch<'_>,
        rooms: &[String],
        after: Option<SearchCursor>,
        limit: i64,
    ) -> Result<Vec<SearchHit>> {
        let d = Dialect::of(self.backend());
        // PostgreSQL refuses parameters a statement does not use, so the
        // keyset's are numbered (and bound) only when there is one.
        let next = 3 + rooms.len() + search.event_types.len();
        let (keyset, limit_param) = match (after, search.order) {
            (None, _) => ("1 = 1".to_owned(), next),
            (Some(_), SearchOrder::Rank) => (
                format!(
                    "(rank < ${next} OR (rank = ${next} AND stream_ordering < ${}))",
                    next + 1
                ),
                next + 2,
            ),
            (Some(_), SearchOrder::Recent) => (format!("stream_ordering < ${next}"), next + 1),
        };
        let order = match search.order {
            SearchOrder::Rank => "rank DESC, stream_ordering DESC",
            SearchOrder::Recent => "stream_ordering DESC",
        };
        let sql = format!(
            "SELECT * FROM (SELECT {}, {} AS rank FROM {} WHERE {} AND {}) hits \
             WHERE {keyset} ORDER BY {order} LIMIT ${limit_param}",
            prefixed_event_columns("e"),
            d.rank,
            d.from,
            d.matches,
            conditions(rooms.len(), search.event_types.len()),
        );
        let mut q = sqlx::query_as::<_, SearchHit>(&sql)
            .bind(Dialect::query(self.backend(), search.terms))
            .bind(search.upto);
        for room in rooms {
            q = q.bind(room);
        }
        for event_type in search.event_types {
            q = q.bind(*event_type);
        }
        if let Some(after) = after {
            if search.order == SearchOrder::Rank {
                q = q.bind(after.rank);
            }
            q = q.bind(after.stream_ordering);
        }
        Ok(q.bind(limit).fetch_all(self.pool()).await?)
    }

    /// The rank an indexed event has now, if it still matches. A token keeps
    /// the rank its last hit had; bm25 depends on the whole index, so the
    /// next page must compare with what that rank has become since.
    pub async fn search_rank_of(
        &self,
        terms: &[String],
        stream_ordering: i64,
    ) -> Result<Option<f64>> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT -bm25(event_search) FROM event_search WHERE event_search MATCH $1 AND rowid = $2"
            }
            Backend::Postgres => {
                "SELECT ts_rank(s.vector, q)::float8 FROM to_tsquery('simple', $1) q CROSS JOIN event_search s \
                 WHERE s.vector @@ q AND s.stream_ordering = $2"
            }
        };
        let row: Option<(f64,)> = sqlx::query_as(sql)
            .bind(Dialect::query(self.backend(), terms))
            .bind(stream_ordering)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(rank,)| rank))
    }

    /// How many events match, visible or not: the estimate the spec's `count` allows.
    pub async fn count_search_events(&self, search: &EventSearch<'_>) -> Result<u64> {
        let d = Dialect::of(self.backend());
        let mut total = 0;
        for rooms in search.rooms.chunks(ROOMS_PER_STATEMENT) {
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE {} AND {}",
                d.from,
                d.matches,
                conditions(rooms.len(), search.event_types.len()),
            );
            let mut q = sqlx::query_as::<_, (i64,)>(&sql)
                .bind(Dialect::query(self.backend(), search.terms))
                .bind(search.upto);
            for room in rooms {
                q = q.bind(room);
            }
            for event_type in search.event_types {
                q = q.bind(*event_type);
            }
            total += q.fetch_one(self.pool()).await?.0.max(0) as u64;
        }
        Ok(total)
    }

    /// The `m.room.member` events of `users` in a state group: user id → PDU.
    pub async fn member_events_at(
        &self,
        group: i64,
        users: &[&str],
    ) -> Result<HashMap<String, String>> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "WITH RECURSIVE chain(state_group, prev_group, n) AS ( \
                 SELECT state_group, prev_group, 0 FROM state_groups WHERE state_group = $1 \
                 UNION ALL \
                 SELECT g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group \
             ) \
             SELECT s.state_key, e.pdu, c.n FROM chain c CROSS JOIN state_group_entries s CROSS JOIN events e \
             WHERE s.state_group = c.state_group AND s.event_type = 'm.room.member' AND s.state_key IN ({}) \
             AND e.event_id = s.event_id ORDER BY c.n DESC",
            placeholders(2, users.len())
        );
        let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql).bind(group);
        for user in users {
            q = q.bind(*user);
        }
        // Oldest snapshot first, so the newest entry of each user wins.
        Ok(q.fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|(user, pdu, _)| (user, pdu))
            .collect())
    }
}

/// The conditions shared by the search and its count: `$2` is the upper
/// stream position, then come the rooms, then the event types.
fn conditions(rooms: usize, types: usize) -> String {
    format!(
        "e.stream_ordering <= $2 AND e.room_id IN ({}) AND e.event_type IN ({}) AND e.redacted_by IS NULL",
        placeholders(3, rooms),
        placeholders(3 + rooms, types)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_ask_for_every_term_as_a_prefix() {
        let terms = ["hel".to_owned(), "wor".to_owned()];
        assert_eq!(
            Dialect::query(Backend::Sqlite, &terms),
            "\"hel\"* AND \"wor\"*"
        );
        assert_eq!(
            Dialect::query(Backend::Postgres, &terms),
            "'hel':* & 'wor':*"
        );
    }

    #[test]
    fn conditions_number_rooms_then_types() {
        assert_eq!(
            conditions(2, 1),
            "e.stream_ordering <= $2 AND e.room_id IN ($3, $4) AND e.event_type IN ($5) AND e.redacted_by IS NULL"
        );
    }
}
