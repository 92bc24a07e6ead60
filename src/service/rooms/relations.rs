//! Event relations: spec client-server API, "Forming relationships between
//! events", and the modules built on it (edits, reactions, threads,
//! references).
//!
//! - [`bundles`]: the bundled aggregations (`unsigned."m.relations"`) of
//!   events served to a user: the newest valid edit (`m.replace`), the thread
//!   summary (`m.thread`) and the references (`m.reference`). Annotations are
//!   not bundled (spec v1.7).
//! - [`relations`] (`/relations`) and [`threads`] (`/threads`), paginated
//!   with the stream-position tokens of `/messages`.
//! - [`check_new`]: what a server refuses when a client sends a relation.
//!
//! The index itself is kept by database triggers (migration 0004): a
//! redacted event loses its relation, so it is neither bundled nor listed.

use std::collections::{HashMap, HashSet};

use http::StatusCode;
use ruma::{
    EventId, OwnedEventId, RoomId, UInt, UserId,
    api::{Direction, client::threads::get_threads::v1::IncludeThreads},
    events::relation::{
        BundledMessageLikeRelations, BundledReference, BundledThread, ReferenceChunk,
    },
    serde::Raw,
};
use serde_json::{Value, value::RawValue, value::to_raw_value};

use super::{
    events::{ClientEvent, Format, format_events, format_with},
    messages::visible_event,
    timeline::Txn,
    visibility::Viewer,
};
use crate::{
    Error, Result, Server,
    service::sync::SyncToken,
    store::{
        events::StoredEvent,
        relations::{BundleRow, RelatedQuery},
    },
};

/// `/relations` and `/threads` page sizes.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// How many relations deep `recurse` follows (spec: at least 3).
const RECURSION_DEPTH: i64 = 3;

/// The viewer of formatted events: user and device.
type ViewerId<'a> = (&'a UserId, &'a str);

// ------------------------------------------------------------ bundling

/// What aggregates into one parent.
#[derive(Debug, Default, PartialEq)]
struct Aggregation {
    /// The newest valid edit as `(origin_server_ts, event_id)`: spec, the
    /// largest timestamp, then the lexicographically largest id.
    replace: Option<(i64, String)>,
    /// `(stream_ordering, event_id)`, oldest first.
    references: Vec<(i64, String)>,
    thread: Option<ThreadSummary>,
}

#[derive(Debug, PartialEq)]
struct ThreadSummary {
    latest: String,
    count: i64,
    participated: bool,
}

/// The bundled aggregations of `events` as the viewer sees them, by event
/// id, already serialised. State events get none (spec: "State events do
/// not currently receive bundled aggregations").
pub async fn bundles(
    server: &Server,
    events: &[StoredEvent],
    viewer: ViewerId<'_>,
    format: Format,
) -> Result<HashMap<String, Box<RawValue>>> {
    // Events read with `related` known need no lookup: only the others are
    // looked up, and only the events with relations have bundles to read.
    let candidates: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.state_key.is_none() && e.related != Some(0))
        .collect();
    let unknown: Vec<&str> = candidates
        .iter()
        .filter(|e| e.related.is_none())
        .map(|e| e.event_id.as_str())
        .collect();
    let found = match unknown.is_empty() {
        true => HashSet::new(),
        false => server.db.with_relations(&unknown).await?,
    };
    let parents: Vec<&str> = candidates
        .iter()
        .filter(|e| e.related == Some(1) || found.contains(&e.event_id))
        .map(|e| e.event_id.as_str())
        .collect();
    if parents.is_empty() {
        return Ok(HashMap::new());
    }
    let user = viewer.0;
    let rows = server.db.bundle_rows(&parents, user.as_str()).await?;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = within_sight(server, rows, user).await?;
    let aggregations = aggregate(&rows, user.as_str());
    let (edits, latest) = bundled_events(server, &aggregations, viewer, format).await?;
    serialise(&aggregations, parents.into_iter(), &edits, &latest)
}

