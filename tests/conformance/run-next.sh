#!/usr/bin/env bash
# Runs the NEXT MCP conformance suite (@modelcontextprotocol/conformance 0.2.0-alpha.12,
# installed as the npm alias `conformance-next` by tests/tools/install.sh) by requirement
# set: `server --requirements 2025-11-25` (stateful initialize wire) and
# `server --requirements 2026-07-28` (stateless per-request _meta wire), each against
# mcpgate in front of the fixture over stdio and over Streamable HTTP (one upstream,
# prefix "", as tests/conformance/run.sh does with the pinned 0.1.16 suite), on one replica
# (`stdio`, `http`) and through the 3-replica fleet of tests/fleet/fleet.py (`fleet-stdio`,
# `fleet-http`: Redis, haproxy round-robin, so consecutive requests land on different replicas).
#
#   bash tests/conformance/run-next.sh                 # both sets x all four kinds
#   bash tests/conformance/run-next.sh 2026-07-28      # one set, all kinds
#   bash tests/conformance/run-next.sh http            # both sets, one kind
#   bash tests/conformance/run-next.sh 2026-07-28/http 2025-11-25/stdio
#   bash tests/conformance/run-next.sh fixture         # the fixture alone over HTTP, no
#                                                      # gateway (opt-in, never a default)
#
# Results: target/conformance-next/<requirements>/<kind>/ (server-<scenario>-<time>/checks.json
# per scenario as written by the suite's --output-dir, suite.log with its full output,
# summary.json with the counts). Prints one pass/fail line per run; the counts are the
# suite's own per-scenario summary (a scenario that throws counts as one failed check and
# writes no checks.json).
#
# Scoring: a requirement set also RUNS scenarios it does not score (extensions such as
# tasks, pending and added-after-release scenarios; see `list --requirements`). A run fails
# when a check of a scored scenario fails (the suite's own rule) or the suite exits
# non-zero; failing not-scored checks are counted and printed but only fail the run with
# CONFORMANCE_NEXT_STRICT=1. Set CONFORMANCE_NEXT_VERBOSE=1 to stream the suite's output.
# Needs: tests/tools/install.sh and `cargo build --bins` done. Part of tests/ci.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
node_bin="$root/target/tools/node/node_modules/.bin"
next="$root/target/tools/node/node_modules/conformance-next/dist/index.js"
[[ -x "$node_bin/node" && -f "$next" ]] \
  || { echo "conformance 0.2.0-alpha.12 (conformance-next) missing: run tests/tools/install.sh" >&2; exit 1; }
export PATH="$node_bin:$PATH" # Node 22: the suite imports fs.globSync
bin_dir="${MCPGATE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
out_root="$root/target/conformance-next"

all_reqs=(2025-11-25 2026-07-28)
all_kinds=(stdio http fleet-stdio fleet-http)

