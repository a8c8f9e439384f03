#!/usr/bin/env bash
# Makes sure RabbitMQ and PostgreSQL answer on 127.0.0.1 (this machine kind
# starts both; this restarts one that stopped). Sourced by run.sh and test.sh.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "services: $name is not listening on 127.0.0.1:$port" >&2
  return 1
}

if ! port_open 5672; then
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 RabbitMQ
fi
if ! port_open 5432; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
  wait_port 5432 PostgreSQL
fi
