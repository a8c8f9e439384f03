#!/usr/bin/env bash
# Quick start: brings up a local FHIR server and a media API stand-in, builds
# chartbridge, publishes the fixture events to RabbitMQ, runs the worker until
# every event is terminal, then shows what landed in the KIS and which
# deletions were issued.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chartbridge/target}"
WORK="$ROOT/.local/demo"
mkdir -p "$WORK"
rm -f "$WORK"/state.db*

deploy/dev/services.sh
FHIR_URL="$(deploy/dev/fhir-server.sh start)"
echo "KIS (FHIR R4, validation on): $FHIR_URL"

MEDIA_PORT="${MEDIA_PORT:-8093}"
MEDIA_PORT=$MEDIA_PORT MEDIA_TOKEN=demo-token python3 deploy/dev/media_api.py \
  1376223850470843="$ROOT/fixtures/media/wound.png" &
MEDIA_PID=$!
trap 'kill $MEDIA_PID 2>/dev/null || true' EXIT

cargo build --quiet --bin chartbridge
BIN="$CARGO_TARGET_DIR/debug/chartbridge"

# The example configuration as shipped (inputs fail closed), plus what a
# local demo needs: `chartbridge publish` signs as the gateway would, with a
# demo intake key, and publishes as the broker user `guest`.
head -c 32 /dev/urandom | base64 > "$WORK/intake-demo.key"
chmod 600 "$WORK/intake-demo.key"
python3 - "$ROOT/deploy/chartbridge.example.toml" "$WORK/chartbridge.toml" "$WORK/intake-demo.key" <<'PY'
import sys
src, dst, key = sys.argv[1:]
text = open(src).read()
text = text.replace('# sign_with = "worker-2026-06"', 'sign_with = "demo"', 1)
text = text.replace('publishers = ["chartbridge-gw-whatsapp"]', 'publishers = ["chartbridge-gw-whatsapp", "guest"]', 1)
text = text.replace('publishers = ["chartbridge-gw-matrix", "chartbridge"]', 'publishers = ["chartbridge-gw-matrix", "chartbridge", "guest"]', 1)
assert text.count('sign_with = "demo"') == 1 and text.count('"guest"') == 2, "example config changed"
text += f'\n[intake.keys.demo]\nfile = "{key}"\nsources = ["whatsapp", "matrix"]\n'
open(dst, "w").write(text)
PY
export CHARTBRIDGE_CONFIG="$WORK/chartbridge.toml"
export CHARTBRIDGE_BROKER__USER_ID=guest
export CHARTBRIDGE_STORE__URL="sqlite://$WORK/state.db?mode=rwc"
export CHARTBRIDGE_STORE__KEY_FILE="$WORK/at-rest.key"
export CHARTBRIDGE_KIS__BASE_URL="$FHIR_URL"
export CHARTBRIDGE_MEDIA__API_BASE_URL="http://127.0.0.1:$MEDIA_PORT"
export CHARTBRIDGE_MEDIA__ACCESS_TOKEN=demo-token
export CHARTBRIDGE_MAPPINGS__RULES_FILE="$ROOT/mappings/rules.toml"
export CHARTBRIDGE_SCHEDULE__RELAY_INTERVAL=100ms
# The same settings for the operator commands afterwards (README, "Running it").
{
  printf 'export PATH=%q:"$PATH"\n' "$CARGO_TARGET_DIR/debug"
  for v in $(compgen -e | grep '^CHARTBRIDGE_'); do printf 'export %s=%q\n' "$v" "${!v}"; done
} > "$WORK/env"
[ -f "$WORK/at-rest.key" ] || "$BIN" keygen
"$BIN" check-config >/dev/null
"$BIN" migrate

# The hospital's patient and case, as the KIS knows them.
fhir_create() {
  curl -fsS -X POST "$FHIR_URL/$1" -H 'Content-Type: application/fhir+json' \
    -H "If-None-Exist: identifier=$2" -d "$3" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
PATIENT_ID=$(fhir_create Patient "https://kis.example-hospital.invalid/sid/patient-id|P-1001" \
  '{"resourceType":"Patient","identifier":[{"system":"https://kis.example-hospital.invalid/sid/patient-id","value":"P-1001"}],"name":[{"family":"Mustermann","given":["Erika"]}]}')
fhir_create Encounter "https://kis.example-hospital.invalid/sid/case-id|F-2001" \
  "{\"resourceType\":\"Encounter\",\"status\":\"in-progress\",\"class\":{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ActCode\",\"code\":\"IMP\"},\"identifier\":[{\"system\":\"https://kis.example-hospital.invalid/sid/case-id\",\"value\":\"F-2001\"}],\"subject\":{\"reference\":\"Patient/$PATIENT_ID\"}}" >/dev/null
# The WhatsApp chat belongs to that patient.
"$BIN" link --source whatsapp --conversation 106540352242922:4915112345678 --patient "Patient/$PATIENT_ID"

"$BIN" publish fixtures/events/*.json fixtures/bad/{invalid-json,schema-violation,unknown-format}.json
"$BIN" run &
WORKER=$!
trap 'kill $MEDIA_PID 2>/dev/null || true; kill $WORKER 2>/dev/null || true' EXIT
# 5 messages (one webhook carries two) plus 3 refused payloads.
for _ in $(seq 1 120); do
  n=$("$BIN" status | awk '/^  (archived|not_relevant|quarantined) /{s+=$NF} END{print s+0}')
  requested=$("$BIN" status | awk '$1=="requested"{print $2}')
  [ "$n" -ge 5 ] && [ "${requested:-0}" -ge 4 ] && break
  sleep 0.5
done
kill -TERM $WORKER; wait $WORKER || true

echo
echo "== chartbridge status"
"$BIN" status
echo
echo "== in the KIS"
for t in Communication DocumentReference Provenance; do
  curl -fsS "$FHIR_URL/$t?_count=100" -H 'Accept: application/fhir+json' | python3 -c '
import json, sys
t = sys.argv[1]
for e in json.load(sys.stdin).get("entry", []):
    r = e["resource"]
    ident = next((i["value"] for i in r.get("identifier", [])), "")
    what = r.get("subject", {}).get("reference") or ",".join(x["reference"] for x in r.get("target", []))
    kind = (r.get("type", {}).get("coding") or [{}])[0].get("display", "")
    rid = r["id"]
    print(f"  {t}/{rid}  {ident}  {what}  {kind}")' "$t"
done
echo
echo "== deletion commands waiting for the messenger gateways"
sleep 6  # queue statistics are refreshed every 5 s
rabbitmqctl -q list_queues name messages 2>/dev/null | grep -E '^chartbridge\.(deletions|events)' || true
echo
echo "== dead-lettered events (refused input, kept for review)"
rabbitmqctl -q list_queues name messages 2>/dev/null | grep -E '^chartbridge\.events\.dead' || true
echo
echo "== look around as the operator: source $WORK/env, then"
echo "   chartbridge status | dlq list | quarantine list | quarantine show ID | trace ID | audit-trail"
