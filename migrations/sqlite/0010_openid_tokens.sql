-- OpenID tokens (spec: client-server API, "OpenID"): a user proves who they
-- are to a third party (a widget, an integration manager), which asks
-- /_matrix/federation/v1/openid/userinfo. Stored hashed, like access
-- tokens. Kept in step with the other backend's 0010_openid_tokens.sql.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_by_expiry ON openid_tokens (expires_ts);
