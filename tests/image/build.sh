#!/usr/bin/env bash
# Builds the mcpgate container image from the repository's Dockerfile, with no image registry:
# the base images the Dockerfile names are made locally first.
#
#   debian:bookworm-slim       debootstrap --variant=minbase, trimmed like the official slim image
#   rust:<X.Y>-slim-bookworm   the same plus gcc, libc6-dev, pkg-config, ca-certificates and the
#                              host's Rust toolchain <X.Y>.* (rustc, cargo, std for x86_64 Linux)
#                              at /usr/local/rustup + /usr/local/cargo, like the official image
#   mcpgate:<version>          `buildah bud` of the Dockerfile (<version> from Cargo.toml), also
#   mcpgate:test               tagged `test`
#   mcpgate-node:<version>     deploy/images/Dockerfile.node: the above + Node.js 22 + an npm MCP
#   mcpgate-node:test          server (unless --no-derived); ~30 s fresh, nothing when cached
#
# Idempotent. Everything it keeps is in target/image/: the root filesystem tarballs, named by a
# fingerprint of their inputs (made again only when the inputs change), and markers naming the
# image each one was imported as (imported again only when that image is missing). The mcpgate
# image is built again only when its inputs (Dockerfile, .dockerignore, Cargo.toml, Cargo.lock,
# src/, the base images, the build arguments) changed or it is missing. The build's cargo
# registry and target directory are cache mounts kept in target/image/tmp/.
#
# Storage: podman's vfs driver (--storage-driver vfs), containers.conf from this folder.
# Needs (as root): podman, buildah, debootstrap, network access to the Debian archive, crates.io
# and (derived image) the npm registry, and a Rust toolchain matching the Dockerfile's
# `FROM rust:<X.Y>-...` on the host. One run at a time (a lock in target/image/).
#
# Usage: tests/image/build.sh [--no-derived] [--force] [--refresh-bases]
#   --no-derived     skip deploy/images/Dockerfile.node (Node + an npm MCP server)
#   --force          rebuild the images even when their inputs did not change
#   --refresh-bases  make the base images again (newer Debian updates; cached ones never expire)
# Environment: MCPGATE_IMAGE_MIRROR (Debian mirror; default: the host's apt source),
#              MCPGATE_IMAGE_TOOLCHAIN (a rustup toolchain folder to copy instead of searching)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/target/image"
# Bump when the way a base root filesystem is made changes (invalidates the cached tarballs).
RECIPE=4
SUITE=bookworm
TRIPLE=x86_64-unknown-linux-gnu
RUST_PACKAGES=gcc,libc6-dev,pkg-config,ca-certificates

derived=1
force=0
refresh=0
for arg in "$@"; do
  case "$arg" in
    --no-derived) derived=0 ;;
    --derived) derived=1 ;;
    --force) force=1 ;;
    --refresh-bases) refresh=1 force=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock --nonblock 9; then
  echo "[image] another build.sh is running; waiting for it (at most 40 min)" >&2
  flock --timeout 2400 9 || { echo "[image] ERROR: lock $cache/.lock still held" >&2; exit 1; }
fi

export CONTAINERS_CONF="$here/containers.conf"
# buildah keeps RUN --mount=type=cache folders (and its temporary files) under TMPDIR.
export TMPDIR="$cache/tmp"
mkdir -p "$cache/tmp"

podman() { command podman --storage-driver vfs "$@"; }
buildah() { command buildah --storage-driver vfs "$@"; }

