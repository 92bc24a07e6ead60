//! spec: "Reporting content".

use std::sync::Arc;

use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::report,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(event).ruma(room).ruma(user)
}

async fn event(
    server: Arc<Server>,
    req: Ruma<report_content::v3::Request>,
) -> Result<report_content::v3::Response> {
    let b = &req.body;
    let reporter = &req.user().user_id;
    report::report_event(
        &server,
        reporter,
        &b.room_id,
        &b.event_id,
        b.reason.as_deref(),
    )
    .await?;
    Ok(report_content::v3::Response::new())
}

async fn room(
    server: Arc<Server>,
    req: Ruma<report_room::v3::Request>,
) -> Result<report_room::v3::Response> {
    let b = &req.body;
    report::report_room(&server, &req.user().user_id, &b.room_id, &b.reason).await?;
    Ok(report_room::v3::Response::new())
}

async fn user(
    server: Arc<Server>,
    req: Ruma<report_user::v3::Request>,
) -> Result<report_user::v3::Response> {
    let b = &req.body;
    report::report_user(&server, &req.user().user_id, &b.user_id, &b.reason).await?;
    Ok(report_user::v3::Response::new())
}
