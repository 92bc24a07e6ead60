//! Server-side search: spec client-server API, "Server Side Search".
//!
//! The `room_events` category over the store's full-text index: every word of
//! the search term must start a word of an event's text (`content.body`,
//! `content.name` or `content.topic`). Hits come from the index a batch at a
//! time, in the order asked for, from the rooms the user has a membership in;
//! history visibility then decides event by event what the user may see, as
//! for `/messages`. Encrypted events are never indexed: the server cannot
//! read them.
//!
//! A `next_batch` token holds where the page ended, the stream position the
//! first page was read at (events sent later do not slip in between pages)
//! and the group it is confined to, so paging returns each result once. With
//! `rank` on SQLite one caveat remains: bm25 weighs a word by its rarity in
//! the whole index, so events indexed between two pages shift ranks. The
//! next page starts from the rank the last hit has *now*, which keeps the
//! order of hits that shifted alike (PostgreSQL's `ts_rank` looks at each
//! event alone and never shifts).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::{
        Direction,
        client::{
            filter::RoomEventFilter,
            search::search_events::v3::{
                Criteria, EventContext, EventContextResult, GroupingKey, Groupings, OrderBy,
                ResultGroup, ResultGroupMap, ResultGroupMapsByGroupingKey, ResultRoomEvents,
                SearchKeys, SearchResult, UserProfile,
            },
        },
    },
    events::AnyStateEvent,
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    filter,
    rooms::{
        events::{ClientEvent, Format, format_events},
        messages::{self, PageRequest},
        state,
        visibility::Viewer,
    },
    sync::SyncToken,
};
use crate::{
    Error, Result, Server,
    store::{
        events::StoredEvent,
        search::{EventSearch, SearchCursor, SearchHit, SearchOrder},
    },
};

const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
const MAX_CONTEXT: u64 = 50;
/// Words of a search term beyond these are ignored.
const MAX_TERMS: usize = 16;
/// Index rows read per query while filling a page.
const BATCH: i64 = 100;
const ALL_TYPES: [&str; 3] = ["m.room.message", "m.room.name", "m.room.topic"];

/// Who searches: the user, and the device whose transaction ids are echoed.
#[derive(Clone, Copy)]
pub struct Searcher<'a> {
    pub user: &'a UserId,
    pub device: &'a str,
}

/// spec: `POST /search`, category `room_events`.
pub async fn room_events(
    server: &Server,
    who: Searcher<'_>,
    criteria: &Criteria,
    next_batch: Option<&str>,
) -> Result<ResultRoomEvents> {
    let plan = Plan::new(criteria, next_batch)?;
    let mut out = ResultRoomEvents::new();
    out.count = Some(UInt::MIN);
    let rooms = rooms(server, who.user, &criteria.filter, plan.batch.as_ref()).await?;
    if plan.terms.is_empty() || rooms.is_empty() {
        return Ok(out);
    }
    let upto = match &plan.batch {
        Some(batch) => batch.upto,
        None => server.db.stream_position().await?,
    };
    let search = EventSearch {
        terms: &plan.terms,
        rooms: &rooms,
        event_types: &plan.event_types,
        upto,
        order: plan.order,
    };
    let (hits, more) = find(server, who.user, &plan, &search).await?;
    // The count is exact when one page holds every result.
    let count = match (&plan.batch, more) {
        (None, false) => hits.len() as u64,
        _ => server.db.count_search_events(&search).await?,
    };
    out.count = Some(UInt::new_saturating(count));
    let next = |room: Option<&str>, sender: Option<&str>| -> Result<Option<String>> {
        match hits.last() {
            Some(last) if more => plan.next_batch(last, upto, room, sender).map(Some),
            _ => Ok(None),
        }
    };
    out.next_batch = next(None, None)?;
    out.groups = groups(&plan, &hits, next)?;
    out.highlights = highlights(&plan.terms, &hits);
    if criteria.include_state == Some(true) {
        out.state = room_states(server, who.user, &hits).await?;
    }
    out.results = results(server, who, &criteria.event_context, &hits).await?;
    Ok(out)
}

/// The request, checked and read.
struct Plan<'a> {
    filter: &'a RoomEventFilter,
    terms: Vec<String>,
    event_types: Vec<&'static str>,
    order: SearchOrder,
    limit: usize,
    group_by: Vec<GroupingKey>,
    batch: Option<Batch>,
}

