-- Search folds Unicode in Rust now (consumer/src/store/fold.rs: NFKD,
-- case, accents, `ß`, punctuation as word breaks), the same for SQLite and
-- PostgreSQL, on the indexed text and on the query. The writer computes
-- `search` from the folded text, so it is a plain column from here on
-- (its values stay until the step below recomputes them), and
-- `chatbus_fold`, which folded a different subset, goes.
ALTER TABLE events ALTER COLUMN search DROP EXPRESSION;
DROP FUNCTION chatbus_fold(text);
-- Re-index every stored row with the Rust folding
-- (consumer/src/store/upgrade.rs), once.
INSERT INTO upgrade_steps (name) VALUES ('fold_search_text');
