-- The media repository. File bytes live on disk under data_dir/media,
-- named by their sha256, so identical uploads are stored once; these tables
-- say which media ids (and thumbnails) point at which file. Kept in step
-- with ../postgres/0008_media.sql.

-- One mxc:// id. A row with no sha256 is an id made by POST /media/v1/create
-- whose content has not been uploaded yet (it expires at expires_ts).
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    -- The local user who created it; NULL for a remote server's media.
    uploader TEXT,
    content_type TEXT,
    filename TEXT,
    sha256 TEXT,
    size BIGINT NOT NULL DEFAULT 0,
    -- Upload time (local) or cache time (remote), in ms: the legacy
    -- unauthenticated endpoints serve only media older than their freeze.
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT,
    quarantined BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_by_uploader ON media (uploader, sha256);
CREATE INDEX media_by_sha256 ON media (sha256);

-- Thumbnails made from a media file, pre-generated or on demand.
CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    method TEXT NOT NULL,
    animated BIGINT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, method, animated, width, height)
);
CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);
