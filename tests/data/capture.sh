#!/usr/bin/env bash
# Regenerates the captured lines the deployment tests check against: runs the real binaries (three
# services and the monitor, each wrapped by its shipper, exactly as
# docker-compose.yml runs them) against a Kafka-protocol broker, places
# orders (one confirmed, one rejected), feeds the shipper one bad line, stops
# inventory so the monitor raises a status alert, then reads back what the
# shippers and the monitor produced to the three topics: the records Fluentd
# indexes, one file per topic: tests/data/captured-{logs,heartbeats,alerts}.jsonl.
#
#   tests/data/capture.sh BOOTSTRAP   (after cargo build --bins for the workspace)
set -euo pipefail
cd "$(dirname "$0")/../.."
kafka=${1:?usage: capture.sh BOOTSTRAP}
bin=target/debug
state=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT

"$bin/meshctl" topics create --kafka "$kafka" >/dev/null
ship() { local name=$1; shift; "$bin/shipper" --kafka "$kafka" --data-dir "$state/$name" --service-name "$name" -- "$@" >"$state/$name.out" 2>"$state/$name.err" & pids+=($!); }
ship monitor "$bin/monitor" --listen 127.0.0.1:59050 --kafka "$kafka"
ship inventory "$bin/inventory" --listen 127.0.0.1:59052
inventory_pid=$!
ship payment "$bin/payment" --listen 127.0.0.1:59053
ship order "$bin/order" --listen 127.0.0.1:59051 --inventory-addr http://127.0.0.1:59052 --payment-addr http://127.0.0.1:59053
for port in 59050 59051 59052 59053; do
    for _ in $(seq 100); do "$bin/meshctl" probe "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
done
"$bin/meshctl" health --monitor 127.0.0.1:59050 --wait-serving 30s >/dev/null
place() { grpcurl -plaintext -d "$1" 127.0.0.1:59051 meshwatch.order.v1.OrderService/PlaceOrder || true; }
place '{"idempotency_key":"capture-1","customer_id":"c-1","currency_code":"USD","items":[{"sku":"sku-espresso","quantity":1}]}'
place '{"idempotency_key":"capture-2","customer_id":"c-1","currency_code":"USD","items":[{"sku":"no-such-sku","quantity":1}]}'
"$bin/shipper" --kafka "$kafka" --data-dir "$state/junk" --service-name junk -- sh -c 'echo "panic: not a JSON line"' >/dev/null
# The shipper's own edge events, so that every field it can write is checked
# against the template: lines claiming another service (a heartbeat among
# them), an over-long line, a record the producer refuses, a damaged spool.
long=$(printf 'x%.0s' $(seq 400))
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
"$bin/shipper" --kafka "$kafka" --data-dir "$state/claims" --service-name junk --max-line-bytes 350 -- sh -c "
echo '{\"@timestamp\":\"$now\",\"message\":\"card declined\",\"log.level\":\"error\",\"service.name\":\"payment\"}'
echo '{\"@timestamp\":\"$now\",\"log.level\":\"info\",\"message\":\"heartbeat: up\",\"service.name\":\"payment\",\"service.instance.id\":\"payment-forged\",\"event.dataset\":\"meshwatch.heartbeat\",\"event.kind\":\"state\",\"heartbeat.status\":\"up\",\"heartbeat.sequence\":1,\"heartbeat.interval_ms\":1000}'
echo '{\"message\":\"$long\"}'" >/dev/null
big=$(printf 'y%.0s' $(seq 6000))
"$bin/shipper" --kafka "$kafka" --data-dir "$state/big" --service-name junk --max-line-bytes 8192 --max-record-bytes 8192 \
    --kafka-option message.max.bytes=4000 --kafka-option batch.size=4000 -- sh -c "echo '{\"message\":\"$big\"}'" >/dev/null
# Spool damage: lines spooled while Kafka is unreachable, one record's body
# flipped and a torn record appended, then shipped by a second run.
"$bin/shipper" --kafka 127.0.0.1:1 --data-dir "$state/damaged" --service-name junk --shutdown-grace 100ms --heartbeat 0s \
    -- sh -c 'for i in 1 2 3; do echo "{\"message\":\"spooled $i\"}"; done' >/dev/null 2>&1 || true
python3 - "$state/damaged/spool" <<'PY'
import glob, struct, sys
seg = sorted(glob.glob(sys.argv[1] + "/*.spool"))[0]
b = bytearray(open(seg, "rb").read())
first = 24 + struct.unpack_from("<I", b, 4)[0]
second = 24 + struct.unpack_from("<I", b, first + 4)[0]
b[first + 24 + 12] ^= 0x55
b += b[first:first + second // 2]
open(seg, "wb").write(bytes(b))
PY
"$bin/shipper" --kafka "$kafka" --data-dir "$state/damaged" --service-name junk --shutdown-grace 30s -- true >/dev/null 2>&1
kill -TERM "$inventory_pid"
sleep 4 # the monitor notices the graceful down heartbeat and alerts
for family in logs heartbeats alerts; do
    "$bin/meshctl" tail --kafka "$kafka" --logs-topic "meshwatch.$family" --since 10m --no-follow --json \
        >"tests/data/captured-$family.jsonl"
done
wc -l tests/data/captured-*.jsonl
