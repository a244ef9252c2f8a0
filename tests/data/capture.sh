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
kill -TERM "$inventory_pid"
sleep 4 # the monitor notices the graceful down heartbeat and alerts
for family in logs heartbeats alerts; do
    "$bin/meshctl" tail --kafka "$kafka" --logs-topic "meshwatch.$family" --since 10m --no-follow --json \
        >"tests/data/captured-$family.jsonl"
done
wc -l tests/data/captured-*.jsonl
