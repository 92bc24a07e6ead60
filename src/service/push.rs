//! spec: "Push notifications" — push rules, and the unread counts and
//! notification list they produce. (Pushers and a push gateway come later.)
//!
//! A user's rules are their `m.push_rules` account data (which is also how
//! clients see them in `/sync`), the spec's defaults until they change one.
//! Every local event is evaluated against the rules of each local member of
//! its room inside the transaction that persists it, so an event and the
//! notifications it causes commit together: a sync that sees the event sees
//! its counts.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::sync::sync_events::UnreadNotificationsCount,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent},
    push::{
        Action, AnyPushRule, AnyPushRuleRef, FlattenedJson, InsertPushRuleError, NewPushRule,
        PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx, RemovePushRuleError,
        RuleKind, Ruleset,
    },
    room_version_rules::AuthorizationRules,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{account_data, ignore, rooms::timeline::Template};
use crate::{
    Error, Result, Server,
    cache::ReadCache,
    store::{events::StoredEvent, push::Recipients},
};

const PUSH_RULES: &str = "m.push_rules";

/// Users' rule sets, read from account data.
pub type RuleCache = account_data::SettingCache<UserRules>;

/// A user's push rules, each marked with what of it can be evaluated once
/// per event for every recipient (see [`Sharing`]). Planning an event's
/// notifications needs the rules of every local member of its room.
pub enum UserRules {
    /// Rules the user has changed, as stored.
    Stored {
        ruleset: Box<Ruleset>,
        /// In evaluation order, as `&Ruleset` iterates.
        sharing: Vec<Sharing>,
    },
    /// The spec's defaults: only the rules that name the user are theirs,
    /// in evaluation order; the others are [`DefaultRules`]'.
    Default { own: Vec<(AnyPushRule, Sharing)> },
}

impl UserRules {
    fn stored(user: &UserId, ruleset: Ruleset) -> Self {
        let sharing = ruleset.iter().map(|rule| sharing_of(user, rule)).collect();
        Self::Stored {
            ruleset: Box::new(ruleset),
            sharing,
        }
    }

    fn default_for(user: &UserId) -> Self {
        let defaults = DefaultRules::get();
        let own = Ruleset::server_default(user)
            .iter()
            .zip(&defaults.sharing)
            .filter(|(_, shared)| shared.is_none())
            .map(|(rule, _)| (rule.to_owned(), sharing_of(user, rule)))
            .collect();
        Self::Default { own }
    }

    /// The rules as clients see them.
    pub fn to_ruleset(&self, user: &UserId) -> Ruleset {
        match self {
            Self::Stored { ruleset, .. } => (**ruleset).clone(),
            Self::Default { .. } => Ruleset::server_default(user),
        }
    }

    /// Each rule with its sharing, in evaluation order.
    fn in_order(&self) -> Box<dyn Iterator<Item = (AnyPushRuleRef<'_>, Sharing)> + Send + '_> {
        match self {
            Self::Stored { ruleset, sharing } => {
                Box::new(ruleset.iter().zip(sharing.iter().copied()))
            }
            Self::Default { own } => {
                let mut own = own.iter();
                let defaults = DefaultRules::get();
                let rules = defaults.ruleset.iter().zip(&defaults.sharing);
                Box::new(rules.filter_map(move |(rule, shared)| match shared {
                    Some(sharing) => Some((rule, *sharing)),
                    None => own.next().map(|(rule, sharing)| (rule.as_ref(), *sharing)),
                }))
            }
        }
    }
}

/// The spec's default rules, made once for a stand-in user: all but the
/// few that name their user (`.m.rule.invite_for_me`,
/// `.m.rule.is_user_mention`) read the same for everyone, and are kept once
/// instead of once per user.
struct DefaultRules {
    ruleset: Ruleset,
    /// Each rule's sharing, in evaluation order; none for those that name
    /// the user.
    sharing: Vec<Option<Sharing>>,
}

impl DefaultRules {
    fn get() -> &'static Self {
        static DEFAULTS: std::sync::LazyLock<DefaultRules> = std::sync::LazyLock::new(|| {
            let stand_in = ruma::user_id!("@corvid-default-rules-stand-in:corvid.invalid");
            let ruleset = Ruleset::server_default(stand_in);
            let sharing = ruleset
                .iter()
                .map(|rule| {
                    let names_user = format!("{rule:?}").contains(stand_in.localpart());
                    (!names_user).then(|| sharing_of(stand_in, rule))
                })
                .collect();
            DefaultRules { ruleset, sharing }
        });
        &DEFAULTS
    }
}

