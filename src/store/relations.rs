//! Reads of the relations index (`event_relations`, `threads`), which the
//! triggers of migration 0004 keep in step with `events`.

use super::{Db, events::StoredEvent, events::prefixed_event_columns, placeholders};
use crate::Result;

/// Event ids per statement in the batched reads.
const IDS_PER_STATEMENT: usize = 500;

/// A child event that may aggregate into its parent, with what the
/// aggregation rules need to know about both.
///
/// For `m.replace` and `m.reference` rows the child is the relating event;
/// for an `m.thread` row it is the thread's newest reply, and `reply_count`
/// and `participated` summarise the thread.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BundleRow {
    pub parent_id: String,
    pub rel_type: String,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub origin_server_ts: i64,
    pub stream_ordering: i64,
    pub can_replace: i64,
    pub parent_sender: String,
    pub parent_type: String,
    pub parent_room: String,
    pub parent_state_key: Option<String>,
    pub parent_redacted_by: Option<String>,
    /// The parent's own relation type, if it relates to another event.
    pub parent_rel_type: Option<String>,
    pub reply_count: i64,
    /// Whether the viewer wrote a reply in the thread.
    pub participated: i64,
}

/// The children `/relations` asks for.
#[derive(Debug, Clone, Copy)]
pub struct RelatedQuery<'a> {
    pub room_id: &'a str,
    pub parent_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// How many relations away from the parent to look (1: direct children).
    pub depth: i64,
    /// The stream range, `after < stream_ordering <= upto`.
    pub after: i64,
    pub upto: i64,
    pub newest_first: bool,
    pub limit: i64,
}

/// A thread root with the stream position of its newest reply.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreadRoot {
    pub activity: i64,
    #[sqlx(flatten)]
    pub root: StoredEvent,
}

/// The relation types bundled aggregations show, as an SQL list.
pub(super) const BUNDLED_RELATIONS: &str = "'m.replace', 'm.reference', 'm.thread'";

const BUNDLE_COLUMNS: &str = "p.sender AS parent_sender, p.event_type AS parent_type, p.room_id AS parent_room, \
     p.state_key AS parent_state_key, p.redacted_by AS parent_redacted_by, pr.rel_type AS parent_rel_type";