# --- which runs -------------------------------------------------------------------------------
runs=()
if (($# == 0)); then
  for req in "${all_reqs[@]}"; do for kind in "${all_kinds[@]}"; do runs+=("$req/$kind"); done; done
else
  for arg in "$@"; do
    case "$arg" in
      */*) runs+=("$arg") ;;
      stdio | http | fleet-stdio | fleet-http | fixture) for req in "${all_reqs[@]}"; do runs+=("$req/$arg"); done ;;
      20*) for kind in "${all_kinds[@]}"; do runs+=("$arg/$kind"); done ;;
      -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "run-next.sh: unknown argument '$arg' (want REQ, KIND or REQ/KIND)" >&2; exit 2 ;;
    esac
  done
fi
for run in "${runs[@]}"; do
  req="${run%%/*}" kind="${run#*/}"
  [[ " ${all_reqs[*]} " == *" $req "* ]] || { echo "run-next.sh: unknown requirement set '$req'" >&2; exit 2; }
  [[ "$kind" =~ ^(stdio|http|fleet-stdio|fleet-http|fixture)$ ]] || { echo "run-next.sh: unknown kind '$kind'" >&2; exit 2; }
done

# --- the fixture alone (kind "fixture"): started here, stopped by its pid ----------------------
fixture_pid=""
stop_fixture() {
  if [[ -n "$fixture_pid" ]]; then
    kill "$fixture_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do # 5 s for a graceful exit, then SIGKILL
      kill -0 "$fixture_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$fixture_pid" 2>/dev/null || true
    wait "$fixture_pid" 2>/dev/null || true
    fixture_pid=""
  fi
}
trap stop_fixture EXIT

# Runs CMD... against the fixture alone; '{url}' in CMD is replaced by its /mcp URL.
with_fixture() {
  local log="$1"
  shift
  [[ -x "$bin_dir/mcpgate-fixture" ]] || { echo "$bin_dir/mcpgate-fixture not found: cargo build --bins" >&2; return 1; }
  "$bin_dir/mcpgate-fixture" http --listen 127.0.0.1:0 --name fixture >"$log" 2>&1 &
  fixture_pid=$!
  local url="" i
  for ((i = 0; i < 200; i++)); do
    url="$(sed -n 's|^listening on \(http://127\.0\.0\.1:[0-9]*/mcp\)$|\1|p' "$log" | head -1)"
    [[ -n "$url" ]] && break
    kill -0 "$fixture_pid" 2>/dev/null || { echo "fixture exited:" >&2; cat "$log" >&2; return 1; }
    sleep 0.1
  done
  [[ -n "$url" ]] || { echo "fixture: no 'listening on' line within 20s" >&2; cat "$log" >&2; stop_fixture; return 1; }
  echo "[run-next] fixture alone at $url (log: $log)"
  local args=() a
  for a in "$@"; do args+=("${a//\{url\}/$url}"); done
  local code=0
  "${args[@]}" || code=$?
  stop_fixture
  return "$code"
}

# --- counting: checks.json per scenario, split by what the requirement set scores ---------------
summarize() { # REQ DIR SUITE_EXIT -> prints the line, writes DIR/summary.json, exit 0 = pass
  local req="$1" dir="$2" suite_exit="$3" listing
  listing="$(node "$next" list --server --requirements "$req")"
  LISTING="$listing" STRICT="${CONFORMANCE_NEXT_STRICT:-0}" python3 - "$req" "$dir" "$suite_exit" <<'PY'
import json, os, re, sys
from pathlib import Path

req, out, suite_exit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
scored, unscored, section = set(), {}, None
for line in os.environ["LISTING"].splitlines():
    if line.startswith("Server scenarios"):
        section = "scored"
    elif line.startswith("Client scenarios"):
        section = None
    elif line.startswith("Run and reported"):
        section = "unscored"
    elif section == "scored" and (m := re.match(r"\s+- (\S+)$", line)):
        scored.add(m.group(1))
    elif section == "unscored" and (m := re.match(r"\s+(\S+) \(\d+\):$", line)):
        reason = m.group(1)
    elif section == "unscored" and (m := re.match(r"\s+- (\S+) \[server\]$", line)):
        unscored[m.group(1)] = reason

def blank():
    return {"passed": 0, "failed": 0, "warnings": 0, "scenarios": 0, "failing_scenarios": []}

# Per-scenario counts come from the suite's own "=== SUMMARY ===" lines in suite.log
# ("✗ NAME: P passed, F failed"): they include the synthetic FAILURE the suite records
# for a scenario that threw, which writes no checks.json. checks.json adds the warnings.
counted = {}
log = out / "suite.log"
text = log.read_text(errors="replace") if log.exists() else ""
if "=== SUMMARY ===" in text:
    for line in text.split("=== SUMMARY ===", 1)[1].splitlines():
        if line.startswith("Total:"):
            break
        if m := re.match(r"^\S+ (\S+): (\d+) passed, (\d+) failed$", line):
            counted[m.group(1)] = (int(m.group(2)), int(m.group(3)))
warnings, with_checks = {}, set()
for path in out.glob("server-*/checks.json"):
    scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
    with_checks.add(scenario)
    warnings[scenario] = sum(c["status"] == "WARNING" for c in json.loads(path.read_text()))

totals = {"scored": blank(), "not_scored": blank()}
for scenario, (passed, failed) in sorted(counted.items()):
    bucket = totals["scored" if scenario in scored else "not_scored"]
    bucket["scenarios"] += 1
    bucket["passed"] += passed
    bucket["failed"] += failed
    bucket["warnings"] += warnings.get(scenario, 0)
    if failed:
        bucket["failing_scenarios"].append(scenario)
missing = sorted(scored - set(counted))  # no summary line: the suite itself died
totals["scored"]["missing_scenarios"] = missing
totals["crashed_scenarios"] = sorted(set(counted) - with_checks)  # threw: no checks.json
totals["not_scored"]["reasons"] = {sc: unscored.get(sc, "not scored") for sc in totals["not_scored"]["failing_scenarios"]}
totals["suite_exit"] = suite_exit
strict = os.environ.get("STRICT") == "1"
ok = (suite_exit == 0 and totals["scored"]["failed"] == 0 and not missing
      and (not strict or totals["not_scored"]["failed"] == 0))
totals["ok"] = ok
(out / "summary.json").write_text(json.dumps(totals, indent=2) + "\n")

s, n = totals["scored"], totals["not_scored"]
print(f"{out.parent.name}/{out.name}: {'PASS' if ok else 'FAIL'}  scored: {s['passed']} passed, "
      f"{s['failed']} failed ({len(s['failing_scenarios'])}/{s['scenarios']} scenarios failing"
      f"{', ' + str(len(missing)) + ' without results' if missing else ''}); "
      f"not scored: {n['passed']} passed, {n['failed']} failed; suite exit {suite_exit}"
      + (f"; threw: {' '.join(totals['crashed_scenarios'])}" if totals["crashed_scenarios"] else ""))
for label, b in (("scored", s), ("not scored", n)):
    if b["failing_scenarios"]:
        print(f"    failing ({label}): {' '.join(b['failing_scenarios'])}")
sys.exit(0 if ok else 1)
PY
}

# --- the runs -------------------------------------------------------------------------------------
failed=()
lines=()
for run in "${runs[@]}"; do
  req="${run%%/*}" kind="${run#*/}"
  out="$out_root/$req/$kind"
  rm -rf "$out" && mkdir -p "$out"
  log="$out/suite.log"
  echo "=== conformance 0.2.0-alpha.12 --requirements $req: $([[ $kind == fixture ]] && echo "fixture alone over http" || echo "mcpgate -> fixture over $kind (fleet-*: 3 replicas)") ==="
  suite=(node "$next" server --url '{url}' --requirements "$req" --output-dir "$out")
  code=0
  if [[ "$kind" == fixture ]]; then
    cmd=(with_fixture "$out/fixture.log" "${suite[@]}")
  elif [[ "$kind" == fleet-* ]]; then
    cmd=(python3 "$root/tests/fleet/fleet.py" run --replicas 3 --upstreams "${kind#fleet-}" --prefix "" -- "${suite[@]}")
  else
    cmd=(python3 "$root/tests/e2e/harness.py" run --upstreams "$kind" --prefix "" -- "${suite[@]}")
  fi
  if [[ "${CONFORMANCE_NEXT_VERBOSE:-0}" == 1 ]]; then
    "${cmd[@]}" 2>&1 | tee "$log" || code=$?
  else
    "${cmd[@]}" >"$log" 2>&1 || code=$?
    grep -E '^\[harness\] mcpgate at|^\[run-next\]|^Total:' "$log" || true
  fi
  if line="$(summarize "$req" "$out" "$code")"; then :; else failed+=("$run"); fi
  echo "$line"
  lines+=("$line")
done

echo
echo "=== conformance 0.2.0-alpha.12 summary (results in ${out_root#"$root"/}/) ==="
printf '%s\n' "${lines[@]}"
if ((${#failed[@]})); then
  echo "conformance-next FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "conformance-next passed: ${runs[*]}"
