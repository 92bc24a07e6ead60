//! `/sync`: spec client-server API, "Syncing".
//!
//! A token `s<N>_<T>_<P>_<D>` means "everything up to position N of the
//! main stream (events, account data, receipts, device lists), serial T of
//! typing, position P of presence and position D of the device's to-device
//! queue has been delivered". D trails N only while a device has more
//! to-device messages than one response carries; tokens without it mean
//! D = N. Main stream positions are global and persisted, so a token stays
//! valid across restarts, and an incremental sync returns exactly the items
//! in `(since, now]`: each once. Typing and presence positions are not
//! persisted; they start from the clock (see `typing` and `presence`), so
//! they too keep growing across restarts.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{
        filter::{FilterDefinition, RoomEventFilter},
        sync::sync_events::v3::{
            InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom, Response,
            RoomAccountData, State, Timeline,
        },
    },
    events::{AnyRoomAccountDataEvent, AnySyncEphemeralRoomEvent},
    presence::PresenceState,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{
    e2ee::{device_lists, keys},
    filter, ignore, presence, push,
    receipts::{self, Delivery},
    rooms::events::{Format, format_events, format_with},
    to_device,
};
use crate::{
    Error, Result, Server,
    api::AuthedUser,
    store::{
        events::{MemberSummary, StoredEvent},
        journal::Changes,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    /// Main stream position.
    pub pos: i64,
    pub typing: i64,
    pub presence: i64,
    /// Position of the last to-device message delivered.
    pub to_device: i64,
}

impl SyncToken {
    /// A main stream position alone, as pagination tokens are.
    pub fn at(pos: i64) -> Self {
        Self {
            pos,
            typing: 0,
            presence: 0,
            to_device: pos,
        }
    }

    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param("Invalid pagination or sync token");
        let mut parts = token.strip_prefix('s').ok_or_else(invalid)?.split('_');
        // A position may be negative: history fetched from other servers
        // sorts before everything else (`/messages` tokens point into it).
        let pos = parts
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(invalid)?;
        let mut next = |required: bool| match parts.next() {
            None if !required => Ok(0),
            part => part
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(invalid),
        };
        let typing = next(false)?;
        let presence = next(false)?;
        let to_device = match parts.next() {
            None => pos,
            Some(part) => part
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=pos).contains(n))
                .ok_or_else(invalid)?,
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self {
            pos,
            typing,
            presence,
            to_device,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.typing, self.presence, self.to_device == self.pos) {
            (0, 0, true) => write!(f, "s{}", self.pos),
            (_, _, true) => write!(f, "s{}_{}_{}", self.pos, self.typing, self.presence),
            _ => write!(
                f,
                "s{}_{}_{}_{}",
                self.pos, self.typing, self.presence, self.to_device
            ),
        }
    }
}

pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub filter: FilterDefinition,
    pub timeout: Duration,
    pub set_presence: PresenceState,
}

/// Longest a long-poll is held, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_TIMELINE_LIMIT: usize = 10;

pub async fn sync(server: &Arc<Server>, user: &AuthedUser, req: SyncRequest) -> Result<Response> {
    let mut online = presence::syncing(server, &user.user_id, &req.set_presence).await?;
    // Subscribe before reading, so a commit between the read and the wait still wakes us.
    let mut wake = server.notifier.subscribe(user.user_id.as_str());
    let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let mut last_round = false;
    loop {
        let upto = current_token(server, req.since).await?;
        // A client that is up to date long-polls again as soon as it has a
        // response: when no stream has moved since its token there is
        // nothing to build yet, only to wait for.
        let caught_up = !last_round && !req.full_state && req.since == Some(upto);
        if !caught_up {
            let (response, deliveries, has_news) = build(server, user, &req, upto).await?;
            let done = last_round
                || req.since.is_none()
                || req.full_state
                || has_news
                || req.since.is_some_and(|s| s.pos > upto.pos);
            if done {
                if server.config.delivery_receipts {
                    for delivery in deliveries {
                        server.deliveries.record(delivery);
                    }
                }
                return Ok(response);
            }
        }
        // Others hear that the user came online once this sync has had its
        // say, not while it is being built.
        if let Some(online) = online.as_mut() {
            online.announce();
        }
        tokio::select! {
            changed = wake.changed() => last_round = changed.is_err(),
            () = tokio::time::sleep_until(deadline) => last_round = true,
            () = server.notifier.shutting_down() => last_round = true,
        }
    }
}

