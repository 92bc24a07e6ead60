//! spec: client-server API, "Spaces", and server-server API, "Spaces":
//! the tree of rooms a space's `m.space.child` events link, walked depth
//! first. Rooms this server holds are described from their state; others
//! are asked of a server their link names (`via`).

use std::collections::HashSet;

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId, api::federation::space::get_hierarchy,
};
use serde_json::{Value, json};

use super::directory::{self, Description};
use crate::{Error, Result, Server};

/// Rooms per page at most, and how deep a walk goes at most.
const MAX_LIMIT: usize = 100;
const MAX_DEPTH: usize = 10;

/// What `/hierarchy` asks.
pub struct HierarchyRequest<'a> {
    pub from: Option<&'a str>,
    pub limit: Option<usize>,
    pub max_depth: Option<usize>,
    pub suggested_only: bool,
}

/// One `m.space.child` link of a space.
struct ChildLink {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    suggested: bool,
    order: String,
    ts: i64,
    /// The stripped event, as `children_state` lists it.
    stripped: Value,
}

/// A room as a walk finds it: its summary (with `children_state`) and links.
struct Found {
    chunk: Value,
    links: Vec<ChildLink>,
}

/// `GET /rooms/{roomId}/hierarchy`: a page of the tree under `root` that
/// `user` may see, and the token of the next page.
pub async fn hierarchy(
    server: &Server,
    user: &UserId,
    root: &RoomId,
    req: HierarchyRequest<'_>,
) -> Result<(Vec<Value>, Option<String>)> {
    let skip = match req.from {
        Some(token) => token
            .strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("Invalid pagination token"))?,
        None => 0,
    };
    let limit = req.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let max_depth = req.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    let Some(root_found) =
        local_room(server, root, &Viewer::User(user), req.suggested_only).await?
    else {
        return Err(Error::forbidden("You cannot see this room"));
    };
    let mut seen: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
    let mut rooms = Vec::new();
    let mut stack: Vec<(Found, usize)> = vec![(root_found, 0)];
    let mut more = false;
    while let Some((found, depth)) = stack.pop() {
        if rooms.len() == skip + limit {
            more = true;
            break;
        }
        let mut children = Vec::new();
        if depth < max_depth {
            for link in found
                .links
                .iter()
                .filter(|l| !req.suggested_only || l.suggested)
            {
                if !seen.insert(link.room_id.clone()) {
                    continue;
                }
                let child = match local_room(
                    server,
                    &link.room_id,
                    &Viewer::User(user),
                    req.suggested_only,
                )
                .await?
                {
                    Some(found) => Some(found),
                    None => remote_room(server, link, req.suggested_only).await,
                };
                children.extend(child);
            }
        }
        rooms.push(found.chunk);
        stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
    }
    let next = more.then(|| format!("h{}", skip + limit));
    Ok((rooms.into_iter().skip(skip).collect(), next))
}

/// Who is looking: a local user, or another server.
enum Viewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
}

/// A room this server holds, if the viewer may see it: members and, for a
/// server, servers with a member; anyone when the room is world-readable
/// or open to joining or knocking, or restricted to rooms they are in.
async fn local_room(
    server: &Server,
    room_id: &RoomId,
    viewer: &Viewer<'_>,
    suggested_only: bool,
) -> Result<Option<Found>> {
    if server.db.room(room_id.as_str()).await?.is_none() {
        return Ok(None);
    }
    let joined = server.db.room_member_ids(room_id.as_str(), "join").await?;
    let description = directory::describe(server, room_id.as_str(), joined.len() as i64).await?;
    if description.room_version.is_none() || !may_see(server, room_id, viewer, &description).await?
    {
        return Ok(None);
    }
    let links = child_links(server, room_id).await?;
    let mut chunk = directory::summary_json(description);
    chunk["children_state"] = links
        .iter()
        .filter(|l| !suggested_only || l.suggested)
        .map(|l| l.stripped.clone())
        .collect::<Vec<_>>()
        .into();
    Ok(Some(Found { chunk, links }))
}

