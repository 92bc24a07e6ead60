//! Receiving a transaction: spec server-server API, "Transactions". A
//! transaction is applied once: a retry of one already received gets the
//! same answer. PDUs are grouped by room (rooms are ingested side by side,
//! each room's PDUs in order), then the EDUs are applied.

use std::{collections::BTreeMap, sync::Arc};

use futures::future::join_all;
use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomVersionId, ServerName,
    api::federation::transactions::send_transaction_message::v1 as send,
};

use super::{edu, ingest, pdu};
use crate::{Error, Result, Server, service::rooms};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

pub async fn receive(
    server: &Arc<Server>,
    origin: &ServerName,
    request: send::Request,
) -> Result<PduResults> {
    if request.origin != origin {
        return Err(Error::bad_json(
            "origin does not match the request's signature",
        ));
    }
    if request.pdus.len() > MAX_PDUS || request.edus.len() > MAX_EDUS {
        return Err(Error::too_large(format!(
            "A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let _one_at_a_time = server.inbound_origins.lock(origin.as_str()).await;
    let txn_id = request.transaction_id.as_str();
    if let Some(previous) = server.db.inbound_txn(origin.as_str(), txn_id).await? {
        return Ok(serde_json::from_str::<Stored>(&previous)?.into_results());
    }
    let results = receive_pdus(server, origin, request.pdus).await;
    edu::receive(server, origin, request.edus).await;
    let stored = serde_json::to_string(&Stored::from_results(&results))?;
    server
        .db
        .record_inbound_txn(origin.as_str(), txn_id, &stored)
        .await?;
    Ok(results)
}

async fn receive_pdus(
    server: &Arc<Server>,
    origin: &ServerName,
    raws: Vec<Box<serde_json::value::RawValue>>,
) -> PduResults {
    let mut by_room: BTreeMap<OwnedRoomId, Vec<CanonicalJsonObject>> = BTreeMap::new();
    for raw in raws {
        let Ok(object) = pdu::parse_object(&raw) else {
            tracing::info!(%origin, "unparseable PDU dropped");
            continue;
        };
        match pdu::claimed_room(&object).and_then(|r| OwnedRoomId::try_from(r).ok()) {
            Some(room_id) => by_room.entry(room_id).or_default().push(object),
            None => tracing::info!(%origin, "PDU without a room dropped"),
        }
    }
    let rooms = by_room
        .into_iter()
        .map(|(room_id, objects)| receive_room(server, origin, room_id, objects));
    join_all(rooms).await.into_iter().flatten().collect()
}

/// One room's PDUs. A PDU whose event id cannot be computed (unknown room,
/// malformed) has no entry in the answer: the spec keys results by event id.
async fn receive_room(
    server: &Arc<Server>,
    origin: &ServerName,
    room_id: OwnedRoomId,
    objects: Vec<CanonicalJsonObject>,
) -> Vec<(OwnedEventId, Result<(), String>)> {
    let version = match resident_room_version(server, &room_id).await {
        Ok(version) => version,
        Err(e) => {
            tracing::info!(%origin, %room_id, error = %e.message, "PDUs for a room we are not in");
            return Vec::new();
        }
    };
    let Ok(rules) = corvid_federation::rules_for(&version) else {
        return Vec::new();
    };
    let identified: Vec<(OwnedEventId, CanonicalJsonObject)> = objects
        .into_iter()
        .filter_map(|object| Some((pdu::event_id_of(&object, &rules)?, object)))
        .collect();
    ingest::receive(server, origin, &room_id, &rules, identified)
        .await
        .into_iter()
        .map(|(id, result)| (id, result.map_err(|e| e.message)))
        .collect()
}

/// The version of a room a local user is joined to.
async fn resident_room_version(server: &Server, room_id: &OwnedRoomId) -> Result<RoomVersionId> {
    let version = rooms::require_room(server, room_id).await?;
    if !server
        .db
        .server_in_room(room_id.as_str(), server.server_name().as_str())
        .await?
    {
        return Err(Error::forbidden("No local user is in this room"));
    }
    Ok(version)
}

/// A transaction's answer as kept for retries.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored(BTreeMap<OwnedEventId, Option<String>>);

impl Stored {
    fn from_results(results: &PduResults) -> Self {
        Self(
            results
                .iter()
                .map(|(id, r)| (id.clone(), r.as_ref().err().cloned()))
                .collect(),
        )
    }

    fn into_results(self) -> PduResults {
        self.0
            .into_iter()
            .map(|(id, error)| (id, error.map_or(Ok(()), Err)))
            .collect()
    }
}
