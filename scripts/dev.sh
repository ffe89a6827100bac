#!/usr/bin/env bash
# Run the whole chatbus stack on one machine, without Docker.
#
#   scripts/dev.sh                      # real Twitch, anonymous (read-only)
#   TWITCH_CHANNELS=a,b scripts/dev.sh  # ... joining these channels
#   scripts/dev.sh --demo               # offline: a local fake Twitch replays
#                                       # real chat lines into demo channels,
#                                       # and an echo bot answers !ping typed
#                                       # in the page (through the bus)
#   scripts/dev.sh --release            # optimised build
#
# It makes sure RabbitMQ runs (scripts/ensure-rabbitmq.sh), builds the
# services (into $CARGO_TARGET_DIR if set), starts auth-server, consumer and,
# once the consumer's queue is bound (/readyz), the ingestor, with sensible
# defaults (the environment wins over .env, which wins over the defaults),
# waits until each answers, and stops them on Ctrl-C.
# Data and logs go to $DEV_DIR: data/dev, or data/demo with --demo, so the
# demo's channels and history never mix with a real run's.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=false
profile=debug
for arg in "$@"; do
  case "$arg" in
    --demo) demo=true ;;
    --release) profile=release ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "dev.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# .env fills in what the environment does not set: a variable on the
# command line (TWITCH_CHANNELS=a,b scripts/dev.sh) wins over .env, as it
# does for the services themselves; within .env a later line wins. Then
# defaults for what neither sets.
if [ -f .env ]; then
  declare -A from_env=()
  while IFS= read -r key; do
    if [ -n "${!key+set}" ]; then from_env[$key]=${!key}; fi
  done < <(sed -n 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)=.*/\2/p' .env | sort -u)
  set -a
  # shellcheck disable=SC1091
  . ./.env
  set +a
  for key in "${!from_env[@]}"; do export "$key=${from_env[$key]}"; done
  unset from_env
fi

if $demo; then DEV_DIR=${DEV_DIR:-data/demo}; else DEV_DIR=${DEV_DIR:-data/dev}; fi
mkdir -p "$DEV_DIR/logs"
DEV_DIR=$(cd "$DEV_DIR" && pwd)