impl<'a> Plan<'a> {
    fn new(criteria: &'a Criteria, next_batch: Option<&str>) -> Result<Self> {
        let order = order(criteria.order_by.as_ref())?;
        let batch = next_batch.map(Batch::decode).transpose()?;
        if batch
            .as_ref()
            .is_some_and(|b| b.recent != (order == SearchOrder::Recent))
        {
            return Err(Error::invalid_param(
                "next_batch belongs to a search in another order",
            ));
        }
        let limit = criteria
            .filter
            .limit
            .map_or(DEFAULT_LIMIT, u64::from)
            .clamp(1, MAX_LIMIT) as usize;
        Ok(Self {
            filter: &criteria.filter,
            terms: terms(&criteria.search_term),
            event_types: event_types(criteria.keys.as_deref())?,
            order,
            limit,
            group_by: group_keys(&criteria.groupings)?,
            batch,
        })
    }

    /// Whether a hit passes the filter and the group a token confines the search to.
    fn accepts(&self, event: &StoredEvent) -> bool {
        let sender = self.batch.as_ref().and_then(|b| b.sender.as_ref());
        filter::matches(self.filter, event) && sender.is_none_or(|s| s.as_str() == event.sender)
    }

    /// The token for the results after `last`, within `room` or `sender`
    /// when given (and within this search's own group).
    fn next_batch(
        &self,
        last: &SearchHit,
        upto: i64,
        room: Option<&str>,
        sender: Option<&str>,
    ) -> Result<String> {
        let inherited = self.batch.as_ref();
        let batch = Batch {
            recent: self.order == SearchOrder::Recent,
            upto,
            rank: last.rank.to_bits(),
            stream_ordering: last.event.stream_ordering,
            room: match room {
                Some(r) => Some(r.try_into().map_err(Error::internal)?),
                None => inherited.and_then(|b| b.room.clone()),
            },
            sender: match sender {
                Some(s) => Some(s.try_into().map_err(Error::internal)?),
                None => inherited.and_then(|b| b.sender.clone()),
            },
        };
        batch.encode()
    }
}

fn order(order_by: Option<&OrderBy>) -> Result<SearchOrder> {
    match order_by {
        None | Some(OrderBy::Rank) => Ok(SearchOrder::Rank),
        Some(OrderBy::Recent) => Ok(SearchOrder::Recent),
        Some(other) => Err(Error::invalid_param(format!(
            "Unknown order_by {}",
            other.as_str()
        ))),
    }
}

