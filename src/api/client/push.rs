//! spec: "Push notifications" — the rule set clients fetch at start-up.
//! Editing rules comes with the messaging features.

use std::sync::Arc;

use ruma::{api::client::push::get_pushrules_all, push::Ruleset};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(all_rules)
}

async fn all_rules(
    _: Arc<Server>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(
        Ruleset::server_default(&req.user().user_id),
    ))
}
