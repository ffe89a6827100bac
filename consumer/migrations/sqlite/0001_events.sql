-- chatbus consumer store, SQLite. See consumer/src/store/sqlite.rs.

-- Every channel ever seen, with counters kept by the triggers below.
CREATE TABLE channels (
    id            INTEGER PRIMARY KEY,
    platform      TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    routing_key   TEXT    NOT NULL,
    event_count   INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_cursor   INTEGER,
    last_event_at INTEGER,               -- sent_at of the newest event, ms
    UNIQUE (platform, channel)
);

-- One row per event. `seq` is the cursor: AUTOINCREMENT so that a value is
-- never reused, even after retention deleted the newest rows.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    platform     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    channel_ref  INTEGER NOT NULL REFERENCES channels (id),
    kind         TEXT    NOT NULL,
    sent_at      INTEGER NOT NULL,       -- ms since the epoch
    stored_at    INTEGER NOT NULL,       -- ms since the epoch
    author_login TEXT,
    text         TEXT,
    body         TEXT    NOT NULL,       -- the event JSON as published
    moderation   TEXT,                   -- deleted | banned | timed_out | cleared
    moderated_by INTEGER,                -- seq of the moderation event
    UNIQUE (platform, event_id)
);

CREATE INDEX events_channel_seq ON events (channel_ref, seq);
CREATE INDEX events_author_seq ON events (author_login, seq) WHERE author_login IS NOT NULL;
CREATE INDEX events_sent_at ON events (sent_at);

-- Moderation actions, so a message that arrives after its delete/ban is
-- still marked.
CREATE TABLE moderations (
    seq             INTEGER PRIMARY KEY, -- seq of the moderation event
    channel_ref     INTEGER NOT NULL,
    action          TEXT    NOT NULL,    -- deleted | banned | timed_out | cleared
    target_event_id TEXT,
    target_login    TEXT,
    at              INTEGER NOT NULL     -- sent_at of the moderation event, ms
);
CREATE INDEX moderations_at ON moderations (at);

-- Full-text search over `text`: external content (no second copy of the
-- text), Unicode case folding, diacritics removed (`hello` finds `héllo`).
CREATE VIRTUAL TABLE events_fts USING fts5 (
    text,
    content = 'events',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER events_after_insert AFTER INSERT ON events BEGIN
    UPDATE channels SET
        event_count   = event_count + 1,
        message_count = message_count + (new.kind IN ('message', 'action', 'cheer')),
        last_cursor   = new.seq,
        last_event_at = new.sent_at
    WHERE id = new.channel_ref;
END;

CREATE TRIGGER events_fts_after_insert AFTER INSERT ON events WHEN new.text IS NOT NULL BEGIN
    INSERT INTO events_fts (rowid, text) VALUES (new.seq, new.text);
END;

CREATE TRIGGER events_after_delete AFTER DELETE ON events BEGIN
    UPDATE channels SET
        event_count   = event_count - 1,
        message_count = message_count - (old.kind IN ('message', 'action', 'cheer'))
    WHERE id = old.channel_ref;
END;

CREATE TRIGGER events_fts_after_delete AFTER DELETE ON events WHEN old.text IS NOT NULL BEGIN
    INSERT INTO events_fts (events_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;

CREATE TRIGGER events_moderation_after_delete AFTER DELETE ON events
WHEN old.kind IN ('message_delete', 'ban', 'timeout', 'chat_clear') BEGIN
    DELETE FROM moderations WHERE seq = old.seq;
END;

CREATE TRIGGER events_fts_after_update AFTER UPDATE OF text ON events BEGIN
    INSERT INTO events_fts (events_fts, rowid, text)
        SELECT 'delete', old.seq, old.text WHERE old.text IS NOT NULL;
    INSERT INTO events_fts (rowid, text)
        SELECT new.seq, new.text WHERE new.text IS NOT NULL;
END;
