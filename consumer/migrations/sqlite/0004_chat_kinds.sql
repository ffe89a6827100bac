-- Super Chats count as chat messages (EventKind::is_chat), on delete as on
-- insert (the writer counts inserts per batch).
DROP TRIGGER events_after_delete;
CREATE TRIGGER events_after_delete AFTER DELETE ON events BEGIN
    UPDATE channels SET
        event_count   = event_count - 1,
        message_count = message_count - (old.kind IN ('message', 'action', 'cheer', 'super_chat'))
    WHERE id = old.channel_ref;
END;
