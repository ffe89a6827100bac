#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md, one after the other, and
# writes what each printed to docs/bench-runs.md (with its command, start
# time and commit), so each figure in the docs can be traced to its run.
#
#   scripts/bench-all.sh              # every bench (about an hour here)
#   scripts/bench-all.sh flood10 pgcost   # only the named runs (each builds its bench)
#
# Benchmarks share the machine's cores with RabbitMQ and PostgreSQL, so
# nothing else should run meanwhile: this script stops the fault-drill node
# and the 3-node cluster first (an idle cluster still takes CPU), and starts
# the cluster only for the cluster flood, stopping it again afterwards.
# Logs: target/bench-runs/<name>.log and .err (stdout and stderr of each
# run); docs/bench-runs.md holds each run's stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=(
  "flood10|cargo bench -q -p ingestor --bench flood -- --channels 10 --messages 200000"
  "flood1000|cargo bench -q -p ingestor --bench flood -- --channels 1000 --messages 200000"
  "latency1000|cargo bench -q -p ingestor --bench flood -- --channels 10 --rate 1000 --seconds 20"
  "stages|cargo bench -q -p ingestor --bench stages"
  "youtube|cargo bench -q -p ingestor --bench youtube"
  "sqlite_alone500|cargo bench -q -p consumer --bench consumer_bench -- store --events 500000 --alone --batch-size 500"
  "sqlite_alone1000|cargo bench -q -p consumer --bench consumer_bench -- store --events 500000 --alone --batch-size 1000"
  "sqlite_alone2000|cargo bench -q -p consumer --bench consumer_bench -- store --events 500000 --alone --batch-size 2000"
  "store_sqlite|cargo bench -q -p consumer --bench consumer_bench -- store --events 500000"
  "store_pg|cargo bench -q -p consumer --bench consumer_bench -- store --events 500000 --postgres"
  "pgcost|scripts/bench-pg-insert-cost.sh 300"
  "pgfsync|/usr/lib/postgresql/15/bin/pg_test_fsync -s 2 -f /var/lib/postgresql/pg_test_fsync.out"
  "fanout1|cargo bench -q -p consumer --bench consumer_bench -- fanout --clients 1 --rate 100 --seconds 30"
  "fanout1000|cargo bench -q -p consumer --bench consumer_bench -- fanout --clients 1000 --rate 100 --seconds 30"
  "fanout3000|cargo bench -q -p consumer --bench consumer_bench -- fanout --clients 3000 --rate 100 --seconds 30"
  "fanout10000|cargo bench -q -p consumer --bench consumer_bench -- fanout --clients 10000 --rate 100 --seconds 30"
  "slow200|cargo bench -q -p consumer --bench consumer_bench -- slow --clients 200 --events 15000 --size 4000"
  "slow0|cargo bench -q -p consumer --bench consumer_bench -- slow --clients 0 --events 15000 --size 4000"
  "auth|cargo bench -q -p auth-server --bench memory"
  "pipe_sqlite|cargo bench -q -p e2e --bench pipeline"
  "pipe_pg1|cargo bench -q -p e2e --bench pipeline -- --postgres"
  "pipe_pg2|cargo bench -q -p e2e --bench pipeline -- --postgres --consumers 2"
  "history|cargo bench -q -p consumer --bench consumer_bench -- history --events 5000000 --postgres"
  "purge_sqlite|cargo bench -q -p consumer --bench consumer_bench -- purge --rows 1200000 --subject-rows 1000000"
  "purge_pg|cargo bench -q -p consumer --bench consumer_bench -- purge --rows 1200000 --subject-rows 1000000 --postgres"
  "flood_cluster|cargo bench -q -p ingestor --bench flood -- --channels 10 --messages 200000 --cluster"
  "commands_latency|cargo bench -q -p ingestor --bench commands -- --mode latency --rate 10 --seconds 60"
  "commands_limits|cargo bench -q -p ingestor --bench commands -- --mode limits --rate 23.4 --seconds 600"
  "webhooks|cargo bench -q -p ingestor --bench webhooks -- --deliveries 20000 --concurrency 32 --rate 100 --seconds 30"
)

want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  local w
  for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh
scripts/rabbitmq-fault-node.sh stop >/dev/null 2>&1 || true
scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true

logs=target/bench-runs
mkdir -p "$logs"
# Every bench up front when all run; named runs build their own.
if [ ${#want[@]} -eq 0 ]; then
  echo "==> building the benches"
  cargo bench -q --workspace --no-run
fi

commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain)" ]; then commit="$commit (with uncommitted changes)"; fi
failed=0
for run in "${runs[@]}"; do
  name=${run%%|*}
  command=${run#*|}
  selected "$name" || continue
  echo "==> $name: $command"
  # A run cut short leaves no .meta, so its partial log is never reported.
  rm -f "$logs/$name.meta"
  started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
  status=0
  if [ "$name" = flood_cluster ]; then scripts/rabbitmq-cluster.sh start || status=$?; fi
  if [ "$status" = 0 ]; then
    bash -c "$command" >"$logs/$name.log" 2>"$logs/$name.err" || status=$?
  else
    echo "the 3-node cluster did not start" >"$logs/$name.log"
  fi
  if [ "$name" = flood_cluster ]; then scripts/rabbitmq-cluster.sh stop || true; fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$started" "$commit" "$status" "$command" >"$logs/$name.meta"
  echo "    exit $status, $(wc -l <"$logs/$name.log") lines in $logs/$name.log"
  if [ "$status" != 0 ]; then failed=1; fi
done

python3 scripts/bench-runs-doc.py "$logs" docs/bench-runs.md
echo "==> wrote docs/bench-runs.md"
if [ "$failed" != 0 ]; then echo "==> some runs failed: see their exit status in docs/bench-runs.md" >&2; fi
exit "$failed"
