#!/usr/bin/env bash
# What one `tools/call echo` costs, counted rather than timed: the user-space instructions
# (valgrind's callgrind) and the system calls (strace -c) per call, for the HTTP fixture alone
# (scenario a), the bare relay (x: actix-web and mcpgate's upstream client, no MCP) and one replica
# with the memory and with the Redis store, each of those in front of the fixture. A count does not
# move with the machine's load the way CPU time does, so it tells two builds apart where run.sh's
# figures are noise. Neither is a CPU time: callgrind leaves out the kernel (about 40% of a call's
# CPU), counts a `rep movs`/`rep stos` byte by byte and runs the software SHA-256 (the host's SHA
# extensions are hidden from it); the system calls are the kernel's side, counted but not weighed (a
# wake-up's eventfd write counts as much as a read).
#
#   tests/bench/counts.sh          2,000 measured calls per target and count, 4 connections
#   tests/bench/counts.sh b c      only the targets named (a, x, b, c)
#   BENCH_CALLS=5000 tests/bench/counts.sh
#   MCPGATE_BIN_DIR=/tmp/old tests/bench/counts.sh   another build's binaries
#   COUNTS_PROFILES=/tmp/p tests/bench/counts.sh      also keeps each target's callgrind profile
#                                                     there (a.callgrind, ...) for callgrind_annotate
#   COUNTS_MODE=sessions tests/bench/counts.sh        counts whole sessions instead of calls
#                                                     (initialize, initialized, one call, DELETE:
#                                                     `mcpgate bench --mode sessions`), per session
#
# Builds the release binaries when they are missing, and runs tests/tools/install.sh when
# valgrind, strace or redis-server is missing. Takes about a minute once built.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${MCPGATE_BIN_DIR:-$root/target/release}"
calls="${BENCH_CALLS:-2000}"
profiles="${COUNTS_PROFILES:-}"
mode="${COUNTS_MODE:-calls}"
[[ "$mode" == calls || "$mode" == sessions ]] ||
  { echo "counts.sh: COUNTS_MODE is calls or sessions, not $mode" >&2; exit 2; }
warmup=200
[[ "$mode" == calls ]] || warmup=50
say() { printf '[counts] %s\n' "$*" >&2; }
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(a x b c)
for name in "${targets[@]}"; do
  [[ "$name" =~ ^[axbc]$ ]] || { echo "counts.sh: no target $name (a, x, b or c)" >&2; exit 2; }
done

if [[ ! -x "$bin/mcpgate" || ! -x "$bin/mcpgate-fixture" ]]; then
  if [[ "$bin" != "$root/target/release" ]]; then
    echo "counts.sh: $bin/mcpgate or $bin/mcpgate-fixture missing (MCPGATE_BIN_DIR)" >&2
    exit 1
  fi
  say "building release binaries (cargo build --release --bins)"
  (cd "$root" && nice -n 19 cargo build --release --bins)
fi
if ! command -v valgrind >/dev/null || ! command -v strace >/dev/null ||
  ! command -v redis-server >/dev/null; then
  say "installing test tooling (tests/tools/install.sh)"
  bash "$root/tests/tools/install.sh" >&2
fi

work="$(mktemp -d -t mcpgate-counts-XXXXXX)"
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
  echo "counts.sh: nothing answered at $1" >&2
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
  cat > "$work/$1-$2.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
hmac_key = "counts-benchmark-key-0123456789abcdef"
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
  echo "$work/$1-$2.toml"
}

# Sets `cmd` to the command line of target $1 (fixture, relay, memory or redis) serving /mcp on
# port $2.
command_for() {
  case "$1" in
    fixture) cmd=("$bin/mcpgate-fixture" http --listen "127.0.0.1:$2") ;;
    relay) cmd=("$bin/mcpgate-fixture" relay --listen "127.0.0.1:$2" --upstream "$fixture_url") ;;
    *) cmd=("$bin/mcpgate" serve --config "$(gateway_config "$1" "$2")") ;;
  esac
}

