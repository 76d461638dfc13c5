#!/usr/bin/env bash
# mcpgate's benchmark, every scenario in one invocation (tests/bench/scenarios.py says which):
# prints one table and writes the same results to target/bench/results.json. Figures are
# printed, never asserted.
#
#   tests/bench/run.sh            full run: 10 s per measurement (BENCH_SECONDS), 100,000 idle
#                                 sessions (BENCH_IDLE); about 10 minutes on 2 cores
#   tests/bench/run.sh --quick    1 s runs, 2,000 idle sessions: a smoke run, under 2 minutes
#   tests/bench/run.sh --only a,b,z   a subset (a, the baseline, always runs)
#
# Builds the release binaries when they are missing or lack `mcpgate bench`, and runs
# tests/tools/install.sh when a tool is missing (redis-server, haproxy, nginx, supergateway,
# mcp-proxy). MCPGATE_BIN_DIR points at other binaries (default target/release), BENCH_GENERATOR
# at another load generator (default the gateway under test: set it to measure an older build);
# CARGO_BUILD_JOBS limits the build's parallelism.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

say() { printf '[bench] %s\n' "$*" >&2; }

export MCPGATE_BIN_DIR="${MCPGATE_BIN_DIR:-$root/target/release}"
gateway="$MCPGATE_BIN_DIR/mcpgate"
fixture="$MCPGATE_BIN_DIR/mcpgate-fixture"
generator="${BENCH_GENERATOR:-$gateway}"
if [[ ! -x "$gateway" || ! -x "$fixture" ]] || ! "$generator" bench --help >/dev/null 2>&1; then
  if [[ "$MCPGATE_BIN_DIR" != "$root/target/release" ]]; then
    echo "run.sh: $gateway (with \`bench\`) or $fixture missing in MCPGATE_BIN_DIR" >&2
    exit 1
  fi
  say "building release binaries (cargo build --release --bins)"
  nice -n 19 cargo build --release --bins
fi

tools="$root/target/tools"
if ! command -v redis-server >/dev/null || ! command -v haproxy >/dev/null \
  || ! { command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; } \
  || [[ ! -x "$tools/node/node_modules/.bin/supergateway" || ! -x "$tools/mcp-proxy-venv/bin/mcp-proxy" ]]; then
  say "installing test tooling (tests/tools/install.sh)"
  bash "$root/tests/tools/install.sh" >&2
fi

exec python3 "$here/scenarios.py" "$@"