export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export CONSUMER_HTTP_ADDR=${CONSUMER_HTTP_ADDR:-127.0.0.1:8080}
export INGESTOR_HTTP_ADDR=${INGESTOR_HTTP_ADDR:-127.0.0.1:9100}
export AUTH_HTTP_ADDR=${AUTH_HTTP_ADDR:-127.0.0.1:3000}
export DATABASE_URL=${DATABASE_URL:-sqlite://$DEV_DIR/chatbus.sqlite}
export SPOOL_DIR=${SPOOL_DIR:-$DEV_DIR/spool}
export TOKEN_STORE_PATH=${TOKEN_STORE_PATH:-$DEV_DIR/tokenStore.json}
export RUST_LOG=${RUST_LOG:-info}

scripts/ensure-rabbitmq.sh

cargo_flags=()
[ "$profile" = release ] && cargo_flags+=(--release)
packages=(-p auth-server -p ingestor -p consumer)
$demo && packages+=(-p testkit)
echo "==> building ($profile)"
cargo build "${cargo_flags[@]}" "${packages[@]}" --bins
$demo && cargo build "${cargo_flags[@]}" -p common --example echo_bot
# Where cargo put them: CARGO_TARGET_DIR, a config's build.target-dir, or target/.
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/$profile"

pids=()
names=()
stopping=false
stop() {
  $stopping && return
  stopping=true
  echo
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

start() {
  local name=$1; shift
  "$@" >"$DEV_DIR/logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "    $name (pid $!) -> $DEV_DIR/logs/$name.log"
}

# Waits until http://$addr$path answers 2xx; stops everything when a
# service exits meanwhile or after 60 s.
wait_for() {
  local name=$1 addr=$2 path=$3
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null "http://$addr$path" 2>/dev/null; then return 0; fi
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "dev.sh: ${names[$i]} stopped while starting; the end of its log:" >&2
        tail -n 20 "$DEV_DIR/logs/${names[$i]}.log" >&2
        exit 1
      fi
    done
    sleep 0.5
  done
  echo "dev.sh: $name did not answer http://$addr$path within 60 s; see $DEV_DIR/logs/$name.log" >&2
  exit 1
}

echo "==> starting"
ingestor_env=()
if $demo; then
  demo_port=${DEMO_IRC_PORT:-6667}
  helix_port=${DEMO_HELIX_PORT:-6680}
  # The fake Twitch also serves a fake Helix for one demo account, whose
  # token goes in the demo's token store: the ingestor sends and moderates
  # as it (commands), and what it sends shows up in the demo chat.
  start fake-twitch "$bin/fake-twitch" --addr "127.0.0.1:$demo_port" --rate "${DEMO_RATE:-3}" \
    --helix-addr "127.0.0.1:$helix_port" --account chatbus_demo_bot --token demo-token
  export TWITCH_IRC_ADDR=127.0.0.1:$demo_port TWITCH_IRC_TLS=false
  export TWITCH_CHANNELS=${TWITCH_CHANNELS:-demo_chat,demo_games}
  cat >"$TOKEN_STORE_PATH" <<JSON
{"version": 1, "accounts": {"twitch:chatbus_demo_bot": {"platform": "twitch", "login": "chatbus_demo_bot",
 "user_id": "90000001", "access_token": "demo-token", "refresh_token": null, "expires_at": "2099-01-01T00:00:00Z",
 "scopes": ["chat:read", "user:write:chat", "user:read:moderated_channels", "moderator:manage:chat_messages",
 "moderator:manage:banned_users"], "obtained_at": "2026-01-01T00:00:00Z", "status": "valid"}}}
JSON
  chmod 600 "$TOKEN_STORE_PATH"
  export TWITCH_HELIX_URL=http://127.0.0.1:$helix_port TWITCH_SENDER=chatbus_demo_bot
  export COMMANDS_ALLOW=${COMMANDS_ALLOW:-twitch:chatbus_demo_bot:moderate}
  export CONSUMER_COMMAND_TOKEN=${CONSUMER_COMMAND_TOKEN:-demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}
  # Helix wants the client id the tokens were issued to; only the ingestor
  # gets it (the auth-server would look for the real Twitch with it).
  ingestor_env=(env TWITCH_CLIENT_ID=fake-helix-client-id)
fi
start auth-server "$bin/auth-server"
start consumer "$bin/consumer"
# The ingestor only once the consumer's queue is declared and bound
# (/readyz): on a fresh broker its first events would otherwise find no
# queue bound and go to chat.unrouted.
wait_for consumer "$CONSUMER_HTTP_ADDR" /readyz
start ingestor "${ingestor_env[@]}" "$bin/ingestor"

# The URLs only once every service answers.
wait_for auth-server "$AUTH_HTTP_ADDR" /healthz
wait_for ingestor "$INGESTOR_HTTP_ADDR" /healthz
$demo && start echo-bot "$bin/examples/echo_bot"

channels=${TWITCH_CHANNELS:-}
query=""
[ -n "$channels" ] && query="?channels=${channels// /}"
cat <<EOF

chatbus is running:
  live chat page       http://$CONSUMER_HTTP_ADDR/$query
  OBS overlay          http://$CONSUMER_HTTP_ADDR/overlay$query
  REST                 http://$CONSUMER_HTTP_ADDR/api/events?limit=20
  RabbitMQ management  http://127.0.0.1:15672  (guest / guest): exchange "${CHAT_EXCHANGE:-chat}"
  ingestor channels    http://$INGESTOR_HTTP_ADDR/channels
  auth-server          http://$AUTH_HTTP_ADDR/
EOF
[ -z "$channels" ] && echo "  (no channels yet: set TWITCH_CHANNELS, or run with --demo)"
if [ -n "${CONSUMER_COMMAND_TOKEN:-}" ]; then
  echo
  echo "Sending from the page (type !ping: the echo bot answers pong through the bus):"
  echo "  http://$CONSUMER_HTTP_ADDR/$query#command_token=$CONSUMER_COMMAND_TOKEN"
fi
echo
echo "Ctrl-C stops everything."

# Stop everything if any service exits on its own.
set +e
wait -n "${pids[@]}"
status=$?
$stopping && exit 0
echo "a service exited (status $status); see $DEV_DIR/logs" >&2
exit "$status"
