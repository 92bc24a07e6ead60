//! MSC3814 dehydrated devices (unstable, `org.matrix.msc3814.v1`), as
//! matrix-js-sdk and Element X use them.

use std::sync::Arc;

use ruma::api::client::dehydrated_device::{
    delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::e2ee::dehydrated,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(put).ruma(get).ruma(delete).ruma(events)
}

async fn put(
    server: Arc<Server>,
    req: Ruma<put_dehydrated_device::unstable::Request>,
) -> Result<put_dehydrated_device::unstable::Response> {
    dehydrated::put(&server, &req.user().user_id, &req.body).await?;
    Ok(put_dehydrated_device::unstable::Response::new(
        req.body.device_id,
    ))
}

async fn get(
    server: Arc<Server>,
    req: Ruma<get_dehydrated_device::unstable::Request>,
) -> Result<get_dehydrated_device::unstable::Response> {
    let (device_id, device_data) = dehydrated::get(&server, &req.user().user_id).await?;
    Ok(get_dehydrated_device::unstable::Response::new(
        device_id,
        device_data,
    ))
}

async fn delete(
    server: Arc<Server>,
    req: Ruma<delete_dehydrated_device::unstable::Request>,
) -> Result<delete_dehydrated_device::unstable::Response> {
    let device_id = dehydrated::delete(&server, &req.user().user_id).await?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id))
}

async fn events(
    server: Arc<Server>,
    req: Ruma<get_events::unstable::Request>,
) -> Result<get_events::unstable::Response> {
    let b = &req.body;
    let (events, next_batch) = dehydrated::events(
        &server,
        &req.user().user_id,
        &b.device_id,
        b.next_batch.as_deref(),
    )
    .await?;
    let mut response = get_events::unstable::Response::new(events);
    response.next_batch = Some(next_batch);
    Ok(response)
}
