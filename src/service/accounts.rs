//! Accounts, sessions and devices.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::{Error, Result, Server, api::AuthedUser, store::accounts::NewToken};

/// Tokens handed to a client when a session starts or is refreshed.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// Resolves an access token to its user and device, and notes when and
/// from where the device was last seen.
pub async fn authenticate(
    server: &Server,
    token: &str,
    client_ip: Option<&str>,
) -> Result<AuthedUser> {
    let token_hash = hash_token(token);
    let owner = server
        .db
        .token_owner(&token_hash)
        .await?
        .ok_or_else(|| Error::unknown_token(false))?;
    if owner.expires_ts.is_some_and(|e| e <= crate::now_ms()) {
        // spec: an expired token that can be refreshed is a soft logout.
        return Err(Error::unknown_token(true));
    }
    server
        .device_activity
        .seen(&owner.user_id, &owner.device_id, client_ip);
    Ok(AuthedUser {
        user_id: owner.user_id.try_into().map_err(Error::internal)?,
        device_id: owner.device_id.into(),
        token_hash,
    })
}

/// Checks a localpart against the spec's grammar for new user ids.
pub fn validate_localpart(server: &Server, localpart: &str) -> Result<OwnedUserId> {
    let valid = !localpart.is_empty()
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        );
    if !valid {
        return Err(Error::invalid_username(
            "User ID may only contain a-z, 0-9, and . _ = - / +",
        ));
    }
    let user_id = UserId::parse(format!("@{localpart}:{}", server.server_name()))
        .map_err(|e| Error::invalid_username(e.to_string()))?;
    if user_id.as_str().len() > 255 {
        return Err(Error::invalid_username(
            "User ID is longer than 255 characters",
        ));
    }
    Ok(user_id)
}

/// `M_USER_IN_USE` unless the localpart is valid and free.
pub async fn check_available(server: &Server, localpart: &str) -> Result<OwnedUserId> {
    let user_id = validate_localpart(server, &localpart.to_lowercase())?;
    if server.db.user(user_id.as_str()).await?.is_some() {
        return Err(Error::user_in_use());
    }
    Ok(user_id)
}

/// `POST /register` under the server's registration policy: checks the
/// name, runs the user-interactive stage the policy asks for, uses up a
/// registration token only once the account is certain to be made.
/// Whether `token` would let someone register now; `M_FORBIDDEN` when
/// registration is closed (every token is then invalid).
pub async fn registration_token_valid(server: &Server, token: &str) -> Result<bool> {
    if server.config.registration == crate::config::Registration::Closed {
        return Err(Error::forbidden("Registration is disabled"));
    }
    server.db.registration_token_valid(token).await
}

/// How long a token from `POST /login/get_token` stays valid.
pub const LOGIN_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// A single-use token that logs `user` in on another device
/// (`m.login.token`), valid for [`LOGIN_TOKEN_LIFETIME`].
pub async fn create_login_token(server: &Server, user: &UserId) -> Result<String> {
    let token = random_string(32);
    let expires = crate::now_ms() + LOGIN_TOKEN_LIFETIME.as_millis() as i64;
    server
        .db
        .create_login_token(&hash_token(&token), user.as_str(), expires)
        .await?;
    Ok(token)
}

/// The user a login token belongs to; `M_FORBIDDEN` for an unknown, used
/// or expired token.
pub async fn check_login_token(server: &Server, token: &str) -> Result<OwnedUserId> {
    let user = server
        .db
        .consume_login_token(&hash_token(token))
        .await?
        .ok_or_else(|| Error::forbidden("Invalid or expired login token"))?;
    user.try_into().map_err(Error::internal)
}

pub async fn register(
    server: &Server,
    username: Option<&str>,
    password: Option<&str>,
    auth: Option<&ruma::api::client::uiaa::AuthData>,
) -> Result<OwnedUserId> {
    use crate::{config::Registration, service::uia};
    let stage = match server.config.registration {
        Registration::Open => uia::DUMMY,
        Registration::Token => uia::REGISTRATION_TOKEN,
        Registration::Closed => return Err(Error::forbidden("Registration is disabled")),
    };
    let generated = random_string(12).to_lowercase();
    let user_id = check_available(server, username.unwrap_or(&generated)).await?;
    // Clients first send no `auth` (and often no password) to learn the flows.
    uia::authenticate(server, &[stage], auth, uia::Subject::Anonymous).await?;
    let password = password.ok_or_else(|| Error::missing_param("A password is required"))?;
    if let Some(ruma::api::client::uiaa::AuthData::RegistrationToken(t)) = auth {
        server.db.consume_registration_token(&t.token).await?;
    }
    create_user(server, &user_id, Some(password), false).await?;
    Ok(user_id)
}

/// Makes an account; `M_USER_IN_USE` if the id is taken.
pub async fn create_user(
    server: &Server,
    user_id: &UserId,
    password: Option<&str>,
    admin: bool,
) -> Result<()> {
    let hash = match password {
        Some(p) => Some(hash_password(server.config.password_hash_passes, p.to_owned()).await?),
        None => None,
    };
    let displayname = user_id.localpart();
    if !server
        .db
        .create_user(user_id.as_str(), hash.as_deref(), displayname, admin)
        .await?
    {
        return Err(Error::user_in_use());
    }
    tracing::info!(%user_id, admin, "account created");
    Ok(())
}

