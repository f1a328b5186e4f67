#!/usr/bin/env bash
# Builds the worker image.
#
#   scripts/image.sh [--tag TAG] [--binary PATH]     prints the image's name on its last stdout line
#   scripts/image.sh env                             prints `export` lines for podman's configuration
#
# With a Docker daemon that answers: `docker build -t TAG .`, the Dockerfile's own Rust build stage.
#
# Otherwise with podman (the test machines have no Docker daemon and reach no container registry):
#   - installs podman, runc and debootstrap from Debian's packages when they are missing;
#   - writes podman's configuration under .local/podman (runc, cgroupfs, and file limits the
#     sandbox allows; `scripts/image.sh env` points a shell's podman at it);
#   - makes the Debian base image with debootstrap once (minbase with ca-certificates, from the
#     machine's own Debian mirror) and keeps it as localhost/statefun-base:bookworm;
#   - builds the Dockerfile's runtime stage (infra/docker/Containerfile.prebuilt) around a binary
#     built on the host: --binary, by default the workspace's target/debug/statefun (build it first).
# The image runs as the non-root user statefun (uid 10001), with a health check (`statefun health`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PODMAN_DIR="$REPO/.local/podman"
BASE_IMAGE="localhost/statefun-base:bookworm"
TAG="localhost/statefun:latest"
BINARY="${CARGO_TARGET_DIR:-$REPO/target}/debug/statefun"

say() { echo "image: $*" >&2; }
fail() { echo "image: $*" >&2; exit 1; }

podman_env() {
  echo "export CONTAINERS_CONF=$PODMAN_DIR/containers.conf"
}

if [ "${1:-}" = "env" ]; then
  podman_env
  exit 0
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --binary) BINARY="$2"; shift 2 ;;
    *) fail "unknown argument $1 (usage: scripts/image.sh [--tag TAG] [--binary PATH] | env)" ;;
  esac
done

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "building with docker (the Dockerfile's Rust build stage)"
  docker build -t "$TAG" "$REPO" >&2
  echo "$TAG"
  exit 0
fi

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian's packages"
  source "$REPO/scripts/lib/debian.sh"
  install_debian_packages "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"

mkdir -p "$PODMAN_DIR"
cat >"$PODMAN_DIR/containers.conf" <<'CONF'
# Written by scripts/image.sh: what podman needs in this sandbox.
[containers]
# The sandbox cannot raise the file and process limits podman asks for by default.
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
# crun refuses this machine's cgroup layout; runc with plain cgroupfs works.
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
eval "$(podman_env)"

if ! podman image exists "$BASE_IMAGE"; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs="$PODMAN_DIR/rootfs-bookworm"
  rm -rf "$rootfs"
  say "making $BASE_IMAGE with debootstrap from $mirror (about 30 s)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$PODMAN_DIR/debootstrap.log" 2>&1 \
    || fail "debootstrap failed (see $PODMAN_DIR/debootstrap.log)"
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >&2
  rm -rf "$rootfs"
fi

[ -x "$BINARY" ] || fail "no binary at $BINARY (cargo build --bins first, or give --binary)"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$BINARY" "$context/statefun"
cp "$REPO/infra/docker/entrypoint.sh" "$context/entrypoint.sh"
cp "$REPO/infra/docker/Containerfile.prebuilt" "$context/Containerfile"
say "building $TAG with podman around $BINARY"
# Docker's format keeps the HEALTHCHECK (the OCI format has no place for it).
podman build --pull=never --network host --format docker --build-arg "BASE=$BASE_IMAGE" -t "$TAG" "$context" >&2
echo "$TAG"
