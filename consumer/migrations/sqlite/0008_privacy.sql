-- Forget on request (docs/privacy.md).
--
-- Who an event is by and whom it quotes, by the platform's ids (logins
-- change): a purge finds a user's events by `author_id`, and the events
-- that quote them (a reply's parent, a ban or timeout of them, a
-- message_delete's copy of their text) by `quoted_user` / `quoted_event`.
ALTER TABLE events ADD COLUMN author_id TEXT;
ALTER TABLE events ADD COLUMN quoted_user TEXT;
ALTER TABLE events ADD COLUMN quoted_event TEXT;
UPDATE events SET
    author_id = json_extract(body, '$.author.id'),
    quoted_user = COALESCE(
        json_extract(body, '$.reply_to.user_id'),
        CASE WHEN kind IN ('ban', 'timeout') THEN json_extract(body, '$.details.user.id') END),
    quoted_event = COALESCE(
        json_extract(body, '$.reply_to.message_id'),
        CASE WHEN kind = 'message_delete' THEN json_extract(body, '$.details.target_message_id') END);
CREATE INDEX events_author_id ON events (platform, author_id) WHERE author_id IS NOT NULL;
CREATE INDEX events_quoted_user ON events (platform, quoted_user) WHERE quoted_user IS NOT NULL;
CREATE INDEX events_quoted_event ON events (platform, quoted_event) WHERE quoted_event IS NOT NULL;

-- Opt-outs and purge horizons. `kind` is user | channel | message |
-- before; `value` the user id, channel word, event id or the moment (ms).
CREATE TABLE privacy_rules (
    kind       TEXT    NOT NULL,
    platform   TEXT    NOT NULL,       -- '' for `before`
    value      TEXT    NOT NULL,
    opted_out  INTEGER NOT NULL DEFAULT 0,
    horizon    INTEGER,                -- ms: events received at or before it are refused
    updated_at INTEGER NOT NULL,       -- ms
    PRIMARY KEY (kind, platform, value)
);
-- Bumped by every change of privacy_rules, so a writer reloads the rules
-- only when they changed (one row read per batch otherwise).
CREATE TABLE privacy_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version   INTEGER NOT NULL
);
INSERT INTO privacy_state (singleton, version) VALUES (1, 0);

-- Every opt-out, opt-in and purge: who asked, what subject, when, how many
-- rows. Never any content.
CREATE TABLE privacy_audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,    -- ms
    action        TEXT    NOT NULL,    -- opt_out | opt_in | purge
    subject       TEXT    NOT NULL,    -- e.g. `user twitch:123`
    requested_by  TEXT    NOT NULL,
    rows_deleted  INTEGER NOT NULL DEFAULT 0,
    rows_redacted INTEGER NOT NULL DEFAULT 0,
    duration_ms   INTEGER NOT NULL DEFAULT 0
);

-- The privacy notices this store has applied (its own, and those of other
-- deployments it adopted from the stream), by notice id.
CREATE TABLE privacy_notices (
    id TEXT    PRIMARY KEY,
    at INTEGER NOT NULL                -- ms
);

-- Self-service opt-out codes (POST /api/privacy/optout), single use.
CREATE TABLE privacy_codes (
    code       TEXT    PRIMARY KEY,
    platform   TEXT    NOT NULL,
    login      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL        -- ms
);

-- Purged text must not stay in the full-text index's segments.
INSERT INTO events_fts (events_fts, rank) VALUES ('secure-delete', 1);