/// What of a rule has the same outcome for every recipient of an event: the
/// room and the event are the same for all of them (and the sender, whose
/// own events never notify them, is none of them); only what names the
/// recipient, or matches their display name, differs. Shared parts carry an
/// id given to every rule (or guard) that reads the same, so their outcome
/// is computed once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The whole rule.
    Whole(u32),
    /// The conditions in `conditions` (a bit per index): when they fail,
    /// the rule applies to no one, e.g. `.m.rule.invite_for_me` for every
    /// event that is not an invite.
    Guard {
        id: u32,
        conditions: u64,
    },
    None,
}

fn sharing_of(user: &UserId, rule: AnyPushRuleRef<'_>) -> Sharing {
    let (kind, rule_conditions) = match rule {
        AnyPushRuleRef::Override(r) => ("override", &r.conditions),
        AnyPushRuleRef::Underride(r) => ("underride", &r.conditions),
        AnyPushRuleRef::Content(r) => {
            let key = format!("content\0{}\0{}\0{}", rule.rule_id(), r.enabled, r.pattern);
            return shared_id(user, &key).map_or(Sharing::None, Sharing::Whole);
        }
        _ => return Sharing::None,
    };
    let independent: Vec<usize> = (0..rule_conditions.len().min(64))
        .filter(|&i| is_independent(user, &rule_conditions[i]))
        .collect();
    let text = |indices: &[usize]| {
        let conditions: Vec<_> = indices.iter().map(|&i| &rule_conditions[i]).collect();
        serde_json::to_string(&conditions).unwrap_or_default()
    };
    if independent.len() == rule_conditions.len() {
        let key = format!(
            "{kind}\0{}\0{}\0{}",
            rule.rule_id(),
            rule.enabled(),
            text(&independent)
        );
        if let Some(id) = shared_id(user, &key) {
            return Sharing::Whole(id);
        }
    }
    if independent.is_empty() {
        return Sharing::None;
    }
    let conditions = independent.iter().fold(0u64, |mask, &i| mask | 1 << i);
    match shared_id(user, &format!("guard\0{}", text(&independent))) {
        Some(id) => Sharing::Guard { id, conditions },
        None => Sharing::None,
    }
}

/// Whether a condition's outcome depends on the event alone. One that
/// names the recipient is left out although it does too: ids are kept for
/// the life of the process, and those would make one per user.
fn is_independent(user: &UserId, condition: &PushCondition) -> bool {
    use PushCondition as C;
    matches!(
        condition,
        C::EventMatch(_)
            | C::EventPropertyIs(_)
            | C::EventPropertyContains(_)
            | C::RoomMemberCount(_)
            | C::SenderNotificationPermission(_)
    ) && serde_json::to_string(condition).is_ok_and(|text| !text.contains(user.localpart()))
}

/// The id of everything that reads `key`, unless `key` names the user.
fn shared_id(user: &UserId, key: &str) -> Option<u32> {
    if key.contains(user.localpart()) {
        return None;
    }
    static IDS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, u32>>> =
        std::sync::LazyLock::new(Default::default);
    let mut ids = IDS.lock().expect("shared push rule ids");
    let next = ids.len() as u32;
    Some(*ids.entry(key.to_owned()).or_insert(next))
}

