#!/usr/bin/env bash
# Where the PostgreSQL store's write time goes: pgbench inserts 1,000-row
# batches (the consumer's default batch) into the `events` table of the
# store's own migration, once as migrated and once per variant with one
# part removed. Each variant gets a fresh database, dropped afterwards.
#
#   scripts/bench-pg-insert-cost.sh [transactions per variant, default 300]
#
# Needs psql and pgbench, and the server CHATBUS_TEST_PG_URL names
# (default postgres://postgres@127.0.0.1:5432/postgres). Figures are in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ADMIN=${CHATBUS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
TX=${1:-300}
SERVER=${ADMIN%/*}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/insert.sql" <<'SQL'
\set b random(1, 100000000)
INSERT INTO events (seq, platform, event_id, channel_ref, kind, sent_at, stored_at,
                    author_login, text, body)
SELECT :b::bigint * 1000 + g, 'twitch', md5((:b::bigint * 1000 + g)::text), 1 + g % 10,
       'message', 1764000000000 + g, 1764000000000, 'user' || (g % 50),
       'message ' || g || ' héllo wörld, some chat text from a viewer here', repeat('x', 500)
FROM generate_series(1, 1000) g;
SQL

variant() {
  local label=$1 ddl=$2 db="chatbus_test_cost_$RANDOM$RANDOM"
  psql -q "$ADMIN" -c "CREATE DATABASE $db" >/dev/null
  psql -q "$SERVER/$db" -v ON_ERROR_STOP=1 -f consumer/migrations/postgres/0001_events.sql >/dev/null
  [ -z "$ddl" ] || psql -q "$SERVER/$db" -v ON_ERROR_STOP=1 -c "$ddl" >/dev/null
  local out
  out=$(pgbench -n -f "$WORK/insert.sql" -t "$TX" "$SERVER/$db" 2>&1)
  psql -q "$ADMIN" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
  local ms
  ms=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out")
  [ -n "$ms" ] || { echo "$label: pgbench failed: $out" >&2; exit 1; }
  awk -v l="$label" -v ms="$ms" \
    'BEGIN { printf "| %s | %.1f µs | %.0f |\n", l, ms, 1000000 / ms }'
}

echo "| events table | per row | rows/s (one connection) |"
echo "| --- | ---: | ---: |"
variant "as migrated" ""
variant "without the GIN index" "DROP INDEX events_search"
variant "without unaccent in the search column" \
  "ALTER TABLE events DROP COLUMN search;
   ALTER TABLE events ADD COLUMN search tsvector
     GENERATED ALWAYS AS (to_tsvector('simple', lower(coalesce(text, '')))) STORED;
   CREATE INDEX events_search ON events USING gin (search)"
variant "without the search column (no full-text search)" "ALTER TABLE events DROP COLUMN search"
variant "without the primary key" "ALTER TABLE events DROP CONSTRAINT events_pkey"
variant "without the kind and sent_at indexes" "DROP INDEX events_kind_seq; DROP INDEX events_sent_at"
