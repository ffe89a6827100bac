-- Channel counters and the full-text index are kept per batch by the
-- writer (one statement each per batch), no longer by a trigger per row:
-- the per-row triggers cost about a fifth of the insert throughput. The
-- delete and update triggers stay, so retention and manual changes keep
-- both right.
DROP TRIGGER events_after_insert;
DROP TRIGGER events_fts_after_insert;