impl Db {
    /// What aggregates into `parents` as `user` sees it, in one statement:
    /// their edits and references, their threads, and the edits and
    /// references of those threads' newest replies (which are bundled too).
    /// The parents are the events known to have relations
    /// ([`Db::with_relations`], [`StoredEvent::related`]).
    pub async fn bundle_rows(&self, parents: &[&str], user: &str) -> Result<Vec<BundleRow>> {
        let mut rows = Vec::new();
        for chunk in parents.chunks(IDS_PER_STATEMENT) {
            let ids = placeholders(2, chunk.len());
            let sql = format!(
                "WITH parents(event_id) AS ( \
                     SELECT event_id FROM events WHERE event_id IN ({ids}) \
                     UNION SELECT latest_event_id FROM threads WHERE root_id IN ({ids}) \
                 ) \
                 SELECT r.relates_to_id AS parent_id, r.rel_type, r.event_id, r.room_id, r.sender, r.event_type, \
                     r.origin_server_ts, r.stream_ordering, r.can_replace, {BUNDLE_COLUMNS}, \
                     0 AS reply_count, 0 AS participated \
                 FROM parents x CROSS JOIN event_relations r CROSS JOIN events p \
                 LEFT JOIN event_relations pr ON pr.event_id = p.event_id \
                 WHERE r.relates_to_id = x.event_id AND r.rel_type IN ('m.replace', 'm.reference') \
                     AND p.event_id = r.relates_to_id \
                 UNION ALL \
                 SELECT t.root_id, 'm.thread', t.latest_event_id, t.room_id, l.sender, l.event_type, \
                     l.origin_server_ts, l.stream_ordering, 0, {BUNDLE_COLUMNS}, t.reply_count, \
                     CASE WHEN EXISTS (SELECT 1 FROM event_relations u WHERE u.relates_to_id = t.root_id \
                         AND u.sender = $1 AND u.rel_type = 'm.thread' AND u.room_id = t.room_id) THEN 1 ELSE 0 END \
                 FROM threads t CROSS JOIN events p CROSS JOIN events l \
                 LEFT JOIN event_relations pr ON pr.event_id = p.event_id \
                 WHERE t.root_id IN ({ids}) AND p.event_id = t.root_id AND l.event_id = t.latest_event_id"
            );
            let mut q = sqlx::query_as::<_, BundleRow>(&sql).bind(user);
            for id in chunk {
                q = q.bind(*id);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// Those of `ids` that some event relates to in a way that is bundled:
    /// one index lookup, before the full query for the few that have some.
    pub async fn with_relations(&self, ids: &[&str]) -> Result<std::collections::HashSet<String>> {
        let mut related = std::collections::HashSet::new();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT DISTINCT relates_to_id FROM event_relations WHERE relates_to_id IN ({}) \
                 AND rel_type IN ({BUNDLED_RELATIONS})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String,)>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            related.extend(q.fetch_all(self.pool()).await?.into_iter().map(|(id,)| id));
        }
        Ok(related)
    }

    /// `(reply count, newest reply)` of a thread counting only replies at or
    /// before `upto`, for a viewer who cannot see the later ones.
    pub async fn thread_upto(
        &self,
        room_id: &str,
        root_id: &str,
        upto: i64,
    ) -> Result<Option<(i64, String)>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM event_relations WHERE relates_to_id = $1 AND rel_type = 'm.thread' \
                 AND room_id = $2 AND stream_ordering <= $3), event_id \
             FROM event_relations WHERE relates_to_id = $1 AND rel_type = 'm.thread' AND room_id = $2 \
                 AND stream_ordering <= $3 \
             ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(root_id)
        .bind(room_id)
        .bind(upto)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// The events relating to a parent, directly or through up to `depth`
    /// relations, in stream order; the type filters apply at every step.
    pub async fn related_events(&self, q: &RelatedQuery<'_>) -> Result<Vec<StoredEvent>> {
        let direct = q.depth <= 1;
        // $1 parent, $2 room, $3 after, $4 upto, $5 limit, $6 depth when recursing, then the filters.
        let mut filters = String::new();
        let mut next = if direct { 6 } else { 7 };
        for (column, value) in [("rel_type", q.rel_type), ("event_type", q.event_type)] {
            if value.is_some() {
                filters.push_str(&format!(" AND r.{column} = ${next}"));
                next += 1;
            }
        }
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let columns = prefixed_event_columns("e");
        // Direct children are one index range; deeper ones are collected
        // first, as a child's own children may sit anywhere in the stream.
        let sql = if direct {
            format!(
                "SELECT {columns} FROM event_relations r CROSS JOIN events e \
                 WHERE r.relates_to_id = $1 AND r.room_id = $2{filters} \
                     AND r.stream_ordering > $3 AND r.stream_ordering <= $4 AND e.event_id = r.event_id \
                 ORDER BY r.stream_ordering {order} LIMIT $5"
            )
        } else {
            format!(
                "WITH RECURSIVE related(event_id, depth) AS ( \
                     SELECT r.event_id, 1 FROM event_relations r WHERE r.relates_to_id = $1 AND r.room_id = $2{filters} \
                     UNION \
                     SELECT r.event_id, c.depth + 1 FROM related c CROSS JOIN event_relations r \
                     WHERE r.relates_to_id = c.event_id AND c.depth < $6 AND r.room_id = $2{filters} \
                 ) \
                 SELECT {columns} FROM events e \
                 WHERE e.event_id IN (SELECT event_id FROM related) AND e.stream_ordering > $3 AND e.stream_ordering <= $4 \
                 ORDER BY e.stream_ordering {order} LIMIT $5"
            )
        };
        let mut query = sqlx::query_as(&sql)
            .bind(q.parent_id)
            .bind(q.room_id)
            .bind(q.after)
            .bind(q.upto)
            .bind(q.limit);
        if !direct {
            query = query.bind(q.depth);
        }
        for value in [q.rel_type, q.event_type].into_iter().flatten() {
            query = query.bind(value);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// Thread roots of a room whose newest reply is at or before `upto`,
    /// most recently active first; with `participant`, only the threads
    /// that user started or replied in.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        upto: i64,
        participant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ThreadRoot>> {
        let participated = match participant {
            Some(_) => {
                " AND (e.sender = $4 OR EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to_id = t.root_id \
                 AND r.sender = $4 AND r.rel_type = 'm.thread' AND r.room_id = t.room_id))"
            }
            None => "",
        };
        let sql = format!(
            "SELECT t.latest_stream_ordering AS activity, {} FROM threads t CROSS JOIN events e \
             WHERE t.room_id = $1 AND t.latest_stream_ordering <= $2 AND e.event_id = t.root_id \
                 AND e.room_id = t.room_id{participated} \
             ORDER BY t.latest_stream_ordering DESC LIMIT $3",
            prefixed_event_columns("e")
        );
        let mut q = sqlx::query_as(&sql).bind(room_id).bind(upto).bind(limit);
        if let Some(user) = participant {
            q = q.bind(user);
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// The relation type of an event of the room, if it relates to another.
    pub async fn relation_type(&self, room_id: &str, event_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT rel_type FROM event_relations WHERE event_id = $1 AND room_id = $2",
        )
        .bind(event_id)
        .bind(room_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(t,)| t))
    }

    /// `(txn device, txn id)` of each of `sender`'s annotations of `parent`
    /// with this event type and key.
    pub async fn annotations_by(
        &self,
        room_id: &str,
        parent: &str,
        sender: &str,
        event_type: &str,
        key: &str,
    ) -> Result<Vec<(Option<String>, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT e.txn_device_id, e.txn_id FROM event_relations r CROSS JOIN events e \
             WHERE r.relates_to_id = $1 AND r.sender = $2 AND r.rel_type = 'm.annotation' \
                 AND r.event_type = $3 AND r.aggregation_key = $4 AND r.room_id = $5 AND e.event_id = r.event_id",
        )
        .bind(parent)
        .bind(sender)
        .bind(event_type)
        .bind(key)
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }
}
