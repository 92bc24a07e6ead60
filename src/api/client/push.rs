//! spec: "Push notifications" — push rules and the notification list.
//! (Pushers come with push gateway delivery.)

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::push::{
        delete_pushrule, get_notifications, get_pushrule, get_pushrule_actions,
        get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pushrule,
        set_pushrule_actions, set_pushrule_enabled,
    },
    serde::Raw,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::{
        push,
        rooms::events::{Format, format_events},
    },
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(all_rules)
        .ruma(global_rules)
        .ruma(rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(enabled)
        .ruma(set_enabled)
        .ruma(actions)
        .ruma(set_actions)
        .ruma(notifications)
}

async fn all_rules(
    server: Arc<Server>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    let user = &req.user().user_id;
    let rules = push::ruleset(&server, user).await?;
    Ok(get_pushrules_all::v3::Response::new(rules.to_ruleset(user)))
}

async fn global_rules(
    server: Arc<Server>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    let user = &req.user().user_id;
    let rules = push::ruleset(&server, user).await?;
    Ok(get_pushrules_global_scope::v3::Response::new(
        rules.to_ruleset(user),
    ))
}

async fn rule(
    server: Arc<Server>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let b = &req.body;
    let rule = push::rule(&server, &req.user().user_id, b.kind.clone(), &b.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(rule.into()))
}

async fn set_rule(
    server: Arc<Server>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let b = &req.body;
    push::set_rule(
        &server,
        &req.user().user_id,
        b.rule.clone(),
        b.after.as_deref(),
        b.before.as_deref(),
    )
    .await?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_rule(
    server: Arc<Server>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let b = &req.body;
    push::delete_rule(&server, &req.user().user_id, b.kind.clone(), &b.rule_id).await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn enabled(
    server: Arc<Server>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let b = &req.body;
    let rule = push::rule(&server, &req.user().user_id, b.kind.clone(), &b.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(
        rule.as_ref().enabled(),
    ))
}

async fn set_enabled(
    server: Arc<Server>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let b = &req.body;
    let user = &req.user().user_id;
    push::set_enabled(&server, user, b.kind.clone(), &b.rule_id, b.enabled).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn actions(
    server: Arc<Server>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let b = &req.body;
    let rule = push::rule(&server, &req.user().user_id, b.kind.clone(), &b.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.as_ref().actions().to_vec(),
    ))
}

async fn set_actions(
    server: Arc<Server>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let b = &req.body;
    let user = &req.user().user_id;
    push::set_actions(&server, user, b.kind.clone(), &b.rule_id, b.actions.clone()).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

async fn notifications(
    server: Arc<Server>,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let b = &req.body;
    let user = &req.user();
    let limit = b.limit.map_or(20, |l| u64::from(l) as usize);
    let only_highlight = b.only.as_deref() == Some("highlight");
    let (found, next) = push::notifications(
        &server,
        &user.user_id,
        b.from.as_deref(),
        limit,
        only_highlight,
    )
    .await?;
    let events: Vec<_> = found.iter().map(|n| n.event.clone()).collect();
    let viewer = Some((user.user_id.as_ref(), user.device_id.as_str()));
    let formatted = format_events(&server, &events, viewer, Format::Sync).await?;
    let notifications = found
        .into_iter()
        .zip(formatted)
        .map(|(n, event)| {
            get_notifications::v3::Notification::new(
                n.actions,
                Raw::from_json(event),
                n.read,
                n.room_id,
                MilliSecondsSinceUnixEpoch(UInt::new_saturating(n.ts as u64)),
            )
        })
        .collect();
    let mut response = get_notifications::v3::Response::new(notifications);
    response.next_token = next;
    Ok(response)
}