/// Rooms' [`RoomContext`]s, read for every event sent. A local membership
/// stored by this process updates its room's entry, any other change to
/// what the context holds drops it; a change stored by another process is
/// seen when the entry expires.
#[derive(Default)]
pub struct RoomContextCache {
    rooms: ReadCache<OwnedRoomId, Arc<RoomContext>>,
}

impl RoomContextCache {
    /// A state event of the room was stored.
    pub fn state_changed(&self, server: &Server, event: &StoredEvent) {
        let Ok(room_id) = <&RoomId>::try_from(event.room_id.as_str()) else {
            return;
        };
        match event.event_type.as_str() {
            "m.room.member" => match event
                .state_key
                .as_deref()
                .and_then(|k| OwnedUserId::try_from(k).ok())
            {
                Some(member) if member.server_name() == server.server_name() => {
                    let joined = joined_display_name(&member, &event.pdu);
                    if joined.is_some() {
                        read_settings_ahead(server, member.clone());
                    }
                    self.rooms.modify(room_id, |context| {
                        Arc::new(context.with_member(member, joined))
                    });
                }
                // A remote member only moves the member count, by how much
                // depends on the membership before: read it again.
                _ => self.rooms.remove(room_id),
            },
            "m.room.power_levels" | "m.room.create" => self.rooms.remove(room_id),
            _ => {}
        }
    }

    /// The room's context if it is cached (nothing is read).
    pub fn cached(&self, room_id: &RoomId) -> Option<Arc<RoomContext>> {
        self.rooms.get(room_id)
    }

    /// The room's context; one in steady use is read again in the
    /// background before it expires, not in the path of an event.
    async fn get(&self, server: &Server, room_id: &RoomId) -> Result<Arc<RoomContext>> {
        match self.rooms.get_refreshing(room_id) {
            Some((context, false)) => return Ok(context),
            Some((context, true)) => {
                if let Some(server) = server.me.upgrade() {
                    let room_id = room_id.to_owned();
                    tokio::spawn(async move {
                        let contexts = &server.push_contexts;
                        if let Err(e) = contexts.load(&server, &room_id).await {
                            tracing::warn!(error = %e, %room_id, "renewing a room's push context failed");
                        }
                    });
                }
                return Ok(context);
            }
            None => {}
        }
        self.load(server, room_id).await
    }

    /// Reads the room's context, and caches it.
    async fn load(&self, server: &Server, room_id: &RoomId) -> Result<Arc<RoomContext>> {
        let generation = self.rooms.generation();
        let context = Arc::new(RoomContext::load(server, room_id).await?);
        self.rooms
            .insert(room_id.to_owned(), context.clone(), generation);
        Ok(context)
    }
}

/// The display name a member event gives a member who joined (the
/// localpart without one); `None` when it is not a join.
fn joined_display_name(member: &UserId, pdu: &str) -> Option<String> {
    let content = serde_json::from_str::<Value>(pdu)
        .map(|mut pdu| pdu["content"].take())
        .unwrap_or_default();
    (content["membership"] == "join").then(|| {
        content["displayname"]
            .as_str()
            .map_or_else(|| member.localpart().to_owned(), str::to_owned)
    })
}

/// The user's push rules.
pub async fn ruleset(server: &Server, user: &UserId) -> Result<Arc<UserRules>> {
    super::account_data::setting_of(server, &server.push_rules, user, PUSH_RULES, user_rules).await
}

/// A member who just joined is a recipient of the room's next event: their
/// rules and ignore list are read now, in the background, instead of in the
/// path of that event.
fn read_settings_ahead(server: &Server, member: OwnedUserId) {
    let Some(server) = server.me.upgrade() else {
        return;
    };
    tokio::spawn(async move {
        let users = [&*member];
        let read = tokio::try_join!(
            rulesets_of(&server, &users),
            ignore::ignored_by_each(&server, &users)
        );
        if let Err(e) = read {
            tracing::warn!(error = %e, %member, "reading a new member's push settings failed");
        }
    });
}

