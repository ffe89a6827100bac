-- chatbus consumer store, PostgreSQL. See consumer/src/store/postgres.rs.

-- Search folds case and accents: `hello` finds `HÉLLO`, and Greek's final
-- sigma is a sigma (as SQLite's unicode61 folds them). unaccent() is only
-- STABLE; the search column needs an IMMUTABLE function.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE FUNCTION chatbus_fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT translate(lower(public.unaccent('public.unaccent'::regdictionary, t)), 'ς', 'σ') $$;

-- Every channel ever seen, with counters the writer keeps per batch (and
-- the delete trigger below on deletes).
CREATE TABLE channels (
    id            BIGSERIAL PRIMARY KEY,
    platform      TEXT   NOT NULL,
    channel       TEXT   NOT NULL,
    routing_key   TEXT   NOT NULL,
    event_count   BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_cursor   BIGINT,
    last_event_at BIGINT,               -- sent_at of the newest event, ms
    UNIQUE (platform, channel)
);

-- The newest cursor handed out. Advanced by the writer under the write
-- lock (an advisory lock), so cursors grow in commit order and are never
-- reused, even after retention deleted the newest rows.
CREATE TABLE cursor_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    seq       BIGINT  NOT NULL
);
INSERT INTO cursor_head (seq) VALUES (0);

-- One row per event, partitioned by day of storage (`stored_at`, ms):
-- retention drops whole partitions. The writer creates each day's
-- partition ahead of time; anything outside lands in the default one.
CREATE TABLE events (
    seq          BIGINT NOT NULL,       -- the cursor
    platform     TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    channel_ref  BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    sent_at      BIGINT NOT NULL,       -- ms since the epoch
    stored_at    BIGINT NOT NULL,       -- ms since the epoch; partition key
    author_login TEXT,
    text         TEXT,
    body         TEXT   NOT NULL,       -- the event JSON as published
    moderation   TEXT,                  -- deleted | banned | timed_out | cleared
    moderated_by BIGINT,                -- seq of the moderation event
    search       tsvector GENERATED ALWAYS AS
                     (to_tsvector('simple', chatbus_fold(coalesce(text, '')))) STORED,
    PRIMARY KEY (stored_at, seq)
) PARTITION BY RANGE (stored_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE INDEX events_seq ON events (seq);
CREATE INDEX events_channel_seq ON events (channel_ref, seq);
CREATE INDEX events_author_seq ON events (author_login, seq) WHERE author_login IS NOT NULL;
CREATE INDEX events_kind_seq ON events (kind, seq);
CREATE INDEX events_sent_at ON events (sent_at);
CREATE INDEX events_search ON events USING gin (search);

-- Every stored (platform, id), across partitions: the idempotency key (a
-- unique constraint on a partitioned table must contain the partition key,
-- which would make it per day), and where an event's row is.
CREATE TABLE event_ids (
    platform  TEXT   NOT NULL,
    event_id  TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    stored_at BIGINT NOT NULL,
    PRIMARY KEY (platform, event_id)
);
CREATE INDEX event_ids_stored_at ON event_ids (stored_at);

-- Moderation actions, so a message that arrives after its delete/ban is
-- still marked.
CREATE TABLE moderations (
    seq             BIGINT PRIMARY KEY, -- seq of the moderation event
    channel_ref     BIGINT NOT NULL,
    action          TEXT   NOT NULL,
    target_event_id TEXT,
    target_login    TEXT,
    at              BIGINT NOT NULL     -- sent_at of the moderation event, ms
);
CREATE INDEX moderations_at ON moderations (at);

-- A deleted row (retention by count or by age for rows outside dropped
-- partitions, or any manual DELETE) leaves no trace: counters, id, its
-- moderation record. Dropped partitions are accounted by the store.
CREATE FUNCTION chatbus_event_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE channels SET
        event_count   = event_count - 1,
        message_count = message_count - (OLD.kind IN ('message', 'action', 'cheer', 'super_chat'))::int
    WHERE id = OLD.channel_ref;
    DELETE FROM event_ids WHERE platform = OLD.platform AND event_id = OLD.event_id;
    IF OLD.kind IN ('message_delete', 'ban', 'timeout', 'chat_clear') THEN
        DELETE FROM moderations WHERE seq = OLD.seq;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_after_delete AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION chatbus_event_deleted();