# Starts a target ($1: the port it serves /mcp on, then its command line), waits until it
# answers, and warms it up with 200 calls (50 sessions); sets `target`.
start() {
  local port="$1"
  shift
  "$@" > "$work/$port.log" 2>&1 &
  target=$!
  pids+=("$target")
  wait_http "http://127.0.0.1:$port/mcp"
  calls_on "$port" "$warmup" > /dev/null
}

# Makes $2 calls (sessions, in sessions mode) to the target on port $1 and prints their report
# (JSON).
calls_on() {
  "$bin/mcpgate" bench --url "http://127.0.0.1:$1/mcp" --mode "$mode" --connections 4 \
    --warmup 0s --duration 600s --json --requests "$2"
}

stop() {
  kill -KILL "$target"
  wait "$target" 2>/dev/null || true
}

# Sets `counted` to the user-space instructions of $calls calls to the target on port $1 (then
# its command line), from the warmed-up state; keeps the profile as $profiles/$2.callgrind.
instructions() {
  local port="$1" name="$2"
  shift 2
  start "$port" valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$@"
  callgrind_control -z "$target" > /dev/null 2>&1
  calls_on "$port" "$calls" > "$work/$port.cg.json"
  callgrind_control -d "$target" > /dev/null 2>&1
  counted="$(awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.$target.1")"
  [[ -z "$profiles" ]] || cp "$work/cg.$target.1" "$profiles/$name.callgrind"
  stop
}

# Sets `traced` to the system calls of every thread of the target on port $1 (then its command
# line) during $calls calls, counted by strace from the warmed-up state.
syscalls() {
  local port="$1"
  shift
  start "$port" "$@"
  strace -c -f -p "$target" -o "$work/$port.strace" 2> "$work/$port.strace.err" &
  local tracer=$!
  for _ in $(seq 1 50); do
    grep -q attached "$work/$port.strace.err" && break
    sleep 0.1
  done
  if ! grep -q attached "$work/$port.strace.err"; then
    echo "counts.sh: strace could not attach to $1: $(cat "$work/$port.strace.err")" >&2
    exit 1
  fi
  calls_on "$port" "$calls" > "$work/$port.strace.json"
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  traced="$(awk '$NF == "total" { print $4 }' "$work/$port.strace")"
  stop
}

# Counts target $2 (see command_for), labelled $1, and prints its instructions and system
# calls per call (per session in sessions mode); fails when one failed.
count() {
  local label="$1" port
  port="$(free_port)"
  command_for "$2" "$port"
  instructions "$port" "${label%%.*}" "${cmd[@]}"
  port="$(free_port)"
  command_for "$2" "$port"
  syscalls "$port" "${cmd[@]}"
  python3 - "$label" "${mode%s}" "$counted" "$traced" "$work"/*.cg.json "$work"/*.strace.json <<'PY'
import json, sys
label, unit, counted, traced = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
reports = sys.argv[5:]
runs = [json.load(open(path)) for path in reports]
calls = [run["requests"] for run in runs]
errors = sum(sum(run.get("errors", {}).values()) for run in runs)
print(f"{label:<44} {counted / calls[0]:>10,.0f} instructions {traced / calls[1]:>6.2f} system"
      f" calls per {unit} ({calls[0]} + {calls[1]} {unit}s, {errors} errors)")
sys.exit(1 if errors or not all(calls) else 0)
PY
  rm -f "$work"/*.json
}

[[ -z "$profiles" ]] || mkdir -p "$profiles"
wait_http "$fixture_url"
say "fixture at $fixture_url, Redis on $redis_port; $calls ${mode} per target and count"
for name in "${targets[@]}"; do
  case "$name" in
    a) count "a. the fixture alone, direct" fixture ;;
    x) count "x. bare relay (no MCP)" relay ;;
    b) count "b. 1 replica, memory store" memory ;;
    c) count "c. 1 replica, Redis" redis ;;
  esac
done
