#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, for the scale-out tests and
# for trying a cluster out. Its nodes have their own names, ports and data,
# so the main broker on :5672 is not touched.
#
#   scripts/rabbitmq-cluster.sh start    # idempotent; waits until clustered
#   scripts/rabbitmq-cluster.sh stop     # stops every node (data kept)
#   scripts/rabbitmq-cluster.sh reset    # stops and deletes the data
#   scripts/rabbitmq-cluster.sh status   # the running nodes
#   scripts/rabbitmq-cluster.sh urls     # AMQP_URL for chatbus (comma list)
#   scripts/rabbitmq-cluster.sh kill N   # kill -9 node N (1-3): a crash
#   scripts/rabbitmq-cluster.sh restart N
#
# Node N is chatbusN@localhost: AMQP 127.0.0.1:568(N-1) (5680-5682),
# management 127.0.0.1:1568(N-1), distribution 2568(N-1).
set -euo pipefail

BASE=${CHATBUS_CLUSTER_DIR:-/tmp/chatbus-rabbitmq-cluster}
NODES=(1 2 3)
node() { echo "chatbus$1@localhost"; }
amqp_port() { echo $((5679 + $1)); }
mgmt_port() { echo $((15679 + $1)); }
dist_port() { echo $((25679 + $1)); }
# The nodes share their own Erlang cookie, so the script works whatever
# HOME (and ~/.erlang.cookie) the caller has.
COOKIE=${CHATBUS_CLUSTER_COOKIE:-chatbus-cluster-cookie}
ctl() { local n=$1; shift; rabbitmqctl -q --erlang-cookie "$COOKIE" -n "$(node "$n")" "$@"; }
running() { ctl "$1" await_startup --timeout 2 >/dev/null 2>&1; }

# Boot node N in the background (no wait). A node that was clustered waits
# at boot for the peer that stopped last, so every node is launched before
# any is waited for: starting them one by one would deadlock.
launch_node() {
  local n=$1 dir="$BASE/node$1"
  if running "$n"; then return 0; fi
  command -v rabbitmq-server >/dev/null || { echo "rabbitmq-server is not installed" >&2; exit 1; }
  mkdir -p "$dir"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
loopback_users = none
cluster_partition_handling = pause_minority
CONF
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq "$BASE"; fi
  RABBITMQ_NODENAME="$(node "$n")" RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
  RABBITMQ_DIST_PORT="$(dist_port "$n")" RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
  RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/pid" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-setcookie $COOKIE" \
    rabbitmq-server -detached
}

# Wait until node N has booted; on failure show the end of its log.
await_node() {
  local n=$1 dir="$BASE/node$1"
  for _ in $(seq 1 120); do
    if running "$n"; then return 0; fi
    sleep 1
  done
  echo "node $(node "$n") did not start within 120 s; the end of $dir/log:" >&2
  tail -n 20 "$dir/log/$(node "$n").log" >&2 2>/dev/null || true
  exit 1
}

start_node() { launch_node "$1"; await_node "$1"; }

clustered() {
  ctl 1 cluster_status --formatter json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if len(s.get("running_nodes", [])) == 3 else 1)'
}

start() {
  for n in "${NODES[@]}"; do launch_node "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  for n in 2 3; do
    # Read whole before grep: under pipefail, `| grep -q` can fail when grep
    # stops reading early, and a clustered node would be reset.
    status=$(ctl "$n" cluster_status --formatter json 2>/dev/null || true)
    if ! grep -q "$(node 1)" <<<"$status"; then
      ctl "$n" stop_app
      ctl "$n" reset
      ctl "$n" join_cluster "$(node 1)"
      ctl "$n" start_app
    fi
  done
  for _ in $(seq 1 60); do
    if clustered; then
      echo "cluster ready: $(urls)"
      return 0
    fi
    sleep 1
  done
  echo "the nodes did not form a cluster" >&2
  exit 1
}

stop() { for n in "${NODES[@]}"; do ctl "$n" stop >/dev/null 2>&1 || true; done; }

urls() {
  local out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${out[*]}")
}

kill_node() {
  local n=$1 pid
  pid=$(ctl "$n" eval 'list_to_integer(os:getpid()).' 2>/dev/null || true)
  [ -n "$pid" ] || { echo "node $n is not running" >&2; exit 1; }
  kill -9 "$pid"
  echo "killed $(node "$n") (pid $pid)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$BASE" ;;
  status) for n in "${NODES[@]}"; do
            if running "$n"; then echo "$(node "$n") running"; else echo "$(node "$n") stopped"; fi
          done ;;
  urls) urls ;;
  kill) kill_node "${2:?node number}" ;;
  restart) start_node "${2:?node number}" ;;
  *) echo "usage: $0 start|stop|reset|status|urls|kill N|restart N" >&2; exit 2 ;;
esac