/// Where every stream stands now, or at least past `since`.
async fn current_token(server: &Server, since: Option<SyncToken>) -> Result<SyncToken> {
    let pos = server.db.stream_position_past(since.map(|s| s.pos));
    let (pos, presence) = tokio::try_join!(pos, server.presence.position())?;
    Ok(SyncToken {
        pos,
        typing: server.typing.position(),
        presence,
        to_device: pos,
    })
}

async fn build(
    server: &Server,
    user: &AuthedUser,
    req: &SyncRequest,
    upto_all: SyncToken,
) -> Result<(Response, Vec<Delivery>, bool)> {
    let upto = upto_all.pos;
    let since = req.since.map(|s| s.pos);
    let mut response = Response::new(upto_all.to_string());
    // What moved since the token, when this process knows: the kinds that
    // did not are not read (`None`: read everything).
    let moved = req
        .since
        .and_then(|s| server.db.changes_between(s.pos.min(s.to_device), upto));
    let account_data = async {
        match (&moved, since) {
            (Some(moved), _) if !moved.account_data_users.contains(user.user_id.as_str()) => {
                Ok(Vec::new())
            }
            (_, since) => {
                let user_id = user.user_id.as_str();
                server
                    .db
                    .account_data_since(user_id, since.unwrap_or(0))
                    .await
            }
        }
    };
    // The user's rooms. The sections that do not hang on the rooms' account
    // data or ephemeral events are read at once, beside every other read:
    // on PostgreSQL each read is a round trip, and a sync's latency is the
    // length of its chain of them.
    let rooms = async {
        let memberships = server
            .db
            .memberships_at(user.user_id.as_str(), upto)
            .await?;
        tokio::try_join!(
            ephemeral_events(server, user, req, &memberships, upto_all, moved.as_ref()),
            Sections::read(server, user, req, upto, &memberships, moved.as_ref()),
        )
    };
    let ((ephemeral, mut sections), presence, account_data, encryption) = tokio::try_join!(
        rooms,
        presence::for_sync(
            server,
            &user.user_id,
            req.since.map(|s| s.presence),
            upto_all.presence,
            &req.filter.presence,
        ),
        account_data,
        encryption(server, user, req, upto_all, moved.as_ref()),
    )?;
    response.presence.events = presence;
    let mut room_account_data: HashMap<String, Vec<Raw<_>>> = HashMap::new();
    for row in &account_data {
        let event = json!({ "type": row.data_type, "content": serde_json::from_str::<Value>(&row.content)? });
        if row.room_id.is_empty() {
            response.account_data.events.push(raw(&event)?);
        } else {
            room_account_data
                .entry(row.room_id.clone())
                .or_default()
                .push(raw(&event)?);
        }
    }
    sections
        .read_quiet(server, user, req, upto, room_account_data, ephemeral)
        .await?;
    // Whether the response says anything that should end a long-poll.
    let mut news = !response.account_data.is_empty() || !response.presence.is_empty();
    news |= sections.put_into(&mut response);
    news |= encryption.add_to(&mut response);
    Ok((response, sections.deliveries, news))
}

/// The rooms' sections of a response, read in two rounds. First, beside
/// the sync's other reads, every room whose section does not depend on its
/// account data and ephemeral events: any room but a joined one with
/// nothing new in its timeline. Then, once those are known, the joined
/// rooms that have only them to show.
struct Sections {
    built: Vec<(OwnedRoomId, Section)>,
    /// Joined rooms with nothing new in their timelines.
    quiet: Vec<RoomWork>,
    prefetch: Prefetch,
    unread: HashMap<String, push::RoomUnread>,
    deliveries: Vec<Delivery>,
}

impl Sections {
    async fn read(
        server: &Server,
        user: &AuthedUser,
        req: &SyncRequest,
        upto: i64,
        memberships: &[(String, String, i64)],
        moved: Option<&Changes>,
    ) -> Result<Self> {
        let since = req.since.map(|s| s.pos);
        let (changed, ignored) = tokio::try_join!(
            changed_rooms(server, memberships, since, moved),
            ignore::ignored_by(server, &user.user_id),
        )?;
        let (mut timely, mut quiet) = (Vec::new(), Vec::new());
        for (room_id, membership, membership_pos) in memberships {
            if *membership_pos > upto || !room_wanted(&req.filter.room, room_id) {
                continue;
            }
            let work = RoomWork {
                room_id: room_id.as_str().try_into().map_err(Error::internal)?,
                membership: membership.clone(),
                membership_pos: *membership_pos,
                changed: changed.contains(room_id),
            };
            match work.membership == "join" && !work.has_timeline_news(req) {
                true => quiet.push(work),
                false => timely.push(work),
            }
        }
        let prefetch = Prefetch::load(server, user, req, &timely, upto, ignored).await?;
        let mut sections = Self {
            built: Vec::new(),
            quiet,
            prefetch,
            unread: HashMap::new(),
            deliveries: Vec::new(),
        };
        sections.build(server, user, req, upto, timely).await?;
        Ok(sections)
    }

