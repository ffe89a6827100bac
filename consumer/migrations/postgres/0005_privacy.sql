-- Forget on request (docs/privacy.md). See the SQLite migration
-- 0008_privacy.sql for what each column and table is for.
ALTER TABLE events ADD COLUMN author_id TEXT;
ALTER TABLE events ADD COLUMN quoted_user TEXT;
ALTER TABLE events ADD COLUMN quoted_event TEXT;
UPDATE events SET
    author_id = body::jsonb #>> '{author,id}',
    quoted_user = COALESCE(
        body::jsonb #>> '{reply_to,user_id}',
        CASE WHEN kind IN ('ban', 'timeout') THEN body::jsonb #>> '{details,user,id}' END),
    quoted_event = COALESCE(
        body::jsonb #>> '{reply_to,message_id}',
        CASE WHEN kind = 'message_delete' THEN body::jsonb #>> '{details,target_message_id}' END)
WHERE body::jsonb ? 'author' OR body::jsonb ? 'reply_to' OR kind IN ('ban', 'timeout', 'message_delete');
CREATE INDEX events_author_id ON events (platform, author_id) WHERE author_id IS NOT NULL;
CREATE INDEX events_quoted_user ON events (platform, quoted_user) WHERE quoted_user IS NOT NULL;
CREATE INDEX events_quoted_event ON events (platform, quoted_event) WHERE quoted_event IS NOT NULL;

CREATE TABLE privacy_rules (
    kind       TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    opted_out  BOOLEAN NOT NULL DEFAULT FALSE,
    horizon    BIGINT,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (kind, platform, value)
);
CREATE TABLE privacy_state (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version   BIGINT  NOT NULL
);
INSERT INTO privacy_state (version) VALUES (0);

CREATE TABLE privacy_audit (
    id            BIGSERIAL PRIMARY KEY,
    at            BIGINT NOT NULL,
    action        TEXT   NOT NULL,
    subject       TEXT   NOT NULL,
    requested_by  TEXT   NOT NULL,
    rows_deleted  BIGINT NOT NULL DEFAULT 0,
    rows_redacted BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE privacy_notices (
    id TEXT   PRIMARY KEY,
    at BIGINT NOT NULL
);

CREATE TABLE privacy_codes (
    code       TEXT   PRIMARY KEY,
    platform   TEXT   NOT NULL,
    login      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
