//! A PDU as the authorization rules see it (ruma-state-res's `Event`).

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Error, Result, store::events::StoredEvent};

#[derive(Debug, Clone, Deserialize)]
pub struct Pdu {
    #[serde(skip_deserializing, default = "placeholder_id")]
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
}

fn placeholder_id() -> OwnedEventId {
    OwnedEventId::try_from("$placeholder").expect("valid event id")
}

impl Pdu {
    pub fn parse(event_id: OwnedEventId, json: &str) -> Result<Self> {
        let mut pdu: Pdu = serde_json::from_str(json)
            .map_err(|e| Error::bad_json(format!("Malformed event: {e}")))?;
        pdu.event_id = event_id;
        if pdu.redacts.is_none() && pdu.kind == TimelineEventType::RoomRedaction {
            // Room versions 11+ carry `redacts` in the content.
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            pdu.redacts = serde_json::from_str::<Redacts>(pdu.content.get())
                .ok()
                .and_then(|r| r.redacts);
        }
        Ok(pdu)
    }

    pub fn from_stored(event: &StoredEvent) -> Result<Self> {
        let id = OwnedEventId::try_from(event.event_id.as_str()).map_err(Error::internal)?;
        Self::parse(id, &event.pdu)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