    /// The sections of the quiet joined rooms with account data or ephemeral
    /// events to show, and those added to every section.
    async fn read_quiet(
        &mut self,
        server: &Server,
        user: &AuthedUser,
        req: &SyncRequest,
        upto: i64,
        mut account: HashMap<String, Vec<Raw<AnyRoomAccountDataEvent>>>,
        mut ephemeral: HashMap<String, RoomEphemeral>,
    ) -> Result<()> {
        let showing = |w: &RoomWork| {
            account.contains_key(w.room_id.as_str())
                || ephemeral
                    .get(w.room_id.as_str())
                    .is_some_and(|e| !e.events.is_empty())
        };
        let quiet: Vec<RoomWork> = std::mem::take(&mut self.quiet)
            .into_iter()
            .filter(showing)
            .collect();
        if !quiet.is_empty() {
            self.build(server, user, req, upto, quiet).await?;
        }
        for (room_id, section) in &mut self.built {
            section.add(
                account.remove(room_id.as_str()).unwrap_or_default(),
                ephemeral.remove(room_id.as_str()).unwrap_or_default(),
            );
        }
        Ok(())
    }

    /// Builds the rooms' sections, several at once (each with its own
    /// database connection), and reads the unread counts of the joined ones
    /// beside them.
    async fn build(
        &mut self,
        server: &Server,
        user: &AuthedUser,
        req: &SyncRequest,
        upto: i64,
        work: Vec<RoomWork>,
    ) -> Result<()> {
        let joined: Vec<String> = work
            .iter()
            .filter(|w| w.membership == "join")
            .map(|w| w.room_id.to_string())
            .collect();
        let by_thread = req.filter.room.timeline.unread_thread_notifications;
        let counts = async {
            match joined.is_empty() {
                true => Ok(HashMap::new()),
                false => push::unread_counts(server, &user.user_id, &joined, by_thread).await,
            }
        };
        let prefetch = &self.prefetch;
        let sections = futures::stream::iter(
            work.into_iter()
                .map(|w| room_section(server, user, req, upto, w, prefetch)),
        )
        .buffer_unordered(rooms_in_parallel(server))
        .try_filter_map(|section| async move { Ok(section) })
        .try_collect::<Vec<_>>();
        let (counts, built) = tokio::try_join!(counts, sections)?;
        self.unread.extend(counts);
        self.built.extend(built);
        Ok(())
    }

    /// Puts the sections into the response; returns whether any of them
    /// should end a long-poll.
    fn put_into(&mut self, response: &mut Response) -> bool {
        let mut news = false;
        for (room_id, section) in self.built.drain(..) {
            news |= section.is_news();
            match section {
                Section::Join(room, delivery, _) => {
                    self.deliveries.extend(delivery);
                    response.rooms.join.insert(room_id, *room);
                }
                Section::Invite(room) => {
                    response.rooms.invite.insert(room_id, room);
                }
                Section::Knock(room) => {
                    response.rooms.knock.insert(room_id, room);
                }
                Section::Leave(room) => {
                    response.rooms.leave.insert(room_id, *room);
                }
            }
        }
        put_unread_counts(response, std::mem::take(&mut self.unread));
        news
    }
}

/// spec: "End-to-End Encryption" and "Send-to-Device messaging" in sync:
/// the device's to-device messages (acknowledging those of the token), the
/// device-list changes and the device's key counts.
struct Encryption {
    to_device: Vec<Raw<ruma::events::AnyToDeviceEvent>>,
    /// Set when the to-device messages did not all fit.
    next_batch: Option<String>,
    device_lists: ruma::api::client::sync::sync_events::DeviceLists,
    one_time_keys: BTreeMap<ruma::OneTimeKeyAlgorithm, UInt>,
    fallback_key_types: Vec<ruma::OneTimeKeyAlgorithm>,
}

impl Encryption {
    /// Puts it in the response; returns whether any of it should end a long-poll.
    fn add_to(self, response: &mut Response) -> bool {
        if let Some(next) = self.next_batch {
            response.next_batch = next;
        }
        response.to_device.events = self.to_device;
        response.device_lists = self.device_lists;
        response.device_one_time_keys_count = self.one_time_keys;
        response.device_unused_fallback_key_types = Some(self.fallback_key_types);
        !response.to_device.is_empty() || !response.device_lists.is_empty()
    }
}