/// Starts a session on a (new or existing) device of the user.
pub async fn start_session(
    server: &Server,
    user_id: &UserId,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<&str>,
    with_refresh_token: bool,
) -> Result<Session> {
    let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase().into());
    let access_token = random_string(32);
    let refresh_token = with_refresh_token.then(|| random_string(32));
    let lifetime = server.config.access_token_lifetime_ms;
    let access_hash = hash_token(&access_token);
    let refresh_hash = refresh_token.as_deref().map(hash_token);
    server
        .db
        .start_session(
            user_id.as_str(),
            device_id.as_str(),
            display_name,
            NewToken {
                token_hash: &access_hash,
                expires_ts: refresh_token
                    .is_some()
                    .then(|| crate::now_ms() + lifetime as i64),
                refresh_token_hash: refresh_hash.as_deref(),
            },
        )
        .await?;
    Ok(Session {
        user_id: user_id.to_owned(),
        device_id,
        access_token,
        expires_in_ms: refresh_token.is_some().then_some(lifetime),
        refresh_token,
    })
}

pub async fn refresh(server: &Server, refresh_token: &str) -> Result<Session> {
    let access_token = random_string(32);
    let new_refresh = random_string(32);
    let lifetime = server.config.access_token_lifetime_ms;
    let (access_hash, refresh_hash) = (hash_token(&access_token), hash_token(&new_refresh));
    let owner = server
        .db
        .refresh_session(
            &hash_token(refresh_token),
            NewToken {
                token_hash: &access_hash,
                expires_ts: Some(crate::now_ms() + lifetime as i64),
                refresh_token_hash: Some(&refresh_hash),
            },
        )
        .await?
        .ok_or_else(|| Error::unknown_token(false))?;
    Ok(Session {
        user_id: owner.0.try_into().map_err(Error::internal)?,
        device_id: owner.1.into(),
        access_token,
        refresh_token: Some(new_refresh),
        expires_in_ms: Some(lifetime),
    })
}

/// Resolves the user a password login names, and checks the password.
pub async fn check_password(server: &Server, user: &str, password: &str) -> Result<OwnedUserId> {
    let user_id = if user.starts_with('@') {
        UserId::parse(user).map_err(|_| Error::forbidden("Invalid username or password"))?
    } else {
        UserId::parse(format!("@{}:{}", user.to_lowercase(), server.server_name()))
            .map_err(|_| Error::forbidden("Invalid username or password"))?
    };
    let row = server.db.user(user_id.as_str()).await?;
    let Some(row) = row else {
        return Err(Error::forbidden("Invalid username or password"));
    };
    if row.deactivated != 0 {
        return Err(Error::new(
            http::StatusCode::FORBIDDEN,
            "M_USER_DEACTIVATED",
            "This account has been deactivated",
        ));
    }
    let Some(hash) = row.password_hash else {
        return Err(Error::forbidden("Invalid username or password"));
    };
    if !verify_password(password.to_owned(), hash).await? {
        return Err(Error::forbidden("Invalid username or password"));
    }
    Ok(user_id)
}

pub async fn change_password(
    server: &Server,
    user: &AuthedUser,
    new_password: &str,
    logout_devices: bool,
) -> Result<()> {
    let hash = hash_password(server.config.password_hash_passes, new_password.to_owned()).await?;
    server
        .db
        .set_password_hash(user.user_id.as_str(), &hash)
        .await?;
    if logout_devices {
        let others: Vec<String> = server
            .db
            .devices(user.user_id.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| d != user.device_id.as_str())
            .collect();
        server
            .db
            .delete_devices(user.user_id.as_str(), &others)
            .await?;
    }
    Ok(())
}

/// Argon2id with 7 MiB and (by default) 5 passes, one of OWASP's
/// equivalent settings (with 19 MiB × 2 and 12 MiB × 3): the least memory
/// per hash, which keeps a burst of logins from inflating the server.
/// Stored hashes carry their own parameters, so verifying a hash made with
/// other ones still works.
fn hasher(passes: u32) -> Result<Argon2<'static>> {
    let params = argon2::Params::new(7 * 1024, passes, 1, None).map_err(Error::internal)?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

async fn hash_password(passes: u32, password: String) -> Result<String> {
    let hasher = hasher(passes)?;
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await
}

async fn verify_password(password: String, hash: String) -> Result<bool> {
    on_hashing_thread(move || {
        let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
        // The memory and passes come from the stored hash.
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Passwords are hashed one at a time, on a dedicated thread: each hash
/// holds 7 MiB while it runs, which set the server's peak memory (two
/// threads added 17 MiB to it during a burst of registrations). One
/// thread still hashes about 40 passwords a second, and logins are rare:
/// clients keep their access tokens.
const HASHING_THREADS: usize = 1;

async fn on_hashing_thread<T: Send + 'static>(
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    static JOBS: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<HashJob>>> =
        std::sync::OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..HASHING_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("corvid-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().expect("hash queue lock").recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn hashing thread");
        }
        std::sync::Mutex::new(tx)
    });
    let (done, result) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = done.send(job());
    });
    jobs.lock()
        .expect("hash queue lock")
        .send(job)
        .map_err(Error::internal)?;
    result.await.map_err(Error::internal)?
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_round_trip() {
        for passes in [5, 1] {
            let hash = hash_password(passes, "hunter2".into()).await.unwrap();
            assert!(hash.contains(&format!("m=7168,t={passes},p=1")), "{hash}");
            assert!(
                verify_password("hunter2".into(), hash.clone())
                    .await
                    .unwrap()
            );
            assert!(!verify_password("hunter3".into(), hash).await.unwrap());
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (random_string(32), random_string(32));
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }
}