/// The events the bundles embed, formatted, by event id: the edits as they
/// are, and each thread's newest reply with its own aggregations (spec:
/// "child events of the latest_event should themselves be aggregated").
async fn bundled_events(
    server: &Server,
    aggregations: &HashMap<String, Aggregation>,
    viewer: ViewerId<'_>,
    format: Format,
) -> Result<(HashMap<String, ClientEvent>, HashMap<String, ClientEvent>)> {
    let latest_ids: HashSet<&str> = aggregations
        .values()
        .filter_map(|a| a.thread.as_ref().map(|t| t.latest.as_str()))
        .collect();
    let wanted: Vec<String> = aggregations
        .values()
        .flat_map(|a| {
            let edit = a.replace.as_ref().map(|(_, id)| id.clone());
            edit.into_iter()
                .chain(a.thread.as_ref().map(|t| t.latest.clone()))
        })
        .collect();
    let (latest, edits): (Vec<StoredEvent>, Vec<StoredEvent>) = server
        .db
        .events(&wanted)
        .await?
        .into_iter()
        .partition(|e| latest_ids.contains(e.event_id.as_str()));
    let edits = formatted(server, edits, viewer, format, HashMap::new()).await?;
    // Replies in a thread start no thread of their own.
    let no_threads = HashMap::new();
    let ids = latest.iter().map(|e| e.event_id.as_str());
    let latest_bundles = serialise(aggregations, ids, &edits, &no_threads)?;
    let latest = formatted(server, latest, viewer, format, latest_bundles).await?;
    Ok((edits, latest))
}

/// `events` formatted, by event id.
async fn formatted(
    server: &Server,
    events: Vec<StoredEvent>,
    viewer: ViewerId<'_>,
    format: Format,
    mut bundles: HashMap<String, Box<RawValue>>,
) -> Result<HashMap<String, ClientEvent>> {
    let out = format_with(server, &events, Some(viewer), format, &mut bundles).await?;
    Ok(events.into_iter().map(|e| e.event_id).zip(out).collect())
}

/// The `m.relations` objects of `ids`, for those with anything to bundle.
fn serialise<'a>(
    aggregations: &HashMap<String, Aggregation>,
    ids: impl Iterator<Item = &'a str>,
    edits: &HashMap<String, ClientEvent>,
    latest: &HashMap<String, ClientEvent>,
) -> Result<HashMap<String, Box<RawValue>>> {
    let mut out = HashMap::new();
    for id in ids {
        let Some(aggregation) = aggregations.get(id) else {
            continue;
        };
        if let Some(json) = bundle_json(aggregation, edits, latest)? {
            out.insert(id.to_owned(), json);
        }
    }
    Ok(out)
}