async fn encryption(
    server: &Server,
    user: &AuthedUser,
    req: &SyncRequest,
    upto: SyncToken,
    moved: Option<&Changes>,
) -> Result<Encryption> {
    let (me, device) = (&user.user_id, &user.device_id);
    let acknowledged = req.since.map_or(0, |since| since.to_device);
    let to_device = async {
        let nothing_new = moved.is_some_and(|m| !m.to_device_users.contains(me.as_str()));
        if nothing_new && !server.to_device_acks.awaited(me, device) {
            return Ok((Vec::new(), None));
        }
        let limit = to_device::MAX_PER_SYNC;
        to_device::receive(server, me, device, acknowledged, upto.pos, limit).await
    };
    let device_lists = async {
        let mut lists = ruma::api::client::sync::sync_events::DeviceLists::new();
        let unmoved = moved.is_some_and(|m| !m.device_lists && !m.memberships);
        if let Some(since) = req.since.filter(|_| !unmoved) {
            let changes = device_lists::changes(server, me, since.pos, upto.pos).await?;
            lists.changed = changes.changed;
            lists.left = changes.left;
        }
        Ok(lists)
    };
    let ((messages, last), device_lists, (one_time_keys, fallback_key_types)) = tokio::try_join!(
        to_device,
        device_lists,
        keys::key_stock(server, me, device.as_str()),
    )?;
    let next_batch = (messages.len() == to_device::MAX_PER_SYNC).then(|| {
        SyncToken {
            to_device: last.unwrap_or(upto.pos),
            ..upto
        }
        .to_string()
    });
    Ok(Encryption {
        to_device: messages,
        next_batch,
        device_lists,
        one_time_keys,
        fallback_key_types,
    })
}

/// spec: "Receiving notifications" — the unread counts of the joined rooms
/// in the response (per thread too if the client asked for that).
fn put_unread_counts(response: &mut Response, mut counts: HashMap<String, push::RoomUnread>) {
    for (room_id, joined) in response.rooms.join.iter_mut() {
        let Some(unread) = counts.remove(room_id.as_str()) else {
            continue;
        };
        joined.unread_notifications = unread.room.into();
        joined.unread_thread_notifications = unread
            .threads
            .into_iter()
            .map(|(root, c)| (root, c.into()))
            .collect();
    }
}

/// A room's ephemeral events in one sync, and whether they end a long-poll.
#[derive(Default)]
struct RoomEphemeral {
    events: Vec<Raw<AnySyncEphemeralRoomEvent>>,
    wakes: bool,
}

/// The rooms with new timeline events since the token (none for an initial
/// sync): from the journal when it knows, else from the database.
async fn changed_rooms(
    server: &Server,
    memberships: &[(String, String, i64)],
    since: Option<i64>,
    moved: Option<&Changes>,
) -> Result<HashSet<String>> {
    let rooms = memberships.iter().map(|(room, _, _)| room);
    match (since, moved) {
        (Some(_), Some(moved)) => Ok(rooms
            .filter(|room| moved.timeline_rooms.contains(*room))
            .cloned()
            .collect()),
        (Some(since), None) => {
            let rooms: Vec<String> = rooms.cloned().collect();
            let changed = server.db.rooms_with_events_after(&rooms, since).await?;
            Ok(changed.into_keys().collect())
        }
        (None, _) => Ok(HashSet::new()),
    }
}

