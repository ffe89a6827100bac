#!/usr/bin/env bash
# Makes sure RabbitMQ answers at $AMQP_URL (default 127.0.0.1:5672) with the
# management plugin on :15672: uses it if it answers, else starts a local
# rabbitmq-server, else installs one with apt-get (as root or with sudo).
# Used by scripts/test.sh and scripts/dev.sh; run it on its own too.
set -euo pipefail

_say() { printf '==> %s\n' "$*"; }
_die() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; exit 1; }
_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
_port_open() { timeout 2 bash -c "</dev/tcp/$1/$2" 2>/dev/null; }
_wait_port() { for _ in $(seq 1 "${3:-60}"); do _port_open "$1" "$2" && return 0; sleep 1; done; return 1; }

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
hostport=${AMQP_URL#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=5672

_say "RabbitMQ at $host:$port"
if ! _port_open "$host" "$port"; then
  if ! command -v rabbitmq-server >/dev/null; then
    _say "installing rabbitmq-server with apt-get"
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || _die "apt-get update failed"
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server \
      || _die "cannot install rabbitmq-server (run as root, or start RabbitMQ and set AMQP_URL)"
  fi
  _say "starting rabbitmq-server"
  _as_root rabbitmq-server -detached || true
  _wait_port "$host" "$port" 90 || _die "RabbitMQ did not come up on $host:$port"
fi
if ! _port_open 127.0.0.1 15672; then
  _say "enabling the RabbitMQ management plugin"
  _as_root rabbitmq-plugins enable rabbitmq_management >/dev/null || _die "cannot enable rabbitmq_management"
  _wait_port 127.0.0.1 15672 60 || _die "management API did not come up on :15672"
fi