fn bundle_json(
    aggregation: &Aggregation,
    edits: &HashMap<String, ClientEvent>,
    latest: &HashMap<String, ClientEvent>,
) -> Result<Option<Box<RawValue>>> {
    let mut bundle = BundledMessageLikeRelations::<ClientEvent>::new();
    bundle.replace = aggregation
        .replace
        .as_ref()
        .and_then(|(_, id)| edits.get(id))
        .map(|e| Box::new(e.clone()));
    if let Some(thread) = &aggregation.thread
        && let Some(event) = latest.get(&thread.latest)
    {
        let count = UInt::try_from(thread.count).map_err(Error::internal)?;
        bundle.thread = Some(Box::new(BundledThread::new(
            Raw::from_json(event.clone()),
            count,
            thread.participated,
        )));
    }
    if !aggregation.references.is_empty() {
        let chunk = aggregation
            .references
            .iter()
            .map(|(_, id)| OwnedEventId::try_from(id.as_str()).map(BundledReference::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::internal)?;
        bundle.reference = Some(Box::new(ReferenceChunk::new(chunk)));
    }
    if bundle.is_empty() {
        return Ok(None);
    }
    Ok(Some(to_raw_value(&bundle)?))
}

/// Drops what the viewer cannot see: events after they left the room (spec:
/// aggregations are subject to history visibility). A thread whose newest
/// reply is out of sight is summarised up to the last one in sight.
async fn within_sight(
    server: &Server,
    rows: Vec<BundleRow>,
    user: &UserId,
) -> Result<Vec<BundleRow>> {
    let mut horizons: HashMap<String, i64> = HashMap::new();
    let mut kept = Vec::with_capacity(rows.len());
    for mut row in rows {
        let horizon = match horizons.get(&row.room_id) {
            Some(h) => *h,
            None => {
                let h = horizon(server, &row.room_id, user).await?;
                horizons.insert(row.room_id.clone(), h);
                h
            }
        };
        if row.stream_ordering <= horizon {
            kept.push(row);
        } else if row.rel_type == "m.thread"
            && let Some((count, latest)) = server
                .db
                .thread_upto(&row.room_id, &row.parent_id, horizon)
                .await?
        {
            row.reply_count = count;
            row.event_id = latest;
            kept.push(row);
        }
    }
    Ok(kept)
}

/// The last stream position of the room the user may see: where they left, or everything.
async fn horizon(server: &Server, room_id: &str, user: &UserId) -> Result<i64> {
    Ok(match server.db.membership(room_id, user.as_str()).await? {
        Some((membership, pos)) if membership == "leave" || membership == "ban" => pos,
        _ => i64::MAX,
    })
}

/// The aggregations of each parent the rows mention; invalid relations are
/// ignored (spec: relations across rooms, and edits breaking the rules of
/// "Validity of replacement events").
fn aggregate(rows: &[BundleRow], user: &str) -> HashMap<String, Aggregation> {
    let mut out: HashMap<String, Aggregation> = HashMap::new();
    for row in rows.iter().filter(|r| r.room_id == r.parent_room) {
        let aggregation = out.entry(row.parent_id.clone()).or_default();
        match row.rel_type.as_str() {
            "m.replace" if is_valid_edit(row) => {
                let candidate = (row.origin_server_ts, row.event_id.clone());
                if aggregation.replace.as_ref().is_none_or(|c| candidate > *c) {
                    aggregation.replace = Some(candidate);
                }
            }
            "m.reference" => aggregation
                .references
                .push((row.stream_ordering, row.event_id.clone())),
            "m.thread" => {
                aggregation.thread = Some(ThreadSummary {
                    latest: row.event_id.clone(),
                    count: row.reply_count,
                    participated: row.participated != 0 || row.parent_sender == user,
                })
            }
            _ => {}
        }
    }
    for aggregation in out.values_mut() {
        aggregation.references.sort();
    }
    out
}

/// spec: "Validity of replacement events", and a redacted original bundles
/// no edit ("Server-side aggregation of `m.replace` relationships").
fn is_valid_edit(row: &BundleRow) -> bool {
    row.can_replace != 0
        && row.sender == row.parent_sender
        && row.event_type == row.parent_type
        && row.parent_state_key.is_none()
        && row.parent_rel_type.as_deref() != Some("m.replace")
        && row.parent_redacted_by.is_none()
}

// ------------------------------------------------------------ /relations

/// What `/relations` asks for.
pub struct RelationsRequest<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub dir: Direction,
    pub limit: Option<UInt>,
    pub recurse: bool,
}

pub struct RelationsPage {
    pub chunk: Vec<ClientEvent>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub recursion_depth: Option<UInt>,
}

/// spec: "Relationships API": the children of a parent the user may see,
/// `M_NOT_FOUND` for a parent they may not.
pub async fn relations(
    server: &Server,
    room_id: &RoomId,
    viewer: ViewerId<'_>,
    parent_id: &EventId,
    req: RelationsRequest<'_>,
) -> Result<RelationsPage> {
    let limit = page_limit(req.limit)?;
    let sight = Viewer::load(server, room_id, viewer.0).await?;
    visible_event(server, room_id, &sight, parent_id).await?;
    let ignored = crate::service::ignore::ignored_by(server, viewer.0).await?;
    let from = req.from.map(SyncToken::parse).transpose()?.map(|t| t.pos);
    let to = req.to.map(SyncToken::parse).transpose()?.map(|t| t.pos);
    let mut cursor = match (from, req.dir) {
        (Some(pos), _) => pos,
        (None, Direction::Backward) => i64::MAX,
        (None, Direction::Forward) => 0,
    };
    let mut query = RelatedQuery {
        room_id: room_id.as_str(),
        parent_id: parent_id.as_str(),
        rel_type: req.rel_type,
        event_type: req.event_type,
        depth: if req.recurse { RECURSION_DEPTH } else { 1 },
        after: 0,
        upto: 0,
        newest_first: req.dir == Direction::Backward,
        limit: limit as i64 + 1,
    };
    let mut chunk = Vec::new();
    let mut more = true;
    while chunk.len() < limit && more {
        (query.after, query.upto) = match req.dir {
            Direction::Backward => (to.unwrap_or(0), cursor),
            Direction::Forward => (cursor, to.unwrap_or(i64::MAX)),
        };
        let batch = server.db.related_events(&query).await?;
        more = batch.len() as i64 == query.limit;
        let total = batch.len();
        for (i, event) in batch.into_iter().enumerate() {
            cursor = match req.dir {
                Direction::Backward => event.stream_ordering - 1,
                Direction::Forward => event.stream_ordering,
            };
            if sight.can_see(&event) && !ignored.contains(&event.sender) {
                chunk.push(event);
                if chunk.len() == limit {
                    more |= i + 1 < total;
                    break;
                }
            }
        }
    }
    Ok(RelationsPage {
        chunk: format_events(server, &chunk, Some(viewer), Format::Client).await?,
        next_batch: more.then(|| SyncToken::at(cursor).to_string()),
        // The same position read the other way is the page before this one.
        prev_batch: from.map(|pos| SyncToken::at(pos).to_string()),
        recursion_depth: req.recurse.then(|| UInt::from(RECURSION_DEPTH as u32)),
    })
}