/// The ephemeral events (receipts, typing) of the user's joined rooms that
/// changed since the token: all of them for rooms new to the client.
async fn ephemeral_events(
    server: &Server,
    user: &AuthedUser,
    req: &SyncRequest,
    memberships: &[(String, String, i64)],
    upto: SyncToken,
    moved: Option<&Changes>,
) -> Result<HashMap<String, RoomEphemeral>> {
    let filter = &req.filter.room.ephemeral;
    let wanted = |t: &str| filter::type_wanted(filter.types.as_deref(), &filter.not_types, t);
    let since = req.since;
    let (mut known, mut fresh) = (Vec::new(), Vec::new());
    for (room, membership, pos) in memberships {
        if membership == "join" && room_wanted(&req.filter.room, room) {
            match since {
                Some(s) if *pos <= s.pos => known.push(room.clone()),
                _ => fresh.push(room.clone()),
            }
        }
    }
    let mut out: HashMap<String, RoomEphemeral> = HashMap::new();
    if wanted("m.receipt") {
        let user_id = &user.user_id;
        // A room the client knows has new receipts only if one moved there.
        let moved_rooms: Vec<String> = known
            .iter()
            .filter(|room| moved.is_none_or(|m| m.receipt_rooms.contains(*room)))
            .cloned()
            .collect();
        let since_pos = since.map(|s| s.pos);
        let (mut receipts, fresh_receipts) = tokio::try_join!(
            receipts::ephemeral(server, user_id, &moved_rooms, since_pos, upto.pos),
            receipts::ephemeral(server, user_id, &fresh, None, upto.pos),
        )?;
        receipts.extend(fresh_receipts);
        for (room, receipt) in receipts {
            let entry = out.entry(room).or_default();
            entry.events.push(receipt.event);
            entry.wakes |= receipt.wakes;
        }
    }
    if wanted("m.typing") {
        let ids = |rooms: &[String]| -> Vec<OwnedRoomId> {
            rooms
                .iter()
                .filter_map(|r| r.as_str().try_into().ok())
                .collect()
        };
        let mut typing = server
            .typing
            .changed_since(&ids(&known), since.map(|s| s.typing));
        typing.extend(server.typing.changed_since(&ids(&fresh), None));
        for (room, users) in typing {
            let event = json!({ "type": "m.typing", "content": { "user_ids": users } });
            let entry = out.entry(room.to_string()).or_default();
            entry.events.push(raw(&event)?);
            entry.wakes = true;
        }
    }
    Ok(out)
}

/// Rooms whose sync sections are built at the same time: PostgreSQL serves
/// parallel queries well; SQLite's connections only contend for its locks.
fn rooms_in_parallel(server: &Server) -> usize {
    match server.db.backend() {
        crate::store::Backend::Postgres => 8,
        crate::store::Backend::Sqlite => 1,
    }
}

/// What the sync of one room starts from.
struct RoomWork {
    room_id: OwnedRoomId,
    membership: String,
    membership_pos: i64,
    /// Whether the room has events after `since`.
    changed: bool,
}

enum Section {
    /// With what the sync delivers to the user (for a delivered receipt),
    /// and whether anything in it should end a long-poll.
    Join(Box<JoinedRoom>, Option<Delivery>, bool),
    Invite(InvitedRoom),
    Knock(KnockedRoom),
    Leave(Box<LeftRoom>),
}

impl Section {
    fn is_news(&self) -> bool {
        match self {
            Self::Join(_, _, news) => *news,
            _ => true,
        }
    }

    /// Adds the room's account data and ephemeral events.
    fn add(&mut self, account: Vec<Raw<AnyRoomAccountDataEvent>>, ephemeral: RoomEphemeral) {
        match self {
            Self::Join(joined, _, news) => {
                *news |= !account.is_empty() || ephemeral.wakes;
                joined.account_data.events = account;
                joined.ephemeral.events = ephemeral.events;
            }
            Self::Leave(left) => left.account_data.events = account,
            Self::Invite(_) | Self::Knock(_) => {}
        }
    }
}

impl RoomWork {
    /// Whether its timeline has something for the client: the room is new
    /// to the client, or sent in full, or has new events.
    fn has_timeline_news(&self, req: &SyncRequest) -> bool {
        self.is_fresh(req) || req.full_state || self.changed
    }

    /// New to this client: an initial sync, or a membership since the last one.
    fn is_fresh(&self, req: &SyncRequest) -> bool {
        req.since.is_none_or(|s| self.membership_pos > s.pos)
    }
}