/// The rules of each of `users`, in order (one read for those not cached).
async fn rulesets_of(server: &Server, users: &[&UserId]) -> Result<Vec<Arc<UserRules>>> {
    super::account_data::settings_of(server, &server.push_rules, users, PUSH_RULES, user_rules)
        .await
}

/// Stored `m.push_rules` content, or the spec's defaults when there is none.
fn user_rules(user: &UserId, stored: Option<&str>) -> Result<UserRules> {
    let Some(json) = stored else {
        return Ok(UserRules::default_for(user));
    };
    let content: Value = serde_json::from_str(json)?;
    let ruleset = serde_json::from_value(content["global"].clone()).map_err(Error::internal)?;
    Ok(UserRules::stored(user, ruleset))
}

/// Applies `change` to a copy of the user's rules and stores the result.
async fn update<T>(
    server: &Server,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<T>,
) -> Result<T> {
    let mut rules = ruleset(server, user).await?.to_ruleset(user);
    let out = change(&mut rules)?;
    let content = json!({ "global": rules }).to_string();
    account_data::store(server, user, None, PUSH_RULES, &content).await?;
    server
        .push_rules
        .replace(user.to_owned(), Arc::new(UserRules::stored(user, rules)));
    Ok(out)
}

pub async fn rule(server: &Server, user: &UserId, kind: RuleKind, id: &str) -> Result<AnyPushRule> {
    ruleset(server, user)
        .await?
        .to_ruleset(user)
        .get(kind, id)
        .map(|r| r.to_owned())
        .ok_or_else(|| Error::not_found("No such push rule"))
}

pub async fn set_rule(
    server: &Server,
    user: &UserId,
    rule: NewPushRule,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<()> {
    update(server, user, |rules| {
        rules.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => Error::not_found(e.to_string()),
            e => Error::invalid_param(e.to_string()),
        })
    })
    .await
}

pub async fn delete_rule(server: &Server, user: &UserId, kind: RuleKind, id: &str) -> Result<()> {
    update(server, user, |rules| {
        rules.remove(kind, id).map_err(|e| match e {
            RemovePushRuleError::NotFound => Error::not_found("No such push rule"),
            e => Error::invalid_param(e.to_string()),
        })
    })
    .await
}

pub async fn set_enabled(
    server: &Server,
    user: &UserId,
    kind: RuleKind,
    id: &str,
    enabled: bool,
) -> Result<()> {
    update(server, user, |rules| {
        rules
            .set_enabled(kind, id, enabled)
            .map_err(|_| Error::not_found("No such push rule"))
    })
    .await
}

pub async fn set_actions(
    server: &Server,
    user: &UserId,
    kind: RuleKind,
    id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    update(server, user, |rules| {
        rules
            .set_actions(kind, id, actions)
            .map_err(|_| Error::not_found("No such push rule"))
    })
    .await
}