/// A client's `limit`, defaulted and capped; zero asks for nothing and is refused.
fn page_limit(limit: Option<UInt>) -> Result<usize> {
    match limit.map(u64::from) {
        None => Ok(DEFAULT_LIMIT as usize),
        Some(0) => Err(Error::invalid_param("limit must be greater than zero")),
        Some(n) => Ok(n.min(MAX_LIMIT) as usize),
    }
}

// ------------------------------------------------------------ /threads

pub struct ThreadsPage {
    pub chunk: Vec<ClientEvent>,
    pub next_batch: Option<String>,
}

/// spec: "Querying threads in a room": the thread roots the user may see,
/// most recently active first.
pub async fn threads(
    server: &Server,
    room_id: &RoomId,
    viewer: ViewerId<'_>,
    include: &IncludeThreads,
    from: Option<&str>,
    limit: Option<UInt>,
) -> Result<ThreadsPage> {
    let limit = page_limit(limit)?;
    let participant = match include {
        IncludeThreads::All => None,
        IncludeThreads::Participated => Some(viewer.0.as_str()),
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown include value {}",
                other.as_str()
            )));
        }
    };
    super::require_room(server, room_id).await?;
    let sight = Viewer::load(server, room_id, viewer.0).await?;
    if !sight.ever_member() && !sight.can_see_anything() {
        return Err(Error::forbidden("You are not allowed to view this room"));
    }
    let mut cursor = match from {
        Some(token) => SyncToken::parse(token)?.pos,
        None => i64::MAX,
    };
    let batch_size = limit as i64 + 1;
    let mut chunk = Vec::new();
    let mut more = true;
    while chunk.len() < limit && more {
        let batch = server
            .db
            .thread_roots(room_id.as_str(), cursor, participant, batch_size)
            .await?;
        more = batch.len() as i64 == batch_size;
        let total = batch.len();
        for (i, thread) in batch.into_iter().enumerate() {
            // Threads are ordered by their newest reply, which is one event:
            // no two share a position.
            cursor = thread.activity - 1;
            if sight.can_see(&thread.root) {
                chunk.push(thread.root);
                if chunk.len() == limit {
                    more |= i + 1 < total;
                    break;
                }
            }
        }
    }
    Ok(ThreadsPage {
        chunk: format_events(server, &chunk, Some(viewer), Format::Client).await?,
        next_batch: more.then(|| SyncToken::at(cursor).to_string()),
    })
}

// ------------------------------------------------------------ sending

/// What a server refuses when a client sends an event with a relation:
/// spec, "Avoiding duplicate annotations" and "Validation of `m.thread`
/// relationships". Other invalid relations are accepted and ignored.
pub async fn check_new(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    event_type: &str,
    content: &Value,
    txn: &Txn<'_>,
) -> Result<()> {
    let relation = &content["m.relates_to"];
    let (Some(rel_type), Some(parent)) =
        (relation["rel_type"].as_str(), relation["event_id"].as_str())
    else {
        return Ok(());
    };
    match (rel_type, relation["key"].as_str()) {
        ("m.annotation", Some(key)) => {
            let annotation = Annotation {
                parent,
                sender: sender.as_str(),
                event_type,
                key,
            };
            check_annotation(server, room_id, annotation, txn).await
        }
        ("m.thread", _) => check_thread_root(server, room_id, parent).await,
        _ => Ok(()),
    }
}

struct Annotation<'a> {
    parent: &'a str,
    sender: &'a str,
    event_type: &'a str,
    key: &'a str,
}