/// The room's section of the response, if it has anything to say (a joined
/// room always has: the caller picks the joined rooms that have news), yet
/// without its account data and ephemeral events (see [`Section::add`]).
async fn room_section(
    server: &Server,
    user: &AuthedUser,
    req: &SyncRequest,
    upto: i64,
    work: RoomWork,
    prefetch: &Prefetch,
) -> Result<Option<(OwnedRoomId, Section)>> {
    let fresh = work.is_fresh(req);
    let RoomWork {
        room_id,
        membership,
        membership_pos,
        ..
    } = work;
    let since = req.since.map(|s| s.pos);
    let section = match membership.as_str() {
        "join" => {
            let mut joined = JoinedRoom::new();
            let from = if fresh { None } else { since };
            let full_state = fresh || req.full_state;
            let slice = room_timeline_and_state(
                server, user, req, &room_id, from, upto, full_state, prefetch,
            );
            let summary = member_summary(server, &room_id, &user.user_id, prefetch);
            // spec: the summary may be left out when it has not changed; a
            // room sent in full always has it, read beside its timeline.
            let (slice, summary) = if full_state {
                let (slice, summary) = tokio::try_join!(slice, summary)?;
                (slice, Some(summary))
            } else {
                let slice = slice.await?;
                let summary = match slice.members_changed {
                    true => Some(summary.await?),
                    false => None,
                };
                (slice, summary)
            };
            if let Some(summary) = summary {
                put_summary(&mut joined, &summary);
            }
            joined.timeline = slice.timeline;
            joined.state = State::Before(slice.state.into());
            joined.account_data = RoomAccountData::new();
            let delivery = delivery(&user.user_id, &room_id, &slice.events);
            let news = fresh || req.full_state || !joined.timeline.events.is_empty();
            Section::Join(Box::new(joined), delivery, news)
        }
        "invite" if fresh && !invited_by_ignored(server, &room_id, &user.user_id).await? => {
            let mut invited = InvitedRoom::new();
            invited.invite_state = InviteState::new();
            invited.invite_state.events =
                stripped_with_own_event(server, &room_id, &user.user_id, "invite_room_state")
                    .await?;
            Section::Invite(invited)
        }
        "knock" if fresh => {
            let mut knocked = KnockedRoom::new();
            knocked.knock_state = KnockState::new();
            knocked.knock_state.events =
                stripped_with_own_event(server, &room_id, &user.user_id, "knock_room_state")
                    .await?;
            Section::Knock(knocked)
        }
        "leave" | "ban"
            if (since.is_some() && fresh) || (since.is_none() && req.filter.room.include_leave) =>
        {
            let mut left = LeftRoom::new();
            let full_state = since.is_none() || req.full_state;
            let slice = room_timeline_and_state(
                server,
                user,
                req,
                &room_id,
                since,
                membership_pos,
                full_state,
                prefetch,
            )
            .await?;
            left.timeline = slice.timeline;
            left.state = State::Before(slice.state.into());
            left.account_data = RoomAccountData::new();
            Section::Leave(Box::new(left))
        }
        _ => return Ok(None),
    };
    Ok(Some((room_id, section)))
}

fn room_wanted(filter: &ruma::api::client::filter::RoomFilter, room_id: &str) -> bool {
    !filter.not_rooms.iter().any(|r| r.as_str() == room_id)
        && filter
            .rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r.as_str() == room_id))
}

/// The timeline of `(from, upto]` (the newest `limit` events of it) and the
/// state at its start: in full when `full_state` (a room new to the client,
/// or the client asked), otherwise what changed between `from` and the
/// timeline's start.
#[allow(clippy::too_many_arguments)] // one sync's context; a struct would only rename them
async fn room_timeline_and_state(
    server: &Server,
    user: &AuthedUser,
    req: &SyncRequest,
    room_id: &RoomId,
    from: Option<i64>,
    upto: i64,
    full_state: bool,
    prefetch: &Prefetch,
) -> Result<RoomSlice> {
    let timeline_filter = &req.filter.room.timeline;
    let limit = timeline_limit(timeline_filter);
    let lower = from.unwrap_or(0);
    let prefetched = from
        .is_none()
        .then(|| prefetch.newest.get(room_id.as_str()))
        .flatten();
    let (events, limited) = match prefetched {
        Some(newest) => {
            let mut events: Vec<StoredEvent> = newest.iter().take(limit).cloned().collect();
            events.reverse();
            (events, newest.len() > limit)
        }
        None => newest_events(server, room_id, lower, upto, limit, timeline_filter).await?,
    };
    // spec: "Ignoring users" — their messages never reach the timeline.
    let events: Vec<StoredEvent> = events
        .into_iter()
        .filter(|e| e.state_key.is_some() || !prefetch.ignored.contains(&e.sender))
        .collect();
    let timeline_start = events
        .first()
        .map(|e| e.stream_ordering)
        .unwrap_or(upto + 1);

    let state_events: Vec<Arc<StoredEvent>> = match from {
        _ if full_state => match events.first() {
            Some(first) => match first.state_group_before {
                Some(group) => match prefetch.state.get(&group) {
                    Some(state) => state.clone(),
                    None => server.db.state_events_at_group(group).await?,
                },
                None => Vec::new(),
            },
            None => arcs(server.db.current_state_events(room_id.as_str()).await?),
        },
        Some(since) if limited => arcs(
            server
                .db
                .current_state_changed_between(room_id.as_str(), since, timeline_start)
                .await?,
        ),
        _ => Vec::new(),
    };
    let state_events = filter_state(
        state_events,
        &req.filter.room.state,
        &events,
        &user.user_id,
        full_state,
    );

    let viewer = Some((user.user_id.as_ref(), user.device_id.as_str()));
    let mut timeline = Timeline::new();
    timeline.limited = limited;
    timeline.prev_batch = Some(SyncToken::at(timeline_start - 1).to_string());
    timeline.events = format_events(server, &events, viewer, Format::Sync)
        .await?
        .into_iter()
        .map(Raw::from_json)
        .collect();
    let members_changed = events
        .iter()
        .chain(state_events.iter().map(|e| &**e))
        .any(|e| e.event_type == "m.room.member");
    let state = format_with(
        server,
        &state_events,
        None,
        Format::Sync,
        &mut HashMap::new(),
    )
    .await?
    .into_iter()
    .map(Raw::from_json)
    .collect();
    Ok(RoomSlice {
        timeline,
        state,
        members_changed,
        events,
    })
}

