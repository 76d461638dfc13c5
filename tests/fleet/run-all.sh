#!/usr/bin/env bash
# Every fleet test: the Python SDK fleet tests (legacy sessions in test_fleet.py, 2026-07-28 in
# the `fleet`-marked tests of test_modern.py, the HTTP+SSE transport in those of
# test_sse_transport.py) and the SIGSTOP drill with Python and TypeScript
# clients (pytest, each test starts its own fleet), the
# TypeScript SDK fleet test (once per upstream transport, under `fleet.py run`), its
# SSEClientTransport (tests/e2e/ts/sse.test.mjs), the
# 2026-07-28 clients of the TypeScript SDK (tests/e2e/ts/modern.test.mjs) and of rmcp
# (tests/rmcp_client.rs, pointed at the fleet by MCPGATE_E2E_URL) under `fleet.py run` with
# both upstreams, the multi round-trip bridges (modern client and legacy upstream, legacy client
# and modern-only upstream) with the Python SDK (tests/e2e/python/test_bridges.py) and the
# TypeScript SDKs v1 and v2 (tests/fleet/bridges.test.mjs, under `fleet.py run` with the
# `legacy` and `modern` upstreams), and the conformance suite against the fleet. Runs all of
# them, then exits non-zero if any failed.
# Needs: tests/tools/install.sh and `cargo build --bins` done (the rmcp step builds its test
# binary if `cargo nextest run` has not).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="$root/target/tools/venv"
node="$root/target/tools/node/node_modules/.bin/node"

failed=()
step() {
  local title="$1"
  shift
  printf '\n==== fleet: %s ====\n' "$title"
  local start=$SECONDS
  if "$@"; then
    printf -- '---- ok: %s (%ss)\n' "$title" $((SECONDS - start))
  else
    printf -- '---- FAILED: %s (exit %s, %ss)\n' "$title" "$?" $((SECONDS - start)) >&2
    failed+=("$title")
  fi
}

step "Python SDK (pytest tests/e2e/python/test_fleet.py)" \
  timeout 300 "$venv/bin/python" -m pytest -v -s tests/e2e/python/test_fleet.py
step "Python SDK at 2026-07-28 (pytest -m fleet tests/e2e/python/test_modern.py)" \
  timeout 300 "$venv/bin/python" -m pytest -v -s -m fleet tests/e2e/python/test_modern.py
step "Python SDK, multi round-trip bridges (pytest tests/e2e/python/test_bridges.py)" \
  timeout 300 "$venv/bin/python" -m pytest -v -s tests/e2e/python/test_bridges.py
step "Python SDK over HTTP+SSE (pytest -m fleet tests/e2e/python/test_sse_transport.py)" \
  timeout 300 "$venv/bin/python" -m pytest -v -s -m fleet tests/e2e/python/test_sse_transport.py
step "drill: frozen Python and TypeScript clients (pytest tests/e2e/python/test_drill.py)" \
  timeout 400 "$venv/bin/python" -m pytest -v -s tests/e2e/python/test_drill.py
for kind in stdio http; do
  step "TypeScript SDK, fixture over $kind" \
    timeout 120 python3 tests/fleet/fleet.py run --replicas 3 --upstreams "$kind" -- \
    "$node" --test tests/fleet/fleet.test.mjs
done
step "TypeScript SDK at 2026-07-28 (tests/e2e/ts/modern.test.mjs), fixture over stdio and http" \
  timeout 120 python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio,http -- \
  "$node" --test tests/e2e/ts/modern.test.mjs
step "TypeScript SDK over HTTP+SSE (tests/e2e/ts/sse.test.mjs), fixture over stdio and http" \
  timeout 120 python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio,http -- \
  "$node" --test tests/e2e/ts/sse.test.mjs
step "TypeScript SDKs v1 and v2, multi round-trip bridges (tests/fleet/bridges.test.mjs)" \
  timeout 120 python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio \
  --extra-upstream '{"name": "legacy", "transport": "http", "era": "legacy", "fixture": []}' \
  --extra-upstream '{"name": "modern", "transport": "http", "era": "modern", "fixture": ["--modern-only"]}' \
  -- "$node" --test tests/fleet/bridges.test.mjs
rmcp_tests=(cargo nextest run --no-capture rmcp_client::)
if ! cargo nextest --version >/dev/null 2>&1; then
  rmcp_tests=(cargo test rmcp_client:: -- --nocapture)
fi
step "rmcp client at 2026-07-28 (tests/rmcp_client.rs), fixture over stdio and http" \
  timeout 600 python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio,http -- \
  env 'MCPGATE_E2E_URL={url}' "${rmcp_tests[@]}"
step "conformance suite against the fleet" timeout 300 bash tests/fleet/conformance.sh

if ((${#failed[@]})); then
  printf '\nfleet tests FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nall fleet tests passed\n'
