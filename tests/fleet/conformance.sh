#!/usr/bin/env bash
# Runs the official MCP conformance suite (all scenarios, no expected-failures baseline)
# against a fleet: 3 mcpgate replicas sharing one redis-server, behind haproxy balancing every
# request round-robin with no stickiness (tests/fleet/fleet.py). Twice: the fixture over stdio
# (a child of every replica), then over Streamable HTTP (one process shared by the replicas).
# Each run has one upstream with prefix "" so tool names are the suite's own.
# Needs: tests/tools/install.sh and `cargo build --bins` done. Results: target/conformance/fleet-*/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
node_bin="$root/target/tools/node/node_modules/.bin"
[[ -x "$node_bin/conformance" ]] || { echo "conformance suite missing: run tests/tools/install.sh" >&2; exit 1; }
export PATH="$node_bin:$PATH" # the suite's `#!/usr/bin/env node` must find Node 22
replicas="${FLEET_REPLICAS:-3}"

failed=()
for kind in stdio http; do
  echo "=== fleet conformance: haproxy -> $replicas mcpgate replicas (redis) -> fixture over $kind ==="
  out="$root/target/conformance/fleet-$kind"
  rm -rf "$out" && mkdir -p "$out"
  if ! python3 "$root/tests/fleet/fleet.py" run --replicas "$replicas" --upstreams "$kind" --prefix "" -- \
    conformance server --url '{url}' --suite all --output-dir "$out"; then
    failed+=("$kind")
  fi
done

if ((${#failed[@]})); then
  echo "fleet conformance FAILED for upstream transport(s): ${failed[*]} (results in target/conformance/fleet-*/)" >&2
  exit 1
fi
echo "fleet conformance passed for stdio and http upstreams ($replicas replicas behind round-robin haproxy)"