/// Whom an event about to be sent notifies, and how: the rules of every
/// local member of the room (and of an invitee) applied to it. Decided in
/// the sender's task before the event enters the event writer, so rules for
/// many events run in parallel and the one writer only stores the result
/// in the event's transaction (an event and its notifications commit
/// together). The membership read here may be a moment older than the one
/// the event is appended on: a user joining at that instant can miss the
/// notification of one event.
pub async fn plan(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    template: &Template,
) -> Result<Arc<Recipients>> {
    let context = server.push_contexts.get(server, room_id).await?;
    let mut event = json!({
        "type": template.event_type.to_string(),
        "content": template.content,
        "sender": sender,
        "room_id": room_id,
    });
    if let Some(key) = &template.state_key {
        event["state_key"] = json!(key);
    }
    let raw: Raw<Value> = Raw::from_json(serde_json::value::to_raw_value(&event)?);
    // Flattened once per event, not once per recipient.
    let flat = FlattenedJson::from_raw(&raw);
    let thread = thread_of(&template.content).unwrap_or_else(|| "main".to_owned());
    let invitee = invited_local_user(server, template);
    let recipients: Vec<(OwnedUserId, String)> = context
        .members
        .iter()
        .map(|(user, name)| (user.clone(), name.clone()))
        .chain(invitee.map(|u| (u.clone(), u.localpart().to_owned())))
        .filter(|(user, _)| user != sender)
        .collect();
    let users: Vec<&UserId> = recipients.iter().map(|(u, _)| &**u).collect();
    let (ignore_lists, rulesets) = tokio::try_join!(
        ignore::ignored_by_each(server, &users),
        rulesets_of(server, &users)
    )?;
    let mut notified = Vec::new();
    let mut ctx = PushConditionRoomCtx::new(
        room_id.to_owned(),
        context.member_count,
        sender.to_owned(),
        String::new(),
    );
    ctx.power_levels = context.power_levels.clone();
    let mut outcomes = HashMap::new();
    let settings = ignore_lists.into_iter().zip(rulesets);
    for ((member, display_name), (ignored, rules)) in recipients.into_iter().zip(settings) {
        if ignored.contains(sender.as_str()) {
            continue;
        }
        ctx.user_id = member.clone();
        ctx.user_display_name = display_name;
        let actions = first_match(&rules, &flat, &ctx, &mut outcomes).await;
        if actions.iter().any(Action::should_notify) {
            notified.push((member, actions.to_vec()));
        }
    }
    recipients_of(thread, notified).map(Arc::new)
}

/// The stored form of whom an event notifies (`store::push::Recipients`).
fn recipients_of(
    thread_id: String,
    notified: Vec<(OwnedUserId, Vec<Action>)>,
) -> Result<Recipients> {
    let mut actions = serde_json::Map::new();
    let mut highlights = serde_json::Map::new();
    let mut users = Vec::with_capacity(notified.len());
    for (user, user_actions) in notified {
        let highlight = user_actions.iter().any(Action::is_highlight);
        if highlight {
            highlights.insert(user.to_string(), Value::Bool(true));
        }
        actions.insert(user.to_string(), serde_json::to_value(user_actions)?);
        users.push((user.into(), highlight));
    }
    Ok(Recipients {
        thread_id,
        users,
        actions: Value::Object(actions).to_string(),
        highlights: Value::Object(highlights).to_string(),
    })
}

/// The thread root a new event's content puts it in (spec: "Threading").
fn thread_of(content: &Value) -> Option<String> {
    let relation = content.get("m.relates_to")?;
    (relation["rel_type"] == "m.thread")
        .then(|| relation["event_id"].as_str().map(str::to_owned))
        .flatten()
}

/// The actions of the first rule of `rules` that applies (the spec's
/// evaluation order); none when none applies. `outcomes` holds the outcome
/// of the shared rules and guards met so far for this event.
async fn first_match<'r>(
    rules: &'r UserRules,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
    outcomes: &mut HashMap<u32, bool>,
) -> &'r [Action] {
    for (rule, sharing) in rules.in_order() {
        let applies = match sharing {
            Sharing::Whole(id) => match outcomes.get(&id) {
                Some(&applies) => applies,
                None => *outcomes.entry(id).or_insert(rule.applies(event, ctx).await),
            },
            Sharing::Guard { id, conditions } => {
                let passed = match outcomes.get(&id) {
                    Some(&passed) => passed,
                    None => {
                        let passed = guard_passes(rule, conditions, event, ctx).await;
                        *outcomes.entry(id).or_insert(passed)
                    }
                };
                passed && rule.applies(event, ctx).await
            }
            Sharing::None => rule.applies(event, ctx).await,
        };
        if applies {
            return rule.actions();
        }
    }
    &[]
}