async fn may_see(
    server: &Server,
    room_id: &RoomId,
    viewer: &Viewer<'_>,
    d: &Description,
) -> Result<bool> {
    if d.room.world_readable || matches!(d.room.join_rule.as_deref(), Some("public" | "knock")) {
        return Ok(true);
    }
    match viewer {
        Viewer::Server(origin) => {
            server
                .db
                .server_in_room(room_id.as_str(), origin.as_str())
                .await
        }
        Viewer::User(user) => {
            let member = server
                .db
                .membership(room_id.as_str(), user.as_str())
                .await?
                .is_some_and(|(m, _)| m != "leave" && m != "ban");
            if member {
                return Ok(true);
            }
            let restricted = matches!(
                d.room.join_rule.as_deref(),
                Some("restricted" | "knock_restricted")
            );
            if !restricted {
                return Ok(false);
            }
            for allowed in d.join_rules["allow"].as_array().into_iter().flatten() {
                if let Some(other) = allowed["room_id"].as_str()
                    && server
                        .db
                        .membership(other, user.as_str())
                        .await?
                        .is_some_and(|(m, _)| m == "join")
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// The room's `m.space.child` links with at least one `via`, in the
/// spec's order: `order`, then the link's timestamp, then room id.
async fn child_links(server: &Server, room_id: &RoomId) -> Result<Vec<ChildLink>> {
    let mut links = Vec::new();
    for event in server.db.current_state_events(room_id.as_str()).await? {
        if event.event_type != "m.space.child" {
            continue;
        }
        let pdu: Value = serde_json::from_str(&event.pdu)?;
        let content = &pdu["content"];
        let via: Vec<OwnedServerName> = content["via"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
            .collect();
        let Some(child) = event
            .state_key
            .as_deref()
            .and_then(|k| OwnedRoomId::try_from(k).ok())
        else {
            continue;
        };
        if via.is_empty() {
            continue;
        }
        let order = content["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
            .unwrap_or("\u{7f}")
            .to_owned();
        links.push(ChildLink {
            room_id: child,
            via,
            suggested: content["suggested"] == true,
            order,
            ts: pdu["origin_server_ts"].as_i64().unwrap_or_default(),
            stripped: json!({
                "type": "m.space.child",
                "state_key": event.state_key,
                "sender": pdu["sender"],
                "content": content,
                "origin_server_ts": pdu["origin_server_ts"],
            }),
        });
    }
    links.sort_by(|a, b| {
        (a.order.as_str(), a.ts, a.room_id.as_str()).cmp(&(
            b.order.as_str(),
            b.ts,
            b.room_id.as_str(),
        ))
    });
    Ok(links)
}

/// A room this server does not hold, from the first server its link names
/// that answers (its `/hierarchy`; the children it lists come without their
/// own links, so each room of the walk is asked for itself).
async fn remote_room(server: &Server, link: &ChildLink, suggested_only: bool) -> Option<Found> {
    let mut answer = None;
    for via in link.via.iter().filter(|v| *v != server.server_name()) {
        let mut request = get_hierarchy::v1::Request::new(link.room_id.clone());
        request.suggested_only = suggested_only;
        match server.federation.send(via, request).await {
            Ok(response) => {
                answer = serde_json::to_value(&response.room).ok();
                break;
            }
            Err(e) => {
                tracing::info!(%via, room_id = %link.room_id, error = %e, "hierarchy over federation failed")
            }
        }
    }
    let chunk = answer?;
    let links = chunk["children_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let room_id = OwnedRoomId::try_from(e["state_key"].as_str()?).ok()?;
            let via: Vec<OwnedServerName> = e["content"]["via"]
                .as_array()?
                .iter()
                .filter_map(|v| OwnedServerName::try_from(v.as_str()?).ok())
                .collect();
            (!via.is_empty()).then(|| ChildLink {
                room_id,
                via,
                suggested: e["content"]["suggested"] == true,
                order: String::new(),
                ts: 0,
                stripped: e.clone(),
            })
        })
        .collect();
    Some(Found { chunk, links })
}

/// `GET /federation/v1/hierarchy/{roomId}`: the room and its direct
/// children this server holds, as `origin` may see them.
pub async fn hierarchy_for_server(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    suggested_only: bool,
) -> Result<(Value, Vec<Value>, Vec<OwnedRoomId>)> {
    let viewer = Viewer::Server(origin);
    let Some(found) = local_room(server, room_id, &viewer, suggested_only).await? else {
        return Err(Error::not_found("Room not found or not accessible"));
    };
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for link in found
        .links
        .iter()
        .filter(|l| !suggested_only || l.suggested)
    {
        if server.db.room(link.room_id.as_str()).await?.is_none() {
            continue;
        }
        match local_room(server, &link.room_id, &viewer, suggested_only).await? {
            Some(child) => children.push(child.chunk),
            None => inaccessible.push(link.room_id.clone()),
        }
    }
    Ok((found.chunk, children, inaccessible))
}
