-- The cursor of each channel's newest stream status event (stream_online,
-- stream_update, stream_offline), so GET /api/channels finds its live
-- state without searching the channel's events.
ALTER TABLE channels ADD COLUMN status_cursor INTEGER;