/// Whether the conditions of `rule` picked by `mask` all apply.
async fn guard_passes(
    rule: AnyPushRuleRef<'_>,
    mask: u64,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> bool {
    let conditions = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => &r.conditions,
        _ => return true,
    };
    for (i, condition) in conditions.iter().enumerate().take(64) {
        if mask & 1 << i != 0 && !condition.applies(event, ctx).await {
            return false;
        }
    }
    true
}

/// The local user an invite is for: they are not a member yet, but the
/// spec's `.m.rule.invite_for_me` notifies them.
fn invited_local_user(server: &Server, template: &Template) -> Option<OwnedUserId> {
    if template.event_type.to_string() != "m.room.member"
        || template.content["membership"] != "invite"
    {
        return None;
    }
    let user = OwnedUserId::try_from(template.state_key.as_deref()?).ok()?;
    (user.server_name() == server.server_name()).then_some(user)
}

/// What push rules need to know about a room.
#[derive(Clone)]
pub struct RoomContext {
    /// The local members joined, with their display names.
    members: BTreeMap<OwnedUserId, String>,
    /// The members joined, of every server (`room_member_count`).
    member_count: UInt,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

impl RoomContext {
    async fn load(server: &Server, room_id: &RoomId) -> Result<Self> {
        let version = super::rooms::require_room(server, room_id).await?;
        let members: BTreeMap<OwnedUserId, String> = server
            .db
            .joined_members_with_names(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|(user, name)| {
                let user = OwnedUserId::try_from(user).ok()?;
                let name = name.unwrap_or_else(|| user.localpart().to_owned());
                Some((user, name))
            })
            .collect();
        let mut state = Vec::new();
        for kind in ["m.room.create", "m.room.power_levels"] {
            state.extend(
                server
                    .db
                    .current_state_event(room_id.as_str(), kind, "")
                    .await?,
            );
        }
        let rules = corvid_federation::rules_for(&version)?;
        let member_count = server.db.joined_member_count(room_id.as_str()).await?;
        Ok(Self {
            member_count: UInt::new_saturating(member_count.max(0) as u64),
            members,
            power_levels: power_levels(&state, &rules.authorization),
        })
    }

    /// The local members joined.
    pub fn local_members(&self) -> impl Iterator<Item = &UserId> {
        self.members.keys().map(|u| &**u)
    }

