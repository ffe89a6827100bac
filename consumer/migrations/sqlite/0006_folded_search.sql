-- Search folds Unicode in Rust now (consumer/src/store/fold.rs: NFKD,
-- case, accents, `ß`, punctuation as word breaks), the same for SQLite and
-- PostgreSQL, on the indexed text and on the query. The index holds the
-- folded text, which is not `events.text`, so it can no longer read its
-- content from `events`: it becomes contentless (still no second copy of
-- the text), and a row leaves it by rowid. The writer adds the folded text
-- per batch.
DROP TRIGGER events_fts_after_delete;
DROP TRIGGER events_fts_after_update;
DROP TABLE events_fts;
CREATE VIRTUAL TABLE events_fts USING fts5 (
    text,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER events_fts_after_delete AFTER DELETE ON events WHEN old.text IS NOT NULL BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
END;
-- A manual change of `text` is indexed as written (SQL cannot run the
-- Rust folding; the tokenizer still folds case and most accents).
CREATE TRIGGER events_fts_after_update AFTER UPDATE OF text ON events BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
    INSERT INTO events_fts (rowid, text)
        SELECT new.seq, new.text WHERE new.text IS NOT NULL;
END;
-- Re-index every stored row with the Rust folding
-- (consumer/src/store/upgrade.rs), once.
INSERT INTO upgrade_steps (name) VALUES ('fold_search_text');
