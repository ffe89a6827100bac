-- Routing keys keep A-Z literal (docs/schema.md, "Release notes"), so the
-- stored `channels.routing_key` of every channel with upper case changes
-- (`chat.youtube.-55-43…` becomes `chat.youtube.UC…`). SQL cannot compute
-- the escape (a long word ends in a SHA-256), so this migration only asks
-- for the rewrite: the store runs the step named here in Rust right after
-- the migrations (consumer/src/store/upgrade.rs), in the transaction that
-- deletes this row, so it runs once.
CREATE TABLE upgrade_steps (
    name TEXT PRIMARY KEY
);
INSERT INTO upgrade_steps (name) VALUES ('readable_routing_keys');
