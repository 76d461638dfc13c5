#!/usr/bin/env bash
# Runs the official MCP conformance suite (all scenarios, no expected-failures baseline)
# against mcpgate twice: in front of the fixture over stdio, then over Streamable HTTP.
# Each run has one upstream with prefix "" so tool names are the suite's own.
# Needs: tests/tools/install.sh and `cargo build --bins` done. Results: target/conformance/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
node_bin="$root/target/tools/node/node_modules/.bin"
[[ -x "$node_bin/conformance" ]] || { echo "conformance suite missing: run tests/tools/install.sh" >&2; exit 1; }
export PATH="$node_bin:$PATH" # the suite's `#!/usr/bin/env node` must find Node 22

failed=()
for kind in stdio http; do
  echo "=== conformance: mcpgate -> fixture over $kind ==="
  out="$root/target/conformance/$kind"
  rm -rf "$out" && mkdir -p "$out"
  if ! python3 "$root/tests/e2e/harness.py" run --upstreams "$kind" --prefix "" -- \
    conformance server --url '{url}' --suite all --output-dir "$out"; then
    failed+=("$kind")
  fi
done

if ((${#failed[@]})); then
  echo "conformance FAILED for upstream transport(s): ${failed[*]} (results in target/conformance/)" >&2
  exit 1
fi
echo "conformance passed for stdio and http upstreams"
