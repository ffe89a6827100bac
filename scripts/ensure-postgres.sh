#!/usr/bin/env bash
# Makes sure PostgreSQL answers at $CHATBUS_TEST_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) for the PostgreSQL store's
# tests: uses it if it answers, else starts the local cluster, else
# installs PostgreSQL with apt-get (as root or with sudo), and lets the
# `postgres` user connect over TCP from 127.0.0.1 without a password
# (trust, loopback only: a test server). Used by scripts/test.sh.
set -euo pipefail

_say() { printf '==> %s\n' "$*"; }
_die() { printf 'ensure-postgres: %s\n' "$*" >&2; exit 1; }
_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
_port_open() { timeout 2 bash -c "</dev/tcp/$1/$2" 2>/dev/null; }

URL=${CHATBUS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
hostport=${URL#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=5432

_answers() { command -v psql >/dev/null && psql "$URL" -Atqc 'select 1' >/dev/null 2>&1; }

_say "PostgreSQL at $host:$port"
if _answers; then exit 0; fi
if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; then
  _die "$URL does not answer (a remote server: start it, or unset CHATBUS_TEST_PG_URL)"
fi
if ! command -v pg_ctlcluster >/dev/null; then
  _say "installing postgresql with apt-get"
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || _die "apt-get update failed"
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-contrib \
    || _die "cannot install postgresql (run as root, or start PostgreSQL and set CHATBUS_TEST_PG_URL)"
fi
version=$(ls /etc/postgresql | sort -n | tail -1)
[ -n "$version" ] || _die "no PostgreSQL cluster found in /etc/postgresql"
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! _as_root grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
  _say "letting postgres connect from 127.0.0.1 without a password (test server)"
  _as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
fi
_say "starting PostgreSQL $version"
_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || _as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
for _ in $(seq 1 60); do
  if _answers; then _say "PostgreSQL ready"; exit 0; fi
  sleep 1
done
_die "PostgreSQL did not answer at $URL"
