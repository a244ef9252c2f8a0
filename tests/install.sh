#!/usr/bin/env bash
# scripts/install as on a stock Debian 12 machine: runs it with PATH reduced to
# the system folders plus cargo's bin, so Debian's own python3 is the one found
# (not pyenv's, not a venv's), then checks that
#   - it succeeds, and a second run only checks (prints nothing);
#   - grpcurl and noida-db are found in .tools/bin, installed in the project's
#     venv, which does not shadow python3;
#   - grpcurl runs, and noida-db serves the Elasticsearch API on a free port
#     (started here, answered a GET /, stopped again by its process group).
# Run by scripts/test before the Rust tests; any failure exits 1 with the reason.
# Needs the network only for what scripts/install itself installs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
system_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$cargo_bin
tools_bin=$root/.tools/bin
venv=$root/.tools/venv

say() { printf 'tests/install.sh: %s\n' "$*" >&2; }
fail() {
    say "FAIL: $*"
    exit 1
}

work=$(mktemp -d)
es_pgid=
# Processes of the stand-in's group that still run (zombies do not count).
es_alive() { ps -e -o pgid=,stat= | awk -v g="$es_pgid" '$1 == g && $2 !~ /^Z/ { n++ } END { exit !n }'; }
stop_es() {
    [ -n "$es_pgid" ] || return 0
    kill -TERM -- "-$es_pgid" 2>/dev/null || true
    for _ in $(seq 1 100); do es_alive || break; sleep 0.1; done
    if es_alive; then
        say "noida-db (process group $es_pgid) ignored SIGTERM for 10s; killing it"
        kill -KILL -- "-$es_pgid" 2>/dev/null || true
    fi
    wait "$es_pgid" 2>/dev/null || true
    es_pgid=
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
cleanup() {
    stop_es
    rm -rf "$work"
}
trap cleanup EXIT

python3_found=$(PATH=$system_path command -v python3 || true)
say "PATH=$system_path (python3 there: ${python3_found:-none})"

# A real install on a fresh machine; a check otherwise.
t0=$EPOCHREALTIME
PATH=$system_path "$root/scripts/install" || fail "scripts/install exited $? with PATH=$system_path"
say "scripts/install passed in $(since "$t0") s"

# Everything is present now: a second run only checks, and says nothing.
t0=$EPOCHREALTIME
again=$(PATH=$system_path "$root/scripts/install" 2>&1) || fail "second scripts/install exited $?: $again"
took=$(since "$t0")
[ -z "$again" ] || fail "second scripts/install was not a no-op; it printed: $again"
say "second scripts/install: nothing to do, $took s"

# The PATH scripts/test and scripts/mesh give the tests.
export PATH=$tools_bin:$system_path
for c in grpcurl noida-db; do
    found=$(command -v "$c" || true)
    [ "$found" = "$tools_bin/$c" ] || fail "$c resolves to '${found:-nothing}', not $tools_bin/$c"
    target=$(readlink -f "$found")
    case "$target" in
    "$venv"/*) ;;
    *) fail "$found points to $target, outside the venv $venv" ;;
    esac
done
grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg" || fail "$venv was not made from Debian's /usr/bin/python3: $(cat "$venv/pyvenv.cfg")"
[ "$(command -v python3)" = "$python3_found" ] || fail "$tools_bin shadows python3 ($(command -v python3))"

version=$(grpcurl -version 2>&1) || fail "grpcurl -version exited $?: $version"
[ "$version" = "grpcurl v1.8.6" ] || fail "grpcurl -version printed '$version', not 'grpcurl v1.8.6'"
say "grpcurl: $version"

port=$(/usr/bin/python3 -I -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
# Its own session and process group (pgid = its pid): the wrapper runs the
# server as a child, and stopping the group stops both.
setsid noida-db start --only elasticsearch --host 127.0.0.1 --elasticsearch-port "$port" \
    --data-dir "$work/es" >"$work/es.log" 2>&1 </dev/null &
es_pgid=$!
[ "$(ps -o pgid= -p "$es_pgid" | tr -d ' ')" = "$es_pgid" ] || fail "noida-db (pid $es_pgid) did not get a process group of its own"

get_root() {
    /usr/bin/python3 -I - "http://127.0.0.1:$port/" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    body = json.load(r)
print(r.status, body["version"]["number"], body["tagline"])
EOF
}
answer=
for _ in $(seq 1 300); do
    if answer=$(get_root 2>/dev/null); then break; fi
    answer=
    es_alive || fail "noida-db exited before it answered; its output: $(cat "$work/es.log")"
    sleep 0.1
done
[ -n "$answer" ] || fail "noida-db did not answer GET http://127.0.0.1:$port/ within 30s; its output: $(cat "$work/es.log")"
case "$answer" in
"200 8."*) ;;
*) fail "GET / answered '$answer', not 200 with an ES 8 version" ;;
esac
say "noida-db (Elasticsearch API) on 127.0.0.1:$port: GET / -> $answer"

stop_es
get_root >/dev/null 2>&1 && fail "noida-db still answers on port $port after it was stopped"
say "noida-db stopped; PASS"
