#!/usr/bin/env bash
# A second, disposable RabbitMQ node for fault drills (stop_app/start_app),
# so tests that take a broker down never disturb the main one on :5672.
#
#   scripts/rabbitmq-fault-node.sh start   # idempotent; waits until ready
#   scripts/rabbitmq-fault-node.sh stop
#   scripts/rabbitmq-fault-node.sh status
#
# Node fault@localhost: AMQP 127.0.0.1:5673, management 127.0.0.1:15673.
set -euo pipefail

NODE=${CHATBUS_FAULT_NODE:-fault@localhost}
AMQP_PORT=${CHATBUS_FAULT_AMQP_PORT:-5673}
MGMT_PORT=${CHATBUS_FAULT_MGMT_PORT:-15673}
DIST_PORT=${CHATBUS_FAULT_DIST_PORT:-25673}
BASE=${CHATBUS_FAULT_DIR:-/tmp/chatbus-rabbitmq-fault}

ctl() { rabbitmqctl -q -n "$NODE" "$@"; }

running() { ctl await_startup --timeout 5 >/dev/null 2>&1; }

start() {
  if running; then return 0; fi
  command -v rabbitmq-server >/dev/null || { echo "rabbitmq-server is not installed" >&2; exit 1; }
  mkdir -p "$BASE"
  cat > "$BASE/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
loopback_users = none
CONF
  echo '[rabbitmq_management].' > "$BASE/enabled_plugins"
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq "$BASE"; fi
  RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT" \
  RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins" \
  RABBITMQ_MNESIA_BASE="$BASE/mnesia" RABBITMQ_LOG_BASE="$BASE/log" RABBITMQ_PID_FILE="$BASE/pid" \
    rabbitmq-server -detached
  for _ in $(seq 1 60); do
    if running; then
      echo "fault node $NODE ready on 127.0.0.1:$AMQP_PORT (management :$MGMT_PORT)"
      return 0
    fi
    sleep 1
  done
  echo "fault node $NODE did not start; see $BASE/log" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) ctl stop >/dev/null 2>&1 || true ;;
  status) running && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