/// What a delivered receipt records: the newest message (non-state event)
/// others sent in the timeline, if any.
fn delivery(user: &UserId, room_id: &RoomId, events: &[StoredEvent]) -> Option<Delivery> {
    // Ticks are for messages: state changes (joins, renames…) get none.
    let from_others = || {
        events
            .iter()
            .filter(|e| e.sender != user.as_str() && e.state_key.is_none())
    };
    let newest = from_others().next_back()?;
    let senders: HashSet<String> = from_others().map(|e| e.sender.clone()).collect();
    Some(Delivery {
        user_id: user.to_string(),
        room_id: room_id.to_owned(),
        event_id: newest.event_id.clone(),
        event_stream_ordering: newest.stream_ordering,
        senders,
    })
}

/// A room's part of a sync response.
struct RoomSlice {
    timeline: Timeline,
    state: Vec<Raw<ruma::events::AnySyncStateEvent>>,
    /// Whether membership changed in it (the room summary must be sent again).
    members_changed: bool,
    /// The timeline's events, oldest first.
    events: Vec<StoredEvent>,
}

/// Up to `limit` matching events in `(lower, upto]`, oldest first, and whether more were left out.
async fn newest_events(
    server: &Server,
    room_id: &RoomId,
    lower: i64,
    upto: i64,
    limit: usize,
    filter: &RoomEventFilter,
) -> Result<(Vec<StoredEvent>, bool)> {
    let mut picked = Vec::new();
    let mut cursor = upto;
    // One more than the limit tells `limited`; a filter may drop events,
    // so a filtered timeline reads ahead.
    let batch_size = match filter::is_unfiltered(filter) {
        true => limit + 1,
        false => (limit + 1).max(50),
    };
    loop {
        let batch = server
            .db
            .room_events_desc(room_id.as_str(), lower, cursor, batch_size as i64)
            .await?;
        let exhausted = batch.len() < batch_size;
        for event in batch {
            cursor = event.stream_ordering - 1;
            if filter::matches(filter, &event) {
                if picked.len() == limit {
                    picked.reverse();
                    return Ok((picked, true));
                }
                picked.push(event);
            }
        }
        if exhausted {
            picked.reverse();
            return Ok((picked, false));
        }
    }
}

fn arcs(events: Vec<StoredEvent>) -> Vec<Arc<StoredEvent>> {
    events.into_iter().map(Arc::new).collect()
}

/// Applies the state filter; with lazy loading only the members who sent
/// timeline events (and the user) are kept.
fn filter_state(
    state: Vec<Arc<StoredEvent>>,
    filter: &RoomEventFilter,
    timeline: &[StoredEvent],
    user: &UserId,
    full: bool,
) -> Vec<Arc<StoredEvent>> {
    let lazy = !filter.lazy_load_options.is_disabled();
    state
        .into_iter()
        .filter(|e| filter::matches(filter, e))
        .filter(|e| {
            if !lazy || e.event_type != "m.room.member" {
                return true;
            }
            let member = e.state_key.as_deref().unwrap_or_default();
            member == user.as_str() && full || timeline.iter().any(|t| t.sender == member)
        })
        .collect()
}

async fn member_summary(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    prefetch: &Prefetch,
) -> Result<MemberSummary> {
    Ok(match prefetch.summaries.get(room_id.as_str()) {
        Some(summary) => summary.clone(),
        None => server
            .db
            .member_summaries(&[room_id.to_string()], user.as_str(), HEROES)
            .await?
            .remove(room_id.as_str())
            .unwrap_or_default(),
    })
}