async fn check_annotation(
    server: &Server,
    room_id: &RoomId,
    a: Annotation<'_>,
    txn: &Txn<'_>,
) -> Result<()> {
    let sent = server
        .db
        .annotations_by(room_id.as_str(), a.parent, a.sender, a.event_type, a.key)
        .await?;
    // A retry of the same transaction is answered with its first event, not refused.
    let retry = |(device, id): &(Option<String>, Option<String>)| {
        device.as_deref() == Some(txn.device_id) && id.as_deref() == Some(txn.txn_id)
    };
    if sent.iter().any(|s| !retry(s)) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_DUPLICATE_ANNOTATION",
            "You already sent this annotation",
        ));
    }
    Ok(())
}

async fn check_thread_root(server: &Server, room_id: &RoomId, root: &str) -> Result<()> {
    let relation = server.db.relation_type(room_id.as_str(), root).await?;
    if relation.is_some() {
        // spec: no code is defined for this; M_UNKNOWN with a 400.
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Cannot start a thread from an event with a relation",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rel_type: &str, event_id: &str, ts: i64) -> BundleRow {
        BundleRow {
            parent_id: "$parent".into(),
            rel_type: rel_type.into(),
            event_id: event_id.into(),
            room_id: "!r:x".into(),
            sender: "@a:x".into(),
            event_type: "m.room.message".into(),
            origin_server_ts: ts,
            stream_ordering: ts,
            can_replace: 1,
            parent_sender: "@a:x".into(),
            parent_type: "m.room.message".into(),
            parent_room: "!r:x".into(),
            parent_state_key: None,
            parent_redacted_by: None,
            parent_rel_type: None,
            reply_count: 0,
            participated: 0,
        }
    }

    fn edit_of(rows: &[BundleRow]) -> Option<String> {
        aggregate(rows, "@viewer:x")
            .remove("$parent")
            .and_then(|a| a.replace)
            .map(|(_, id)| id)
    }

    #[test]
    fn the_newest_edit_wins_and_ties_go_to_the_largest_id() {
        let rows = [
            row("m.replace", "$b", 5),
            row("m.replace", "$z", 3),
            row("m.replace", "$a", 5),
        ];
        assert_eq!(edit_of(&rows).as_deref(), Some("$b"));
    }

    #[test]
    fn invalid_edits_are_ignored() {
        let mut other_sender = row("m.replace", "$1", 9);
        other_sender.sender = "@mallory:x".into();
        let mut other_type = row("m.replace", "$2", 9);
        other_type.event_type = "m.sticker".into();
        let mut other_room = row("m.replace", "$3", 9);
        other_room.room_id = "!elsewhere:x".into();
        let mut no_new_content = row("m.replace", "$4", 9);
        no_new_content.can_replace = 0;
        let mut of_an_edit = row("m.replace", "$5", 9);
        of_an_edit.parent_rel_type = Some("m.replace".into());
        let mut of_state = row("m.replace", "$6", 9);
        of_state.parent_state_key = Some(String::new());
        let valid = row("m.replace", "$old", 1);
        let rows = [
            other_sender,
            other_type,
            other_room,
            no_new_content,
            of_an_edit,
            of_state,
            valid,
        ];
        assert_eq!(edit_of(&rows).as_deref(), Some("$old"));
    }

    #[test]
    fn a_redacted_original_bundles_no_edit() {
        let mut edit = row("m.replace", "$e", 1);
        edit.parent_redacted_by = Some("$redaction".into());
        assert_eq!(edit_of(&[edit]), None);
    }

    #[test]
    fn thread_participation_counts_the_root_sender() {
        let mut thread = row("m.thread", "$latest", 4);
        thread.reply_count = 2;
        thread.parent_sender = "@viewer:x".into();
        let summary = aggregate(&[thread], "@viewer:x")
            .remove("$parent")
            .and_then(|a| a.thread);
        assert_eq!(
            summary,
            Some(ThreadSummary {
                latest: "$latest".into(),
                count: 2,
                participated: true
            })
        );
    }

    #[test]
    fn references_are_listed_oldest_first() {
        let rows = [row("m.reference", "$2", 7), row("m.reference", "$1", 3)];
        let refs = aggregate(&rows, "@viewer:x").remove("$parent").unwrap();
        assert_eq!(refs.references, vec![(3, "$1".into()), (7, "$2".into())]);
    }

    #[test]
    fn limits_are_defaulted_capped_and_never_zero() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT as usize);
        assert_eq!(page_limit(Some(UInt::from(5u32))).unwrap(), 5);
        assert_eq!(
            page_limit(Some(UInt::from(100_000u32))).unwrap(),
            MAX_LIMIT as usize
        );
        assert!(page_limit(Some(UInt::from(0u32))).is_err());
    }
}