fn group_keys(groupings: &Groupings) -> Result<Vec<GroupingKey>> {
    let mut keys = Vec::new();
    for key in groupings.group_by.iter().filter_map(|g| g.key.clone()) {
        if !matches!(key, GroupingKey::RoomId | GroupingKey::Sender) {
            return Err(Error::invalid_param(format!(
                "Unknown grouping key {}",
                key.as_str()
            )));
        }
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The words of a search term: runs of letters and digits, lower-cased.
fn terms(search_term: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in search_term.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if !word.is_empty() && !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms.truncate(MAX_TERMS);
    terms
}

/// The event types holding the keys asked for; all of them by default.
fn event_types(keys: Option<&[SearchKeys]>) -> Result<Vec<&'static str>> {
    let Some(keys) = keys.filter(|k| !k.is_empty()) else {
        return Ok(ALL_TYPES.to_vec());
    };
    let mut types = keys
        .iter()
        .map(|key| match key {
            SearchKeys::ContentBody => Ok("m.room.message"),
            SearchKeys::ContentName => Ok("m.room.name"),
            SearchKeys::ContentTopic => Ok("m.room.topic"),
            other => Err(Error::invalid_param(format!(
                "Unknown search key {}",
                other.as_str()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    types.sort_unstable();
    types.dedup();
    Ok(types)
}

/// Where a page ended, opaque to clients: JSON in URL-safe base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Batch {
    #[serde(rename = "o")]
    recent: bool,
    #[serde(rename = "u")]
    upto: i64,
    /// The bits of the last rank, so it compares equal to itself in SQL.
    #[serde(rename = "r")]
    rank: u64,
    #[serde(rename = "s")]
    stream_ordering: i64,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    room: Option<OwnedRoomId>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    sender: Option<OwnedUserId>,
}

impl Batch {
    fn encode(&self) -> Result<String> {
        Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(self)?))
    }

    fn decode(token: &str) -> Result<Self> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| Error::invalid_param("Invalid next_batch token"))
    }

    fn cursor(&self) -> SearchCursor {
        SearchCursor {
            rank: f64::from_bits(self.rank),
            stream_ordering: self.stream_ordering,
        }
    }
}

/// The rooms the user has a membership in, as the filter and the token's group narrow them.
async fn rooms(
    server: &Server,
    user: &UserId,
    filter: &RoomEventFilter,
    batch: Option<&Batch>,
) -> Result<Vec<String>> {
    let group = batch.and_then(|b| b.room.as_ref());
    let mut rooms: Vec<String> = server
        .db
        .memberships_of(user.as_str())
        .await?
        .into_iter()
        .map(|(room, _, _)| room)
        .collect();
    rooms.retain(|room| {
        filter
            .rooms
            .as_ref()
            .is_none_or(|only| only.iter().any(|r| r.as_str() == room))
            && !filter.not_rooms.iter().any(|r| r.as_str() == room)
            && group.is_none_or(|g| g.as_str() == room)
    });
    Ok(rooms)
}

/// The next page of hits the user may see, and whether more follow it.
async fn find(
    server: &Server,
    user: &UserId,
    plan: &Plan<'_>,
    search: &EventSearch<'_>,
) -> Result<(Vec<SearchHit>, bool)> {
    let mut viewers: HashMap<String, Viewer> = HashMap::new();
    let mut cursor = plan.batch.as_ref().map(Batch::cursor);
    if let Some(c) = cursor.as_mut().filter(|_| plan.order == SearchOrder::Rank)
        && let Some(rank) = server
            .db
            .search_rank_of(&plan.terms, c.stream_ordering)
            .await?
    {
        c.rank = rank;
    }
    let mut found = Vec::new();
    loop {
        let batch = server.db.search_events(search, cursor, BATCH).await?;
        let exhausted = (batch.len() as i64) < BATCH;
        for hit in batch {
            cursor = Some(hit.cursor());
            if !plan.accepts(&hit.event) || !can_see(server, user, &mut viewers, &hit.event).await?
            {
                continue;
            }
            if found.len() == plan.limit {
                return Ok((found, true));
            }
            found.push(hit);
        }
        if exhausted {
            return Ok((found, false));
        }
    }
}

async fn can_see(
    server: &Server,
    user: &UserId,
    viewers: &mut HashMap<String, Viewer>,
    event: &StoredEvent,
) -> Result<bool> {
    if !viewers.contains_key(&event.room_id) {
        let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
        let viewer = Viewer::load(server, &room_id, user).await?;
        viewers.insert(event.room_id.clone(), viewer);
    }
    Ok(viewers[&event.room_id].can_see(event))
}

/// The groups asked for, each with its results in page order and, when more
/// results follow the page, a token for more of that group alone.
fn groups(
    plan: &Plan<'_>,
    hits: &[SearchHit],
    next: impl Fn(Option<&str>, Option<&str>) -> Result<Option<String>>,
) -> Result<ResultGroupMapsByGroupingKey> {
    let mut maps = ResultGroupMapsByGroupingKey::new();
    for key in &plan.group_by {
        let map = match key {
            GroupingKey::RoomId => ResultGroupMap::RoomId(group(
                hits,
                |e| e.room_id.as_str(),
                |room| next(Some(room), None),
            )?),
            _ => ResultGroupMap::Sender(group(
                hits,
                |e| e.sender.as_str(),
                |sender| next(None, Some(sender)),
            )?),
        };
        maps.insert(map);
    }
    Ok(maps)
}

fn group<K>(
    hits: &[SearchHit],
    key: impl Fn(&StoredEvent) -> &str,
    next: impl Fn(&str) -> Result<Option<String>>,
) -> Result<BTreeMap<K, ResultGroup>>
where
    K: Ord + for<'k> TryFrom<&'k str>,
{
    let mut by_value: Vec<(&str, ResultGroup)> = Vec::new();
    for hit in hits {
        let value = key(&hit.event);
        let event_id =
            OwnedEventId::try_from(hit.event.event_id.as_str()).map_err(Error::internal)?;
        match by_value.iter_mut().find(|(v, _)| *v == value) {
            Some((_, group)) => group.results.push(event_id),
            None => {
                let mut group = ResultGroup::new();
                group.order = Some(UInt::new_saturating(by_value.len() as u64 + 1));
                group.results.push(event_id);
                by_value.push((value, group));
            }
        }
    }
    let mut groups = BTreeMap::new();
    for (value, mut group) in by_value {
        group.next_batch = next(value)?;
        let key =
            K::try_from(value).map_err(|_| Error::internal(format_args!("stored id {value}")))?;
        groups.insert(key, group);
    }
    Ok(groups)
}

/// The words to highlight: the terms, and the words of the results they matched.
fn highlights(terms: &[String], hits: &[SearchHit]) -> Vec<String> {
    let mut words: BTreeSet<String> = terms.iter().cloned().collect();
    for hit in hits {
        for word in searchable_text(&hit.event).split(|c: char| !c.is_alphanumeric()) {
            let word = word.to_lowercase();
            if !word.is_empty() && terms.iter().any(|t| word.starts_with(t.as_str())) {
                words.insert(word);
            }
        }
    }
    words.into_iter().collect()
}

/// The text the index holds for an event (see `migrations/*/0003_search.sql`).
fn searchable_text(event: &StoredEvent) -> String {
    let Ok(pdu) = serde_json::from_str::<Value>(&event.pdu) else {
        return String::new();
    };
    let content = &pdu["content"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match event.event_type.as_str() {
        "m.room.message" => text(&content["body"]),
        "m.room.name" => text(&content["name"]),
        _ => {
            let plain = content["m.topic"]["m.text"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["mimetype"].as_str().unwrap_or("text/plain") == "text/plain")
                .map(|t| text(&t["body"]))
                .unwrap_or_default();
            format!("{} {plain}", text(&content["topic"]))
        }
    }
}

async fn results(
    server: &Server,
    who: Searcher<'_>,
    context: &EventContext,
    hits: &[SearchHit],
) -> Result<Vec<SearchResult>> {
    let events: Vec<StoredEvent> = hits.iter().map(|h| h.event.clone()).collect();
    let formatted = format_events(
        server,
        &events,
        Some((who.user, who.device)),
        Format::Client,
    )
    .await?;
    let mut results = Vec::with_capacity(hits.len());
    for (hit, event) in hits.iter().zip(formatted) {
        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        result.result = Some(Raw::from_json(event));
        result.context = event_context(server, who, &hit.event, context).await?;
        results.push(result);
    }
    Ok(results)
}

/// The events around a result, as `/context` gives them, and the profiles
/// of their senders as they were at the result.
async fn event_context(
    server: &Server,
    who: Searcher<'_>,
    event: &StoredEvent,
    asked: &EventContext,
) -> Result<EventContextResult> {
    let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
    let unfiltered = RoomEventFilter::default();
    let page = |from: String, dir: Direction, limit: UInt| {
        let room_id = room_id.clone();
        let filter = &unfiltered;
        async move {
            let request = PageRequest {
                from: Some(&from),
                to: None,
                dir,
                limit: u64::from(limit).min(MAX_CONTEXT) as usize,
                filter,
            };
            messages::messages(server, &room_id, who.user, who.device, request).await
        }
    };
    let before_token = SyncToken::at(event.stream_ordering - 1);
    let after_token = SyncToken::at(event.stream_ordering);
    let before = page(
        before_token.to_string(),
        Direction::Backward,
        asked.before_limit,
    )
    .await?;
    let after = page(
        after_token.to_string(),
        Direction::Forward,
        asked.after_limit,
    )
    .await?;
    let mut context = EventContextResult::new();
    if asked.include_profile {
        let senders = before.chunk.iter().chain(&after.chunk).filter_map(sender);
        context.profile_info = profiles(server, event, senders).await?;
    }
    context.start = Some(before.end.unwrap_or(before.start));
    context.end = Some(after.end.unwrap_or(after.start));
    context.events_before = before.chunk.into_iter().map(Raw::from_json).collect();
    context.events_after = after.chunk.into_iter().map(Raw::from_json).collect();
    Ok(context)
}

fn sender(event: &ClientEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct Sender {
        sender: String,
    }
    serde_json::from_str::<Sender>(event.get())
        .ok()
        .map(|s| s.sender)
}

/// Display names and avatars from the member events in force just before `event`.
async fn profiles(
    server: &Server,
    event: &StoredEvent,
    others: impl Iterator<Item = String>,
) -> Result<BTreeMap<OwnedUserId, UserProfile>> {
    let Some(group) = event.state_group_before else {
        return Ok(BTreeMap::new());
    };
    let mut senders: BTreeSet<String> = others.collect();
    senders.insert(event.sender.clone());
    let senders: Vec<&str> = senders.iter().map(String::as_str).collect();
    let mut profiles = BTreeMap::new();
    for (user, pdu) in server.db.member_events_at(group, &senders).await? {
        let content = serde_json::from_str::<Value>(&pdu)?["content"].take();
        let mut profile = UserProfile::new();
        profile.displayname = content["displayname"].as_str().map(str::to_owned);
        profile.avatar_url = content["avatar_url"].as_str().map(Into::into);
        if let Ok(user) = OwnedUserId::try_from(user) {
            profiles.insert(user, profile);
        }
    }
    Ok(profiles)
}

/// The state of each room with a result, as far as the user may read it.
async fn room_states(
    server: &Server,
    user: &UserId,
    hits: &[SearchHit],
) -> Result<BTreeMap<OwnedRoomId, Vec<Raw<AnyStateEvent>>>> {
    let rooms: BTreeSet<&str> = hits.iter().map(|h| h.event.room_id.as_str()).collect();
    let mut states = BTreeMap::new();
    for room in rooms {
        let room_id = OwnedRoomId::try_from(room).map_err(Error::internal)?;
        match state::state_events(server, &room_id, user).await {
            Ok(events) => {
                states.insert(room_id, events.into_iter().map(Raw::from_json).collect());
            }
            // An invited user may see history but not the room's state.
            Err(e) if e.errcode == "M_FORBIDDEN" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_lower_cased_words() {
        assert_eq!(
            terms("Martians AND men, martians!"),
            ["martians", "and", "men"]
        );
        assert_eq!(terms("don't \"quote\" *"), ["don", "t", "quote"]);
        assert!(terms(" -*- ").is_empty());
    }

    #[test]
    fn keys_map_to_event_types() {
        assert_eq!(event_types(None).unwrap(), ALL_TYPES);
        assert_eq!(event_types(Some(&[])).unwrap(), ALL_TYPES);
        let keys = [SearchKeys::ContentTopic, SearchKeys::ContentBody];
        assert_eq!(
            event_types(Some(&keys)).unwrap(),
            ["m.room.message", "m.room.topic"]
        );
        let unknown = [SearchKeys::from("content.nope")];
        assert_eq!(
            event_types(Some(&unknown)).unwrap_err().errcode,
            "M_INVALID_PARAM"
        );
    }

    #[test]
    fn batch_tokens_round_trip_and_reject_garbage() {
        let batch = Batch {
            recent: false,
            upto: 42,
            rank: 0.1_f64.to_bits(),
            stream_ordering: 7,
            room: Some("!r:x".try_into().unwrap()),
            sender: None,
        };
        let token = batch.encode().unwrap();
        assert_eq!(Batch::decode(&token).unwrap(), batch);
        assert_eq!(Batch::decode(&token).unwrap().cursor().rank, 0.1);
        for bad in ["", "!!", "e30", &URL_SAFE_NO_PAD.encode(b"{\"o\":1}")] {
            assert_eq!(Batch::decode(bad).unwrap_err().errcode, "M_INVALID_PARAM");
        }
    }

    #[test]
    fn topics_are_searched_with_their_plain_text() {
        let event = StoredEvent {
            stream_ordering: 1,
            event_id: "$e".into(),
            room_id: "!r:x".into(),
            event_type: "m.room.topic".into(),
            state_key: Some(String::new()),
            sender: "@a:x".into(),
            pdu: r#"{"content":{"topic":"Rust","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>x</b>"},{"body":"Rust crabs"}]}}}"#.into(),
            unsigned_extra: None,
            txn_device_id: None,
            txn_id: None,
            redacted_by: None,
            state_group_before: None,
            related: None,
        };
        assert_eq!(searchable_text(&event), "Rust Rust crabs");
        let hit = SearchHit { event, rank: 1.0 };
        assert_eq!(highlights(&["cra".into()], &[hit]), ["cra", "crabs"]);
    }
}
