#!/usr/bin/env bash
# Durable intake through a fleet: GATEWAYS release gateways on one Postgres schema
# (`bench_intake_fleet`, emptied first), and one `wrk` per gateway at the same time, the
# connections split between them, as clients behind a balancer would be. Prints each wrk's
# figures and their sum. Compare with `BENCH_DATABASE_URL=… bash bench/intake.sh` (one gateway).
#
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bash bench/intake-fleet.sh [connections] [seconds] [gateways]
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-32}
seconds=${2:-15}
gateways=${3:-3}
url=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin whatsapp-gateway

dir=$(mktemp -d "${TMPDIR:-/tmp}/wg-intake-fleet-XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
PGOPTIONS="-c client_min_messages=warning" psql "$url" -q \
  -c 'DROP SCHEMA IF EXISTS bench_intake_fleet CASCADE' -c 'CREATE SCHEMA bench_intake_fleet'
sep='?'; case "$url" in *\?*) sep='&';; esac
export DATABASE_URL="${url}${sep}options[search_path]=bench_intake_fleet"
export TOKEN=bench-token-0123456789abcdef SESSION=bench
ports=()
for n in $(seq "$gateways"); do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ports+=("$port")
  mkdir -p "$dir/$n"
  # The session is not linked (WhatsApp is a closed port): this measures intake, not sending.
  HOST=127.0.0.1 PORT=$port GATEWAY_ID="bench-$n" API_STATIC_TOKEN=$TOKEN SESSIONS_DIR="$dir/$n/sessions" \
    SESSIONS_CONFIG="$dir/$n/sessions.config.json" DATA_DIR="$dir/$n/data" API_TOKEN_FILE="$dir/$n/.api-token" \
    WHATSAPP_URL=ws://127.0.0.1:9/ws/chat RATE_LIMIT_PER_SECOND=0 LOG_LEVEL=error \
    DATABASE_MAX_CONNECTIONS=$(( 48 / gateways )) \
    QUEUE_MAX_PER_SESSION=1000000 QUEUE_MAX_TOTAL=1000000 \
    QUEUE_MAX_BYTES_PER_SESSION=100000000000 QUEUE_MAX_TOTAL_BYTES=100000000000 \
    target/release/whatsapp-gateway >"$dir/gateway-$n.log" 2>&1 &
  pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
# The session is created once, over the API of the first gateway: the others follow the registry.
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"sessionId":"bench"}' "http://127.0.0.1:${ports[0]}/api/sessions"
for port in "${ports[@]}"; do
  for _ in $(seq 100); do
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/sessions/bench" && break
    sleep 0.1
  done
done
each=$(( connections / gateways ))
for n in $(seq "$gateways"); do
  wrk -t1 -c"$each" -d"${seconds}s" --latency -s bench/send_pdf.lua \
    "http://127.0.0.1:${ports[$((n-1))]}/api/send-pdf" >"$dir/wrk-$n.txt" 2>&1 &
  pids+=($!)
done
wait "${pids[@]: -$gateways}"
total=0
for n in $(seq "$gateways"); do
  echo "== gateway $n (${each} connections)"
  grep -E "Requests/sec|99%|50%|Non-2xx" "$dir/wrk-$n.txt" || cat "$dir/wrk-$n.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk-$n.txt")
  total=$(python3 -c "print(round($total + ${rps:-0}, 1))")
done
echo "== total through $gateways gateways: $total requests/s"
