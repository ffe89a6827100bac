-- Rare kinds (bans, subscriptions, raids ...) are worth listing on their own:
-- without this index `kind=ban` scans every event.
CREATE INDEX events_kind_seq ON events (kind, seq);
