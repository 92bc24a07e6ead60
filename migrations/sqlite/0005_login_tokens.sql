-- Short-lived single-use login tokens (spec: `POST /login/get_token`,
-- `m.login.token`), stored as SHA-256 like access tokens.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
