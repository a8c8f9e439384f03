#!/usr/bin/env bash
# Validates the packaging files with the strongest checkers available here
# (each installed from Debian, PyPI or npm into ~/.cache/chartbridge when
# missing): the systemd unit (systemd-analyze verify: any warning fails;
# systemd-analyze security: exposure at most 2.0), the Kubernetes manifests
# (kubernetes-validate --strict; ServiceMonitor against the Prometheus
# Operator CRD schema), the compose file (compose-spec JSON schema) and
# the RabbitMQ definitions (JSON; policies cover every queue the worker
# limits). The image itself is built and run by deploy/dev/image.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CACHE="$HOME/.cache/chartbridge/packaging"
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== packaging: systemd unit"
mkdir -p "$work/units"
# verify checks that ExecStart= is executable: point it at a stand-in.
sed "s|/usr/bin/chartbridge|/usr/bin/true|" deploy/systemd/chartbridge.service >"$work/units/chartbridge.service"
out=$(systemd-analyze verify "$work/units/chartbridge.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi
exposure=$(systemd-analyze security --offline=true "$work/units/chartbridge.service" 2>&1 | sed -n 's/.*Overall exposure level for chartbridge.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || { echo "exposure above 2.0" >&2; exit 1; }

echo "== packaging: Kubernetes manifests"
if [ ! -x "$CACHE/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install --quiet kubernetes-validate check-jsonschema
fi
"$CACHE/venv/bin/kubernetes-validate" --strict --quiet --no-warn deploy/kubernetes/*.yaml
if [ ! -d "$CACHE/node_modules/@kubernetes-models/prometheus-operator" ]; then
  (cd "$CACHE" && { [ -f package.json ] || echo '{"private":true}' >package.json; } \
    && npm install --silent --no-audit --no-fund @kubernetes-models/prometheus-operator@6 js-yaml@4 >/dev/null)
fi
NODE_PATH="$CACHE/node_modules" node deploy/tools/validate_crds.mjs deploy/kubernetes/*.yaml

echo "== packaging: compose file"
"$CACHE/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== packaging: RabbitMQ definitions"
python3 - <<'PY'
import json, re
d = json.load(open("deploy/rabbitmq/definitions.json"))
policies = d["policies"]
def policy(queue):
    hits = [p for p in policies if re.search(p["pattern"], queue)]
    assert len(hits) == 1, f"{queue}: {len(hits)} policies"
    return hits[0]["definition"]
for q in ["chartbridge.events", "chartbridge.adt"]:
    p = policy(q)
    for key in ["dead-letter-exchange", "dead-letter-strategy", "overflow", "delivery-limit", "max-length"]:
        assert key in p, f"{q}: no {key}"
    assert p["dead-letter-strategy"] != "at-least-once" or p["overflow"] == "reject-publish"
for q in ["chartbridge.events.dead", "chartbridge.deletions.whatsapp", "chartbridge.deletions.matrix",
          "chartbridge.deletion-receipts", "chartbridge.adt.acks"]:
    assert "max-length" in policy(q), q
# The dead letters expire (reviewed before, docs/operations.md) and are bounded.
dlq = policy("chartbridge.events.dead")
for key in ["message-ttl", "max-length", "overflow"]:
    assert key in dlq, f"chartbridge.events.dead: no {key}"
# Listing dead letters (`dlq list`, the console's operations page) returns
# them to the queue; RabbitMQ 4 drops a quorum queue's message after 20
# returns unless the limit is raised (-1, unlimited, is refused by 3.x).
assert dlq.get("delivery-limit", 0) >= 100000, "chartbridge.events.dead: delivery-limit too low"
for q in d["queues"]:
    assert q["arguments"] == {"x-queue-type": "quorum"}, f"{q['name']}: limits belong in policies"
print(f"{len(policies)} policies, {len(d['queues'])} queues: ok")
PY
