#!/bin/bash
# Starts tansu on 9094 (advertised as $ADVERTISED, default kafka:9094) and a
# forwarder from 9092; exits (so the container stops) when either ends.
set -euo pipefail
advertised=${TANSU_ADVERTISED:-kafka:9094}
socat TCP-LISTEN:9092,fork,reuseaddr TCP:127.0.0.1:9094 &
forwarder=$!
tansu broker \
    --listener-url tcp://0.0.0.0:9094 \
    --advertised-listener-url "tcp://$advertised" \
    --storage-engine memory://tansu/ &
broker=$!
trap 'kill -TERM "$broker" "$forwarder" 2>/dev/null' TERM INT
wait -n "$broker" "$forwarder" || true
kill -TERM "$broker" "$forwarder" 2>/dev/null || true
wait
