#!/usr/bin/env bash
# User-space instructions per `tools/call echo`, counted by valgrind's callgrind: for the bare
# relay (scenario x: actix-web and reqwest, no MCP) and one replica with the memory and with
# the Redis store, each in front of the HTTP fixture. A count does not move with the machine's
# load the way CPU time does, so it tells two builds apart where run.sh's figures are noise;
# it leaves out the kernel's share (about 40% of a call's CPU) and counts a `rep movs`/`rep
# stos` byte by byte, so it is a measure to compare builds with, not a CPU time.
#
#   tests/bench/instructions.sh          2,000 measured calls per target, 4 connections
#   BENCH_CALLS=5000 tests/bench/instructions.sh
#   MCPGATE_BIN_DIR=/tmp/old tests/bench/instructions.sh   another build's binaries
#
# Builds the release binaries when they are missing, and runs tests/tools/install.sh when
# valgrind or redis-server is missing. Takes about a minute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${MCPGATE_BIN_DIR:-$root/target/release}"
calls="${BENCH_CALLS:-2000}"
say() { printf '[instructions] %s\n' "$*" >&2; }

if [[ ! -x "$bin/mcpgate" || ! -x "$bin/mcpgate-fixture" ]]; then
  if [[ "$bin" != "$root/target/release" ]]; then
    echo "instructions.sh: $bin/mcpgate or $bin/mcpgate-fixture missing (MCPGATE_BIN_DIR)" >&2
    exit 1
  fi
  say "building release binaries (cargo build --release --bins)"
  (cd "$root" && nice -n 19 cargo build --release --bins)
fi
if ! command -v valgrind >/dev/null || ! command -v redis-server >/dev/null; then
  say "installing test tooling (tests/tools/install.sh)"
  bash "$root/tests/tools/install.sh" >&2
fi

work="$(mktemp -d -t mcpgate-instructions-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until something answers HTTP at $1.
wait_http() {
  for _ in $(seq 1 120); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.5
  done
  echo "instructions.sh: nothing answered at $1" >&2
  exit 1
}

"$bin/mcpgate-fixture" http --listen 127.0.0.1:0 > "$work/fixture.out" 2> "$work/fixture.err" &
pids+=($!)
for _ in $(seq 1 50); do [[ -s "$work/fixture.out" ]] && break; sleep 0.1; done
fixture_url="$(sed -n 's/^listening on //p' "$work/fixture.out")"
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" &
pids+=($!)

gateway_config() { # store, port
  cat > "$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
hmac_key = "instructions-benchmark-key-0123456789abcdef"
[admin]
listen = "127.0.0.1:$(free_port)"
[session]
store = "$1"
[redis]
url = "redis://127.0.0.1:$redis_port"
[[upstreams]]
name = "remote"
transport = "http"
url = "$fixture_url"
prefix = ""
EOF
  echo "$work/$1.toml"
}

# Counts one target: $1 label, $2 the port it serves /mcp on, then its command line. Warms up
# with 200 calls, zeroes the counters, makes $calls calls, dumps, and prints the instructions
# per call; fails when a call failed.
count() {
  local label="$1" port="$2"
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$@" > "$work/$port.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local url="http://127.0.0.1:$port/mcp"
  wait_http "$url"
  local bench=("$bin/mcpgate" bench --url "$url" --mode calls --connections 4 --warmup 0s
    --duration 600s --json)
  "${bench[@]}" --requests 200 > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  "${bench[@]}" --requests "$calls" > "$work/$port.json"
  callgrind_control -d "$pid" > /dev/null 2>&1
  local counted
  counted="$(awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.$pid.1")"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$work/$port.json" "$counted" "$label" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
calls, errors = report["requests"], sum(report.get("errors", {}).values())
print(f"{sys.argv[3]:<44} {int(sys.argv[2]) / calls:>10,.0f} instructions per call"
      f" ({calls} calls, {errors} errors)")
sys.exit(1 if errors or not calls else 0)
PY
}

wait_http "$fixture_url"
say "fixture at $fixture_url, Redis on $redis_port; $calls calls per target under callgrind"
port="$(free_port)"
count "x. bare relay (actix-web + reqwest, no MCP)" "$port" \
  "$bin/mcpgate-fixture" relay --listen "127.0.0.1:$port" --upstream "$fixture_url"
port="$(free_port)"
count "b. 1 replica, memory store" "$port" \
  "$bin/mcpgate" serve --config "$(gateway_config memory "$port")"
port="$(free_port)"
count "c. 1 replica, Redis" "$port" "$bin/mcpgate" serve --config "$(gateway_config redis "$port")"