say() { printf '[image] %s\n' "$*"; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
phase_start=0
phase() { phase_name="$1"; phase_start=$SECONDS; say "--- $phase_name"; }
phase_done() { say "--- $phase_name: $((SECONDS - phase_start))s${1:+ ($1)}"; timings+=("$(printf '%-34s %4ss  %s' "$phase_name" $((SECONDS - phase_start)) "${1:-}")"); }
timings=()
total_start=$SECONDS

for tool in podman buildah debootstrap tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (install it: apt-get install podman buildah debootstrap)"
done
[[ $EUID -eq 0 ]] || die "run as root (debootstrap and the vfs storage need it)"

# --- what the Dockerfile asks for -----------------------------------------------------------
mapfile -t froms < <(awk 'toupper($1) == "FROM" { print $2 }' "$root/Dockerfile")
debian_ref="" rust_ref="" rust_want=""
for ref in "${froms[@]}"; do
  case "$ref" in
    debian:"$SUITE"-slim) debian_ref="$ref" ;;
    rust:*-slim-"$SUITE")
      rust_ref="$ref"
      rust_want="${ref#rust:}"
      rust_want="${rust_want%-slim-$SUITE}"
      [[ "$rust_want" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || die "cannot read a Rust version from FROM $ref"
      ;;
    *) die "the Dockerfile names base image $ref; this script can only make debian:$SUITE-slim and rust:<X.Y>-slim-$SUITE" ;;
  esac
done
[[ -n "$debian_ref" && -n "$rust_ref" ]] || die "expected FROM rust:<X.Y>-slim-$SUITE and FROM debian:$SUITE-slim in the Dockerfile, got: ${froms[*]}"
version="$(awk -F'"' '/^version *=/ { print $2; exit }' "$root/Cargo.toml")"
[[ -n "$version" ]] || die "no version in Cargo.toml"

# The Debian mirror: the host's own apt source (a mirror or proxy it is known to reach).
mirror="${MCPGATE_IMAGE_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror="$(grep -hs -A3 '^Types:.*deb' /etc/apt/sources.list.d/*.sources | grep -m1 -oE '^URIs: *\S+/debian/?$' | awk '{print $2}' || true)"
  [[ -n "$mirror" ]] || mirror="$(grep -hsoE '^deb +\S+/debian/? +'"$SUITE"'\b' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | head -n1 || true)"
  [[ -n "$mirror" ]] || mirror="http://deb.debian.org/debian"
fi
mirror="${mirror%/}"
security_mirror="${mirror%/debian}/debian-security"

# The host's toolchain for the version the Dockerfile names.
find_toolchain() {
  local candidates=() dir
  [[ -n "${MCPGATE_IMAGE_TOOLCHAIN:-}" ]] && candidates+=("$MCPGATE_IMAGE_TOOLCHAIN")
  local rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
  for dir in "$rustup_home/toolchains/$rust_want"*-"$TRIPLE" "$rustup_home/toolchains/stable-$TRIPLE"; do
    [[ -d "$dir" ]] && candidates+=("$dir")
  done
  if command -v rustc >/dev/null; then candidates+=("$(rustc --print sysroot)"); fi
  for dir in "${candidates[@]}"; do
    dir="$(readlink -f "$dir")"
    [[ -x "$dir/bin/rustc" && -x "$dir/bin/cargo" && -d "$dir/lib/rustlib/$TRIPLE/lib" ]] || continue
    local v
    v="$("$dir/bin/rustc" --version | awk '{print $2}')"
    if [[ "$v" == "$rust_want" || "$v" == "$rust_want".* ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}
toolchain="$(find_toolchain)" || die "no Rust $rust_want toolchain for $TRIPLE on this host (the Dockerfile says FROM $rust_ref); install it (rustup toolchain install $rust_want) or set MCPGATE_IMAGE_TOOLCHAIN"
rust_version="$("$toolchain/bin/rustc" --version | awk '{print $2}')"
say "Dockerfile: FROM $rust_ref, FROM $debian_ref; mcpgate $version"
say "mirror $mirror; toolchain $toolchain (rustc $rust_version)"

mkdir -p "$cache/work"
fingerprint() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# Unmounts whatever debootstrap left mounted under a root filesystem being made, then removes it.
remove_rootfs() {
  local dir="$1" mnt
  [[ -e "$dir" ]] || return 0
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
  rm -rf --one-file-system "$dir"
}
# Stops a process started here and everything it started (by pid, children first).
kill_tree() {
  local pid="$1" child
  for child in $(pgrep -P "$pid" || true); do kill_tree "$child"; done
  kill "$pid" 2>/dev/null || true
}
cleanup() {
  local d
  if [[ -n "${debian_job:-}" ]] && kill -0 "$debian_job" 2>/dev/null; then
    kill_tree "$debian_job"
    wait "$debian_job" 2>/dev/null || true
  fi
  for d in "$cache"/work/*; do remove_rootfs "$d"; done
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

run_debootstrap() {
  local dir="$1" include="$2" attempt
  for attempt in 1 2; do
    remove_rootfs "$dir"
    # One package cache per tree: the two are made at the same time.
    mkdir -p "$cache/debs/$(basename "$dir")"
    if debootstrap --variant=minbase ${include:+--include="$include"} --cache-dir="$cache/debs/$(basename "$dir")" \
      --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$dir" "$mirror" >"$dir.log" 2>&1; then
      return 0
    fi
    say "debootstrap failed (attempt $attempt); last lines of $dir.log:"
    tail -n 15 "$dir.log" >&2
  done
  die "debootstrap of $dir failed twice"
}

# Makes a bootstrapped tree look like the official slim images: apt sources for the suite, its
# updates and security, with those updates applied (debootstrap installs the release as it was);
# no docs, man pages, locales or apt lists (and dpkg keeps it so for later installs); no host
# leftovers.
trim_rootfs() {
  local dir="$1"
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# As in the official debian:*-slim images: no documentation in the image (copyrights kept).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'Acquire::Languages "none";\n' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
  printf 'Acquire::GzipIndexes "true";\n' >"$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" && chmod 0755 "$dir/usr/sbin/policy-rc.d"
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  mount -t proc proc "$dir/proc"
  local upgraded=0
  chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update -qq && apt-get dist-upgrade -y -qq -o Dpkg::Options::=--force-confold && apt-get clean' \
    >"$dir.upgrade.log" 2>&1 || upgraded=$?
  umount "$dir/proc"
  if [[ $upgraded -ne 0 ]]; then
    tail -n 15 "$dir.upgrade.log" >&2
    die "apt-get dist-upgrade in $dir failed"
  fi
  say "$(basename "$dir"): $(grep -cE '^(Unpacking|Setting up) ' "$dir.upgrade.log" || true) update steps applied ($SUITE-updates, $SUITE-security)"
  rm -f "$dir.upgrade.log"
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$dir"/usr/share/{man,groff,info,lintian,linda}/* "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* \
    "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old "$dir"/dev/* "$dir"/run/* "$dir"/tmp/* "$dir"/var/tmp/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  find "$dir/var/log" -type f -delete
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
  : >"$dir/etc/machine-id" 2>/dev/null || true
}

# Copies what `cargo build` needs of the host toolchain (no docs, clippy, rustfmt, rustdoc).
install_toolchain() {
  local dir="$1" name="${rust_version}-$TRIPLE"
  local tc="$dir/usr/local/rustup/toolchains/$name"
  mkdir -p "$tc/bin" "$tc/lib/rustlib/$TRIPLE" "$dir/usr/local/cargo/bin"
  cp -a "$toolchain/bin/rustc" "$toolchain/bin/cargo" "$tc/bin/"
  cp -a "$toolchain"/lib/*.so* "$tc/lib/"
  cp -a "$toolchain/lib/rustlib/$TRIPLE/lib" "$toolchain/lib/rustlib/$TRIPLE/bin" "$tc/lib/rustlib/$TRIPLE/"
  cp -a "$toolchain/lib/rustlib/components" "$toolchain/lib/rustlib/rust-installer-version" "$tc/lib/rustlib/" 2>/dev/null || true
  ln -s "../../rustup/toolchains/$name/bin/cargo" "$dir/usr/local/cargo/bin/cargo"
  ln -s "../../rustup/toolchains/$name/bin/rustc" "$dir/usr/local/cargo/bin/rustc"
  printf 'default_toolchain = "%s"\nprofile = "minimal"\nversion = "12"\n\n[overrides]\n' "$name" >"$dir/usr/local/rustup/settings.toml"
  chmod -R a+rX,go-w "$dir/usr/local/rustup" "$dir/usr/local/cargo"
  # The toolchain must run in the new tree, and be the version the Dockerfile names. (/proc is
  # needed: the loader finds rustc's libraries through /proc/self/exe when it runs via a symlink.)
  local got run=(chroot "$dir" /usr/bin/env -i PATH=/usr/local/cargo/bin:/usr/bin:/bin)
  mount -t proc proc "$dir/proc"
  got="$("${run[@]}" rustc --version)" && "${run[@]}" cargo --version >/dev/null \
    || { umount "$dir/proc"; die "the copied toolchain does not run in the image's root filesystem"; }
  umount "$dir/proc"
  got="$(awk '{print $2}' <<<"$got")"
  [[ "$got" == "$rust_version" ]] || die "rustc in the image is $got, expected $rust_version"
}

# make_tarball NAME FINGERPRINT INCLUDE WITH_RUST: makes $cache/NAME-FINGERPRINT.tar when missing
make_tarball() {
  local name="$1" fp="$2" include="$3" with_rust="$4"
  local tarball="$cache/$name-$fp.tar"
  if [[ -f "$tarball" ]]; then
    say "$name: cached $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
    return 0
  fi
  local dir="$cache/work/$name" t=$SECONDS
  say "$name: debootstrap --variant=minbase${include:+ --include=$include} $SUITE ($mirror)"
  run_debootstrap "$dir" "$include"
  say "$name: debootstrap done in $((SECONDS - t))s"
  trim_rootfs "$dir"
  if [[ "$with_rust" == 1 ]]; then
    t=$SECONDS
    install_toolchain "$dir"
    say "$name: Rust $rust_version copied and checked in $((SECONDS - t))s ($(du -sh "$dir/usr/local/rustup" | cut -f1))"
  fi
  t=$SECONDS
  tar --numeric-owner --xattrs --xattrs-include='*' --sort=name -C "$dir" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  remove_rootfs "$dir"
  rm -f "$dir.log"
  # Older tarballs of this image are of no use any more.
  find "$cache" -maxdepth 1 -name "$name-*.tar" -not -name "$(basename "$tarball")" -delete
  say "$name: made $(basename "$tarball") ($(du -h "$tarball" | cut -f1)) in $((SECONDS - t))s"
}

# import_base NAME FINGERPRINT REF CHANGES... : imports the tarball unless the image REF is the
# one imported from it before (marker $cache/NAME.imported = "<fingerprint> <image id>").
import_base() {
  local name="$1" fp="$2" ref="$3"
  shift 3
  local marker="$cache/$name.imported" full="docker.io/library/$ref" id=""
  id="$(podman image inspect --format '{{.Id}}' "$full" 2>/dev/null || true)"
  if [[ -n "$id" && -f "$marker" && "$(cat "$marker")" == "$fp $id" ]]; then
    say "$name: $full is in podman storage (${id:0:12})"
    return 0
  fi
  # The image this one replaces: removed at the end, once nothing built here uses it.
  if [[ -n "$id" ]]; then replaced+=("$id"); fi
  local change=() c t=$SECONDS
  for c in "$@"; do change+=(--change "$c"); done
  id="$(podman import --quiet "${change[@]}" --message "made by tests/image/build.sh ($fp)" "$cache/$name-$fp.tar" "$full")"
  id="$(podman image inspect --format '{{.Id}}' "$full")"
  echo "$fp $id" >"$marker"
  say "$name: imported as $full (${id:0:12}) in $((SECONDS - t))s"
}

replaced=()
base_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
debian_fp="$(fingerprint "recipe $RECIPE" "$SUITE minbase" "$mirror" "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null)")"
rust_fp="$(fingerprint "$debian_fp" "$RUST_PACKAGES" "$("$toolchain/bin/rustc" -vV)" "$("$toolchain/bin/cargo" -V)")"

if [[ "$refresh" == 1 ]]; then rm -f "$cache"/*.tar "$cache"/*.imported; fi

# Both root filesystems at once (debootstrap waits on the network and the disk, not the CPU).
phase "base root filesystems (debootstrap)"
make_tarball debian-$SUITE-slim "$debian_fp" "" 0 &
debian_job=$!
make_tarball "rust-$rust_want-slim-$SUITE" "$rust_fp" "$RUST_PACKAGES" 1
wait "$debian_job" || die "making the $debian_ref root filesystem failed"
debian_job=""
phase_done

phase "base image $debian_ref"
import_base debian-$SUITE-slim "$debian_fp" "$debian_ref" "ENV PATH=$base_path" 'CMD ["bash"]'
phase_done "$(podman image inspect --format '{{.Size}}' "docker.io/library/$debian_ref" | numfmt --to=iec)B"

phase "base image $rust_ref"
import_base "rust-$rust_want-slim-$SUITE" "$rust_fp" "$rust_ref" \
  "ENV PATH=/usr/local/cargo/bin:$base_path" "ENV RUSTUP_HOME=/usr/local/rustup" \
  "ENV CARGO_HOME=/usr/local/cargo" "ENV RUST_VERSION=$rust_version" 'CMD ["bash"]'
got="$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "docker.io/library/$rust_ref" | sed -n 's/^RUST_VERSION=//p')"
[[ "$got" == "$rust_want" || "$got" == "$rust_want".* ]] \
  || die "image $rust_ref has Rust ${got:-(none)}, but the Dockerfile names $rust_want"
phase_done "$(podman image inspect --format '{{.Size}}' "docker.io/library/$rust_ref" | numfmt --to=iec)B, rustc $got"

# --- the mcpgate image ---------------------------------------------------------------------
build_image() {
  # build_image MARKER-NAME CONTEXT DOCKERFILE INPUT-FINGERPRINT TAGS... -- BUD-ARGS...
  local name="$1" context="$2" dockerfile="$3" fp="$4"
  shift 4
  local tags=()
  while [[ $# -gt 0 && "$1" != -- ]]; do tags+=("$1"); shift; done
  shift
  local marker="$cache/$name.built" id old_id
  old_id="$(podman image inspect --format '{{.Id}}' "localhost/${tags[0]}" 2>/dev/null || true)"
  if [[ "$force" == 0 && -n "$old_id" && -f "$marker" && "$(cat "$marker")" == "$fp $old_id" ]]; then
    say "$name: ${tags[*]} up to date (${old_id:0:12})"
    return 0
  fi
  local tag_args=() t
  for t in "${tags[@]}"; do tag_args+=(-t "$t"); done
  rm -f "$marker"
  buildah bud --isolation chroot --pull=never --layers=false --force-rm "${tag_args[@]}" -f "$dockerfile" "$@" "$context"
  id="$(podman image inspect --format '{{.Id}}' "localhost/${tags[0]}")"
  echo "$fp $id" >"$marker"
  # The image this build replaced: removed at the end, unless something else still uses it.
  if [[ -n "$old_id" && "$old_id" != "$id" ]]; then replaced+=("$old_id"); fi
}

tree_fingerprint() { (cd "$root" && find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
# The host's CA bundle, for RUN steps only (never in an image): this machine may reach crates.io
# and npm through a TLS-intercepting proxy whose CA the images' stock bundle lacks.
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
ca_args=()
if [[ -f "$ca_bundle" ]]; then ca_args=(--volume "$ca_bundle:/run/build-ca.crt:ro"); fi
cargo_ca=()
if [[ -f "$ca_bundle" ]]; then cargo_ca=(--build-arg CARGO_HTTP_CAINFO=/run/build-ca.crt); fi
image_fp="$(fingerprint "$(tree_fingerprint Dockerfile .dockerignore Cargo.toml Cargo.lock src)" \
  "$(cat "$cache"/*.imported)" "${build_args[*]}")"

phase "image mcpgate:$version"
build_image mcpgate "$root" "$root/Dockerfile" "$image_fp" "mcpgate:$version" mcpgate:test -- "${build_args[@]}" "${ca_args[@]}" "${cargo_ca[@]}"
size="$(podman image inspect --format '{{.Size}}' "localhost/mcpgate:$version")"
phase_done "$(numfmt --to=iec "$size")B"

if [[ "$derived" == 1 ]]; then
  phase "image mcpgate-node:$version"
  node_fp="$(fingerprint "$(tree_fingerprint deploy/images)" "$(cat "$cache/mcpgate.built")")"
  build_image mcpgate-node "$root/deploy/images" "$root/deploy/images/Dockerfile.node" "$node_fp" \
    "mcpgate-node:$version" mcpgate-node:test -- --build-arg "BASE=localhost/mcpgate:$version" \
    "${ca_args[@]}" ${ca_args[0]:+--build-arg BUILD_CA_BUNDLE=/run/build-ca.crt}
  phase_done "$(podman image inspect --format '{{.Size}}' "localhost/mcpgate-node:$version" | numfmt --to=iec)B"
fi

# Replaced images, newest first (a derived image before its base).
for ((i = ${#replaced[@]} - 1; i >= 0; i--)); do podman rmi "${replaced[i]}" >/dev/null 2>&1 || true; done

say "=== timings"
printf '[image]   %s\n' "${timings[@]}"
say "total: $((SECONDS - total_start))s; mcpgate:$version = $(numfmt --to=iec "$size")B ($size bytes)"
