#!/usr/bin/env bash
# THE test command: tooling, format, lints, build, unit/integration tests, Python and
# TypeScript end-to-end tests, the MCP conformance suite, the fleet, the deploy files (Helm
# chart, kustomize, alert rules, dashboard), a smoke run of the benchmark and the container image,
# built and run for real.
# Stops at the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
node_bin="$root/target/tools/node/node_modules/.bin"
venv="$root/target/tools/venv"

step() {
  local title="$1"
  shift
  printf '\n==== %s ====\n' "$title"
  local start=$SECONDS
  if "$@"; then
    printf -- '---- ok: %s (%ss)\n' "$title" $((SECONDS - start))
  else
    local code=$?
    printf -- '---- FAILED: %s (exit %s)\n' "$title" "$code" >&2
    exit "$code"
  fi
}

# counts.sh on every target, keeping the callgrind profiles it says it keeps; then whole
# sessions.
counts_smoke() {
  local profiles
  profiles="$(mktemp -d -t mcpgate-profiles-XXXXXX)"
  env MCPGATE_BIN_DIR="$root/target/debug" BENCH_CALLS=200 COUNTS_PROFILES="$profiles" \
    timeout 600 bash tests/bench/counts.sh || return
  env MCPGATE_BIN_DIR="$root/target/debug" BENCH_CALLS=50 COUNTS_MODE=sessions \
    timeout 600 bash tests/bench/counts.sh || return
  for target in a x b c; do
    if [[ ! -s "$profiles/$target.callgrind" ]]; then
      echo "counts.sh kept no callgrind profile of target $target in $profiles"
      return 1
    fi
  done
  rm -rf "$profiles"
}

unit_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run
  else
    echo "cargo-nextest not found; using cargo test"
    cargo test
  fi
}

# pytest exits 5 when it collects nothing; any non-zero exit fails the step.
# Tests marked `fleet` (in test_modern.py) need the fleet: tests/fleet/run-all.sh runs them.
python_e2e() {
  timeout 900 "$venv/bin/python" -m pytest -v tests/e2e/python --ignore=tests/e2e/python/test_fleet.py \
    --ignore=tests/e2e/python/test_drill.py -m "not fleet"
}

# One file at a time: the files share the harness's gateway and its one stdio child, which can
# attribute a server-to-client request (sampling) only while one session has calls in flight.
ts_e2e() {
  timeout 900 python3 tests/e2e/harness.py run -- "$node_bin/node" --test --test-concurrency=1 \
    tests/e2e/ts/*.test.mjs
}

step "install test tooling" bash tests/tools/install.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
step "cargo build --bins" cargo build --bins
step "unit and integration tests (nextest)" unit_tests
step "e2e: Python SDK (pytest)" python_e2e
step "e2e: TypeScript SDK (node --test)" ts_e2e
step "MCP conformance suite 0.1.16" timeout 1800 bash tests/conformance/run.sh
step "MCP conformance suite 0.2.0-alpha.12 (2025-11-25 and 2026-07-28; one replica and the fleet)" \
  timeout 1800 bash tests/conformance/run-next.sh
step "fleet: Redis + 3 replicas behind round-robin haproxy" timeout 900 bash tests/fleet/run-all.sh
# Every benchmark scenario, briefly, on the debug build: the benchmark keeps working. Its
# figures are printed, never asserted (the real run: tests/bench/run.sh on a release build).
step "benchmark smoke run: tests/bench/run.sh --quick (debug build)" \
  env MCPGATE_BIN_DIR="$root/target/debug" timeout 600 bash tests/bench/run.sh --quick
step "benchmark smoke run: tests/bench/counts.sh, 200 calls and 50 sessions (debug build)" \
  counts_smoke

step "deploy: Helm chart, kustomize base, alert rules, dashboard on a scraped fleet" \
  timeout 600 "$venv/bin/python" -m pytest -v tests/deploy
step "image: base images and build (buildah)" timeout 1500 bash tests/image/build.sh
step "image: run as the chart runs it, and a rolling update of 3 replicas (podman)" \
  timeout 900 "$venv/bin/python" -m pytest -v -s tests/image

printf '\nall CI steps passed\n'
