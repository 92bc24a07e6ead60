//! spec: server-server API, "Retrieving events", "Retrieving event
//! authorisation information", "Backfilling and retrieving missing events".

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId,
    api::federation::{
        authorization::get_event_authorization, backfill::get_backfill, event::get_event,
        event::get_event_by_timestamp, event::get_missing_events, event::get_room_state,
        event::get_room_state_ids,
    },
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::federation::history,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(event)
        .ruma(state)
        .ruma(state_ids)
        .ruma(event_auth)
        .ruma(missing_events)
        .ruma(backfill)
        .ruma(timestamp_to_event)
}

async fn event(
    server: Arc<Server>,
    req: Ruma<get_event::v1::Request>,
) -> Result<get_event::v1::Response> {
    let pdu = history::event(&server, req.origin(), &req.body.event_id).await?;
    Ok(get_event::v1::Response::new(
        server.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    ))
}

async fn state(
    server: Arc<Server>,
    req: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    let (state, chain) =
        history::state_ids_before(&server, req.origin(), &req.body.room_id, &req.body.event_id)
            .await?;
    Ok(get_room_state::v1::Response::new(
        history::pdus(&server, &chain).await?,
        history::pdus(&server, &state).await?,
    ))
}

async fn state_ids(
    server: Arc<Server>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    let (state, chain) =
        history::state_ids_before(&server, req.origin(), &req.body.room_id, &req.body.event_id)
            .await?;
    Ok(get_room_state_ids::v1::Response::new(
        ids(chain)?,
        ids(state)?,
    ))
}

async fn event_auth(
    server: Arc<Server>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let chain =
        history::auth_chain_ids(&server, req.origin(), &req.body.room_id, &req.body.event_id)
            .await?;
    Ok(get_event_authorization::v1::Response::new(
        history::pdus(&server, &chain).await?,
    ))
}

async fn missing_events(
    server: Arc<Server>,
    req: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let body = &req.body;
    let earliest: Vec<String> = body.earliest_events.iter().map(|e| e.to_string()).collect();
    let latest: Vec<String> = body.latest_events.iter().map(|e| e.to_string()).collect();
    let events = history::missing_events(
        &server,
        req.origin(),
        &body.room_id,
        &earliest,
        &latest,
        u64::from(body.limit) as usize,
        i64::try_from(u64::from(body.min_depth)).unwrap_or(i64::MAX),
    )
    .await?;
    Ok(get_missing_events::v1::Response::new(events))
}

async fn backfill(
    server: Arc<Server>,
    req: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let from: Vec<String> = req.body.v.iter().map(|e| e.to_string()).collect();
    let limit = u64::from(req.body.limit) as usize;
    let pdus = history::backfill(&server, req.origin(), &req.body.room_id, &from, limit).await?;
    Ok(get_backfill::v1::Response::new(
        server.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    ))
}

async fn timestamp_to_event(
    server: Arc<Server>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let body = &req.body;
    let forward = body.dir == ruma::api::Direction::Forward;
    let ts = i64::from(body.ts.get());
    let (event_id, ts) =
        history::event_near(&server, req.origin(), &body.room_id, ts, forward).await?;
    let event_id = OwnedEventId::try_from(event_id).map_err(Error::internal)?;
    let ts = ruma::UInt::try_from(ts.max(0)).map_err(Error::internal)?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(ts),
    ))
}

fn ids(ids: Vec<String>) -> Result<Vec<OwnedEventId>> {
    ids.into_iter()
        .map(|id| OwnedEventId::try_from(id).map_err(Error::internal))
        .collect()
}
