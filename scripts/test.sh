#!/usr/bin/env bash
# The whole test suite, from a fresh clone, on a machine with Rust and apt:
#
#   scripts/test.sh
#
# 1. makes sure RabbitMQ answers (AMQP_URL if it answers, else a local
#    rabbitmq-server it starts, else one it installs with apt-get as root),
#    with the management plugin, and PostgreSQL (CHATBUS_TEST_PG_URL, else
#    the local cluster, started or installed the same way);
# 2. starts the fault-drill RabbitMQ node (scripts/rabbitmq-fault-node.sh)
#    and the 3-node cluster of the scale-out drills
#    (scripts/rabbitmq-cluster.sh), and installs what the consumer's web
#    page test needs if it is missing (Debian's chromium, Node.js, playwright-core from npm);
# 3. runs cargo fmt --check, clippy with -D warnings, and every test with
#    cargo-nextest (installed if missing), then the doc tests;
# 4. at the end, pass or fail, removes what the tests left on the main
#    broker (testkit's broker-cleanup) and stops the fault-drill node and
#    the cluster if this run started them.
# Broker and database tests never skip: if a broker or PostgreSQL cannot
# be had, this script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
scripts/ensure-rabbitmq.sh || die "RabbitMQ is required for the tests"
scripts/ensure-postgres.sh || die "PostgreSQL is required for the tests"

log "fault-drill RabbitMQ node"
fault_node_was_running=false
if scripts/rabbitmq-fault-node.sh status >/dev/null 2>&1; then fault_node_was_running=true; fi
scripts/rabbitmq-fault-node.sh start
log "3-node RabbitMQ cluster (scale-out drills)"
cluster_was_running=false
# (Read whole before grep: under pipefail, `status | grep -q` fails when
# grep stops reading early, which made a stopped cluster look running.)
cluster_status=$(scripts/rabbitmq-cluster.sh status)
if ! grep -q stopped <<<"$cluster_status"; then cluster_was_running=true; fi
scripts/rabbitmq-cluster.sh start
cleanup() {
  status=$?
  log "cleaning up the broker"
  cargo run -q --locked -p testkit --bin broker-cleanup || true
  if [ "$fault_node_was_running" = false ]; then
    scripts/rabbitmq-fault-node.sh stop || true
  fi
  if [ "$cluster_was_running" = false ]; then
    scripts/rabbitmq-cluster.sh stop || true
  fi
  exit "$status"
}
trap cleanup EXIT

# The consumer's web page test drives headless Chromium (Debian's chromium
# package) with playwright-core from npm. Installed only when missing; if
# they cannot be had this script fails (the test never skips).
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
    || die "cannot install $* (needed by the consumer's web page test; run as root or install it)"
}
log "web page test prerequisites: Chromium, Node.js, playwright-core"
if [ ! -x "${CHATBUS_CHROMIUM:-/usr/bin/chromium}" ]; then
  log "installing chromium with apt-get"
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm with apt-get"
  apt_install nodejs npm
fi
if [ ! -d consumer/tests/browser/node_modules/playwright-core ]; then
  log "installing playwright-core (npm ci in consumer/tests/browser)"
  npm ci --prefix consumer/tests/browser --no-audit --no-fund \
    || die "npm ci failed in consumer/tests/browser"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

log "tests"
cargo nextest run --workspace --all-features --locked --no-fail-fast

log "doc tests"
cargo test --workspace --all-features --locked --doc