    /// The context after local `member` joined (with a display name) or left.
    fn with_member(&self, member: OwnedUserId, joined: Option<String>) -> Self {
        let mut next = self.clone();
        let was_joined = next.members.contains_key(&member);
        let is_joined = joined.is_some();
        match joined {
            Some(name) => next.members.insert(member, name),
            None => next.members.remove(&member),
        };
        let count = u64::from(self.member_count) + u64::from(is_joined);
        next.member_count = UInt::new_saturating(count.saturating_sub(u64::from(was_joined)));
        next
    }
}

fn power_levels(
    state: &[StoredEvent],
    rules: &AuthorizationRules,
) -> Option<PushConditionPowerLevelsCtx> {
    let content_of = |kind: &str| -> Option<Value> {
        let event = state.iter().find(|e| e.event_type == kind)?;
        let pdu: Value = serde_json::from_str(&event.pdu).ok()?;
        Some(pdu)
    };
    let create = content_of("m.room.create")?;
    let mut creators: Vec<OwnedUserId> = create["sender"]
        .as_str()
        .and_then(|s| s.try_into().ok())
        .into_iter()
        .collect();
    if let Some(extra) = create["content"]["additional_creators"].as_array() {
        creators.extend(extra.iter().filter_map(|u| u.as_str()?.try_into().ok()));
    }
    let content: Option<RoomPowerLevelsEventContent> = content_of("m.room.power_levels")
        .and_then(|pdu| serde_json::from_value(pdu["content"].clone()).ok());
    Some(RoomPowerLevels::new(content.into(), rules, creators).into())
}

/// Unread counts of the user's `rooms`: per room the whole room's (or, with
/// `by_thread`, the main timeline's) counts, and per thread when `by_thread`.
pub async fn unread_counts(
    server: &Server,
    user: &UserId,
    rooms: &[String],
    by_thread: bool,
) -> Result<HashMap<String, RoomUnread>> {
    let mut out: HashMap<String, RoomUnread> = rooms
        .iter()
        .map(|r| (r.clone(), RoomUnread::default()))
        .collect();
    for row in server.db.unread_counts(user.as_str(), rooms).await? {
        let room = out.entry(row.room_id).or_default();
        let counts = if by_thread && row.thread_id != "main" {
            let root: OwnedEventId = row.thread_id.as_str().try_into().map_err(Error::internal)?;
            room.threads.entry(root).or_default()
        } else {
            &mut room.room
        };
        counts.notifications += row.notifications.max(0) as u64;
        counts.highlights += row.highlights.max(0) as u64;
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub struct RoomUnread {
    pub room: Counts,
    pub threads: BTreeMap<OwnedEventId, Counts>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

impl From<Counts> for UnreadNotificationsCount {
    fn from(c: Counts) -> Self {
        let mut out = UnreadNotificationsCount::new();
        out.notification_count = Some(UInt::new_saturating(c.notifications));
        out.highlight_count = Some(UInt::new_saturating(c.highlights));
        out
    }
}

/// One entry of `GET /notifications`.
pub struct Notification {
    pub room_id: OwnedRoomId,
    pub event: StoredEvent,
    pub actions: Vec<Action>,
    pub read: bool,
    pub ts: i64,
}

/// `GET /notifications`: newest first, from the position in `from`; the
/// position to continue from when there may be more.
pub async fn notifications(
    server: &Server,
    user: &UserId,
    from: Option<&str>,
    limit: usize,
    only_highlight: bool,
) -> Result<(Vec<Notification>, Option<String>)> {
    let before = match from {
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("Invalid from token"))?,
        None => i64::MAX,
    };
    let limit = limit.clamp(1, 100);
    let rows = server
        .db
        .notifications(user.as_str(), before, limit as i64, only_highlight)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let mut events: HashMap<String, StoredEvent> = server
        .db
        .events(&ids)
        .await?
        .into_iter()
        .map(|e| (e.event_id.clone(), e))
        .collect();
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.stream_ordering.to_string()))
        .flatten();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(event) = events.remove(&row.event_id) else {
            continue;
        };
        out.push(Notification {
            room_id: row.room_id.as_str().try_into().map_err(Error::internal)?,
            event,
            actions: actions_of(user, &row.recipients)?,
            read: row.read != 0,
            ts: row.ts,
        });
    }
    Ok((out, next))
}