fn put_summary(joined: &mut JoinedRoom, summary: &MemberSummary) {
    let count = |m: &str| {
        summary
            .counts
            .iter()
            .find(|(k, _)| k == m)
            .map(|(_, n)| UInt::new_saturating(*n as u64))
    };
    joined.summary.joined_member_count = count("join").or(Some(UInt::MIN));
    joined.summary.invited_member_count = count("invite").or(Some(UInt::MIN));
    joined.summary.heroes = summary
        .heroes
        .iter()
        .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
        .collect();
}

fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000)
}

/// Members named in a room summary (spec: up to five).
const HEROES: i64 = 5;

/// Reads that the rooms of a sync share, done in a few statements up front
/// instead of a few per room: the users the syncing user ignores and, for
/// the rooms new to the sync, their newest events, the state before those,
/// and their member summaries. (Only for unfiltered timelines; a filtered
/// one may need to read further back, room by room.)
struct Prefetch {
    ignored: Arc<HashSet<String>>,
    /// Newest first, one more than the timeline limit (to tell `limited`).
    newest: HashMap<String, Vec<StoredEvent>>,
    state: HashMap<i64, Vec<Arc<StoredEvent>>>,
    summaries: HashMap<String, MemberSummary>,
}

impl Prefetch {
    async fn load(
        server: &Server,
        user: &AuthedUser,
        req: &SyncRequest,
        work: &[RoomWork],
        upto: i64,
        ignored: Arc<HashSet<String>>,
    ) -> Result<Self> {
        let since = req.since.map(|s| s.pos);
        let fresh: Vec<String> = work
            .iter()
            .filter(|w| w.membership == "join" && since.is_none_or(|s| w.membership_pos > s))
            .map(|w| w.room_id.to_string())
            .collect();
        let timeline_filter = &req.filter.room.timeline;
        if fresh.len() < 2 || !filter::is_unfiltered(timeline_filter) {
            return Ok(Self {
                ignored,
                newest: HashMap::new(),
                state: HashMap::new(),
                summaries: HashMap::new(),
            });
        }
        let limit = timeline_limit(timeline_filter);
        let newest = server
            .db
            .newest_events_in_rooms(&fresh, upto, limit as i64 + 1)
            .await?;
        let groups: Vec<i64> = newest
            .values()
            .filter_map(|events| events[..events.len().min(limit)].last()?.state_group_before)
            .collect();
        let state = server
            .db
            .state_events_at_groups(&groups)
            .await?
            .into_iter()
            .map(|(group, events)| (group, events.into_iter().map(Arc::new).collect()))
            .collect();
        let summaries = server
            .db
            .member_summaries(&fresh, user.user_id.as_str(), HEROES)
            .await?;
        Ok(Self {
            ignored,
            newest,
            state,
            summaries,
        })
    }
}

/// Whether the user's invite to the room comes from someone they ignore.
async fn invited_by_ignored(server: &Server, room_id: &RoomId, user: &UserId) -> Result<bool> {
    let ignored = ignore::ignored_by(server, user).await?;
    if ignored.is_empty() {
        return Ok(false);
    }
    let invite = server
        .db
        .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
        .await?;
    Ok(invite.is_some_and(|e| ignored.contains(&e.sender)))
}

/// Stripped state stored with the invite or knock, plus the membership event itself.
async fn stripped_with_own_event(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    key: &str,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let Some(own) = server
        .db
        .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
        .await?
    else {
        return Ok(Vec::new());
    };
    let mut events: Vec<Value> = own
        .unsigned_extra
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()?
        .and_then(|mut u| u[key].as_array_mut().map(std::mem::take))
        .unwrap_or_default();
    let pdu: Value = serde_json::from_str(&own.pdu)?;
    events.push(json!({
        "type": "m.room.member",
        "state_key": user,
        "sender": pdu["sender"],
        "content": pdu["content"],
        "event_id": own.event_id,
        "origin_server_ts": pdu["origin_server_ts"],
    }));
    events.iter().map(raw).collect()
}

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        for t in [
            SyncToken::at(42),
            SyncToken {
                pos: 42,
                typing: 7,
                presence: 1,
                to_device: 42,
            },
            SyncToken {
                pos: 42,
                typing: 0,
                presence: 0,
                to_device: 40,
            },
        ] {
            assert_eq!(SyncToken::parse(&t.to_string()).unwrap(), t);
        }
        assert_eq!(SyncToken::parse("s42").unwrap(), SyncToken::at(42));
        // Backfilled history sits at negative positions.
        assert_eq!(SyncToken::parse("s-7").unwrap(), SyncToken::at(-7));
        for bad in [
            "",
            "42",
            "s",
            "s--1",
            "sx",
            "t42",
            "s1_x",
            "s1_2_-3",
            "s5_0_0_6",
            "s5_0_0_1_1",
        ] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
