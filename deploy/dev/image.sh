#!/usr/bin/env bash
# Builds the container image from deploy/container/Dockerfile and proves it
# runs: podman over a Debian base made here by debootstrap (no image
# registry is reachable) and tagged as the Dockerfile's BASE_IMAGE; the
# binary is built on this machine (Debian 12, like the base) and packed by
# the `prebuilt` stage, since the `build` stage's Rust image cannot be
# pulled. Then the image runs against the real RabbitMQ, PostgreSQL and
# FHIR server, and /readyz, /metrics, the HEALTHCHECK and the non-root user
# are checked. Slow on a fresh machine (debootstrap, a release build), so
# not part of deploy/dev/test.sh; docs/operations.md has the figures.
#
#   deploy/dev/image.sh                          # release binary
#   PROFILE=debug FEATURES=e2ee deploy/dev/image.sh  # reuse the test build
#
# The sandbox this was written in has cgroup v1 with a cgroup2 hierarchy
# holding controllers ("hybrid"), which crun refuses, and no
# CAP_SYS_RESOURCE, so podman's default rlimits cannot be set: the script
# runs containers with runc and lowered nofile/nproc limits.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chartbridge/target}"
PROFILE="${PROFILE:-release}"
FEATURES="${FEATURES:-}"
CACHE="$HOME/.cache/chartbridge/image"
BASE=docker.io/library/debian:bookworm-slim
TAG=localhost/chartbridge:dev
PORT="${IMAGE_TEST_PORT:-9474}"
FHIR_PORT="${FHIR_PORT:-8090}"
started=$(date +%s)
mkdir -p "$CACHE"
step() { echo "== image: $* ($(( $(date +%s) - started )) s)"; }

missing=()
for tool in podman debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian)"
  apt-get install -y --no-install-recommends "${missing[@]}" buildah >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" buildah >/dev/null; }
fi
RUN_OPTS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

if ! podman image exists "$BASE"; then
  step "debootstrap bookworm → $BASE"
  rm -rf "$CACHE/rootfs"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase bookworm "$CACHE/rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1
  tar -C "$CACHE/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$CACHE/rootfs"
fi

step "cargo build ($PROFILE${FEATURES:+, features $FEATURES})"
build=(--locked --bin chartbridge)
[ "$PROFILE" = release ] && build+=(--release)
[ -n "$FEATURES" ] && build+=(--features "$FEATURES")
nice -n 10 cargo build "${build[@]}"
rm -rf target-image && mkdir target-image
cp "$CARGO_TARGET_DIR/$PROFILE/chartbridge" target-image/chartbridge

step "podman build --target prebuilt"
podman build "${RUN_OPTS[@]}" --network host --format docker --target prebuilt \
  -f deploy/container/Dockerfile -t "$TAG" . >"$CACHE/build.log" 2>&1 \
  || { tail -30 "$CACHE/build.log"; exit 1; }
rm -rf target-image

user=$(podman image inspect --format '{{.Config.User}}' "$TAG")
[ "$user" = "10001:10001" ] || { echo "image runs as '$user', not 10001:10001" >&2; exit 1; }
podman image inspect --format '{{json .Config.Healthcheck}}' "$TAG" | grep -q '"probe"' \
  || { echo "image has no HEALTHCHECK through chartbridge probe" >&2; exit 1; }

deploy/dev/services.sh
if ! deploy/dev/fhir-server.sh status >/dev/null 2>&1; then deploy/dev/fhir-server.sh start >/dev/null; fi

run=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d)
name="chartbridge-image-$run"
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  for q in events events.dead receipts; do rabbitmqctl delete_queue "img.$run.$q" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/etc" "$work/state"
cat >"$work/etc/chartbridge.toml" <<TOML
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
events_queue = "img.$run.events"
dead_letter_exchange = "img.$run.dlx"
dead_letter_queue = "img.$run.events.dead"
deletion_exchange = "img.$run.deletions"
deletion_sources = []
receipts_queue = "img.$run.receipts"
[store]
url = "sqlite:///var/lib/chartbridge/state.db?mode=rwc"
key_file = "/var/lib/chartbridge/at-rest.key"
[kis]
base_url = "http://127.0.0.1:$FHIR_PORT"
[mappings]
rules_file = "/usr/share/chartbridge/mappings/rules.toml"
TOML
chmod 0644 "$work/etc/chartbridge.toml"
chown -R 10001:10001 "$work/state"
chmod 0700 "$work/state"
# The image's CHARTBRIDGE_HTTP__LISTEN (0.0.0.0:9464) would override the
# file; on the host network the endpoint goes to a loopback test port.
vols=(-v "$work/etc:/etc/chartbridge:ro" -v "$work/state:/var/lib/chartbridge"
  -e "CHARTBRIDGE_HTTP__LISTEN=127.0.0.1:$PORT")

step "keygen in the container"
# (podman cannot register HEALTHCHECK timers without systemd: harmless here.)
podman run --rm "${RUN_OPTS[@]}" --network host "${vols[@]}" "$TAG" keygen >/dev/null 2>&1
step "run against RabbitMQ, SQLite, FHIR (127.0.0.1:$FHIR_PORT)"
podman run -d --name "$name" "${RUN_OPTS[@]}" --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges "${vols[@]}" "$TAG" >/dev/null 2>"$CACHE/run.err" \
  || { cat "$CACHE/run.err"; exit 1; }
ready=""
for _ in $(seq 1 60); do
  if ready=$(curl -fsS "http://127.0.0.1:$PORT/readyz" 2>/dev/null); then break; fi
  sleep 1
done
if [ -z "$ready" ]; then
  podman logs "$name" 2>&1 | tail -20
  echo "image: /readyz never answered 200" >&2
  exit 1
fi
echo "/readyz: $ready"
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -q '^chartbridge_ready 1$' \
  || { echo "image: /metrics does not say ready" >&2; exit 1; }
podman exec "$name" /usr/local/bin/chartbridge probe "http://127.0.0.1:$PORT/readyz"
[ "$(podman exec "$name" id -u)" = 10001 ] || { echo "image: not running as 10001" >&2; exit 1; }
step "image ok: $TAG ($(podman image inspect --format '{{.Size}}' "$TAG") bytes)"