/// The actions stored for `user` in a notification's recipients.
fn actions_of(user: &UserId, recipients: &str) -> Result<Vec<Action>> {
    let mut all: HashMap<String, Vec<Action>> = serde_json::from_str(recipients)?;
    Ok(all.remove(user.as_str()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    fn sharing(user: &UserId) -> HashMap<String, Sharing> {
        UserRules::default_for(user)
            .in_order()
            .map(|(rule, sharing)| (rule.rule_id().to_owned(), sharing))
            .collect()
    }

    #[test]
    fn a_users_default_rules_are_the_specs_defaults_for_them() {
        let alice = user_id!("@alice:example.org");
        let rules = UserRules::default_for(alice);
        let in_order: Vec<_> = rules.in_order().map(|(rule, _)| rule).collect();
        let expected = Ruleset::server_default(alice);
        let expected: Vec<_> = expected.iter().collect();
        assert_eq!(format!("{in_order:?}"), format!("{expected:?}"));
        // Only the rules that name her are kept for her alone.
        let UserRules::Default { own } = &rules else {
            panic!("no stored rules, yet not the defaults");
        };
        let own: Vec<_> = own
            .iter()
            .map(|(rule, _)| rule.as_ref().rule_id())
            .collect();
        assert_eq!(own, [".m.rule.invite_for_me", ".m.rule.is_user_mention"]);
    }

    #[test]
    fn rules_that_do_not_name_the_recipient_are_shared_between_users() {
        let alice = sharing(user_id!("@alice:example.org"));
        let bob = sharing(user_id!("@bob:example.org"));
        for rule in [
            ".m.rule.member_event",
            ".m.rule.message",
            ".m.rule.encrypted",
        ] {
            assert!(matches!(alice[rule], Sharing::Whole(_)), "{rule}");
            assert_eq!(alice[rule], bob[rule], "{rule}");
        }
        // Its event type and membership are the same test for everyone.
        let invite = ".m.rule.invite_for_me";
        assert!(matches!(alice[invite], Sharing::Guard { .. }), "{invite}");
        assert_eq!(alice[invite], bob[invite]);
        // This one looks at the recipient alone: their id.
        let mention = ".m.rule.is_user_mention";
        assert_eq!(alice[mention], Sharing::None);
        assert_eq!(bob[mention], Sharing::None);
        // A keyword is the same test for everyone, one's own name is not.
        let content_rule = |user: &UserId, pattern: &str| {
            let rule = NewPushRule::Content(ruma::push::NewPatternedPushRule::new(
                "keyword".into(),
                pattern.into(),
                vec![Action::Notify],
            ));
            let mut ruleset = Ruleset::new();
            ruleset.insert(rule, None, None).unwrap();
            UserRules::stored(user, ruleset)
                .in_order()
                .next()
                .unwrap()
                .1
        };
        let lunch = content_rule(user_id!("@alice:example.org"), "lunch");
        assert!(matches!(lunch, Sharing::Whole(_)));
        assert_eq!(lunch, content_rule(user_id!("@bob:example.org"), "lunch"));
        let own_name = content_rule(user_id!("@alice:example.org"), "alice");
        assert_eq!(own_name, Sharing::None);
    }

    /// The actions each of `users` gets for `event`, with the outcomes of
    /// shared rules and guards carried from one user to the next.
    async fn actions_for(event: Value, users: &[&UserId]) -> Vec<Vec<Action>> {
        let raw: Raw<Value> = Raw::from_json(serde_json::value::to_raw_value(&event).unwrap());
        let flat = FlattenedJson::from_raw(&raw);
        let mut ctx = PushConditionRoomCtx::new(
            ruma::owned_room_id!("!room:example.org"),
            UInt::from(3u32),
            ruma::owned_user_id!("@carol:example.org"),
            String::new(),
        );
        let mut outcomes = HashMap::new();
        let mut out = Vec::new();
        for user in users {
            let rules = UserRules::default_for(user);
            ctx.user_id = (*user).to_owned();
            ctx.user_display_name = user.localpart().to_owned();
            out.push(
                first_match(&rules, &flat, &ctx, &mut outcomes)
                    .await
                    .to_vec(),
            );
        }
        out
    }

    #[tokio::test]
    async fn a_guard_shared_between_users_still_lets_the_rule_name_its_recipient() {
        let (alice, bob) = (user_id!("@alice:example.org"), user_id!("@bob:example.org"));
        let member = |membership: &str| {
            json!({
                "type": "m.room.member",
                "state_key": bob,
                "sender": "@carol:example.org",
                "room_id": "!room:example.org",
                "content": { "membership": membership },
            })
        };
        let invited = actions_for(member("invite"), &[alice, bob]).await;
        assert!(
            !invited[0].iter().any(Action::should_notify),
            "{:?}",
            invited[0]
        );
        assert!(
            invited[1].iter().any(Action::should_notify),
            "{:?}",
            invited[1]
        );
        // The guard fails once for the join; the member rule decides for both.
        let joined = actions_for(member("join"), &[alice, bob]).await;
        assert!(joined.iter().all(|a| !a.iter().any(Action::should_notify)));
    }
}
