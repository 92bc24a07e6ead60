//! User-interactive authentication (spec: client-server API, "User-Interactive
//! Authentication API"). Sessions live in the database, so any process can
//! continue a flow another one started.

use http::StatusCode;
use ruma::api::client::uiaa::AuthData;
use serde_json::json;

use crate::{Error, Result, Server, service::accounts};

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// Who is authenticating: password stages check this user's password.
pub enum Subject<'a> {
    Anonymous,
    User(&'a ruma::UserId),
}

/// Runs one step of a single-flow UIA. `Ok(())` once every stage of `flow`
/// is complete; otherwise the 401 the spec prescribes, with the session id.
pub async fn authenticate(
    server: &Server,
    flow: &[&str],
    auth: Option<&AuthData>,
    subject: Subject<'_>,
) -> Result<()> {
    let Some(auth) = auth else {
        let session = accounts::random_string(24);
        server.db.save_uia_session(&session, &[]).await?;
        return Err(challenge(flow, &[], &session, None));
    };
    let session = match auth.session() {
        Some(s) => s.to_owned(),
        None => {
            let s = accounts::random_string(24);
            server.db.save_uia_session(&s, &[]).await?;
            s
        }
    };
    let mut completed =
        server.db.uia_session(&session).await?.ok_or_else(|| {
            Error::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Unknown UIA session")
        })?;

    match complete_stage(server, flow, auth, &subject).await {
        Ok(stage) => {
            if !completed.iter().any(|c| c == stage) {
                completed.push(stage.to_owned());
            }
        }
        Err(failure) => return Err(challenge(flow, &completed, &session, Some(failure))),
    }
    if flow
        .iter()
        .all(|stage| completed.iter().any(|c| c == stage))
    {
        server.db.delete_uia_session(&session).await?;
        return Ok(());
    }
    server.db.save_uia_session(&session, &completed).await?;
    Err(challenge(flow, &completed, &session, None))
}

/// The one-stage flow sensitive account operations use: the user's password.
pub async fn confirm_password(
    server: &Server,
    auth: Option<&AuthData>,
    user: &ruma::UserId,
) -> Result<()> {
    authenticate(server, &[PASSWORD], auth, Subject::User(user)).await
}

async fn complete_stage(
    server: &Server,
    flow: &[&str],
    auth: &AuthData,
    subject: &Subject<'_>,
) -> Result<&'static str> {
    let stage = match auth {
        AuthData::Dummy(_) => DUMMY,
        AuthData::Password(_) => PASSWORD,
        AuthData::RegistrationToken(_) => REGISTRATION_TOKEN,
        _ => {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                "M_UNRECOGNIZED",
                "Unsupported authentication type",
            ));
        }
    };
    if !flow.contains(&stage) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            format!("{stage} is not part of this flow"),
        ));
    }
    match auth {
        AuthData::Password(p) => {
            let ruma::api::client::uiaa::UserIdentifier::Matrix(id) = &p.identifier else {
                return Err(Error::forbidden("Only user identifiers are supported"));
            };
            let user = accounts::check_password(server, &id.user, &p.password).await?;
            if let Subject::User(expected) = subject
                && user != *expected
            {
                return Err(Error::forbidden("Password belongs to another user"));
            }
        }
        AuthData::RegistrationToken(t) if !server.db.registration_token_valid(&t.token).await? => {
            return Err(Error::forbidden("Invalid registration token"));
        }
        _ => {}
    }
    Ok(stage)
}

fn challenge(flow: &[&str], completed: &[String], session: &str, failure: Option<Error>) -> Error {
    let mut error = match failure {
        Some(f) => Error::new(StatusCode::UNAUTHORIZED, f.errcode, f.message),
        None => Error::uia_challenge(),
    };
    error
        .extra
        .insert("flows".into(), json!([{ "stages": flow }]));
    error.extra.insert("completed".into(), json!(completed));
    error.extra.insert("params".into(), json!({}));
    error.extra.insert("session".into(), json!(session));
    error
}
