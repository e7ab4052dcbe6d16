#!/usr/bin/env bash
# Build the lab host image (Debian, systemd as PID 1, sshd, python3) and print its tag.
#
#   scripts/build-image.sh                 # Debian 12 (bookworm)
#   LAB_SUITE=trixie scripts/build-image.sh  # Debian 13
#
# The image is tagged gpuops-lab:<suite>-<hash>, where <hash> is a content hash of its recipe (this script,
# lab/image/*, the suite and the mirror), and also gpuops-lab:<suite> for Molecule and the lab. With that
# image present a call returns at once. The base is debian:<suite> when Docker has it (LAB_PULL=1 lets it
# try to pull), otherwise a debootstrap rootfs imported with 'docker import' (itself cached by hash).
# A freshly built image must boot (systemd reaches running, sshd listens) before it is tagged.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
recipe="$here/lab/image"
suite=${LAB_SUITE:-bookworm}
mirror=${LAB_MIRROR:-http://deb.debian.org/debian}
repo=${LAB_IMAGE_REPO:-gpuops-lab}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$suite" in
  bookworm|trixie) ;;
  *) die "LAB_SUITE='$suite' is not supported; use bookworm (Debian 12) or trixie (Debian 13)" ;;
esac

"$here/scripts/ensure-docker.sh"

hash=$( { cat "$0" "$recipe"/Dockerfile "$recipe"/packages.txt "$recipe"/lab-sshd-keygen.service
          printf '%s\n%s\n' "$suite" "$mirror"; } | sha256sum | cut -c1-12)
tag="$repo:$suite-$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$repo:$suite"
  echo "$tag"
  exit 0
fi

base="debian:$suite"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ "${LAB_PULL:-0}" = 1 ] && timeout 120 docker pull -q "$base" >/dev/null 2>&1; then
    log "pulled $base"
  else
    rootfs_hash=$( { grep -v '^#' "$recipe/packages.txt"; printf '%s\n%s\n' "$suite" "$mirror"; } |
                   sha256sum | cut -c1-12)
    base="$repo-rootfs:$suite-$rootfs_hash"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
      if ! command -v debootstrap >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || die "debootstrap is missing; as root run 'apt-get install debootstrap'"
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
      fi
      [ "$(id -u)" = 0 ] || die "debootstrap needs root; run 'make image' as root or 'docker pull $base' first"
      work=$(mktemp -d /var/tmp/gpuops-rootfs.XXXXXX)
      trap 'rm -rf "$work"' EXIT
      include=$(grep -v '^#' "$recipe/packages.txt" | paste -sd, -),debian-archive-keyring
      log "debootstrap $suite from $mirror (about a minute; log: $work.log)"
      if ! debootstrap --variant=minbase --include="$include" "$suite" "$work/rootfs" "$mirror" >"$work.log" 2>&1; then
        tail -n 30 "$work.log" >&2
        die "debootstrap failed; full log: $work.log"
      fi
      rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
      tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
      rm -rf "$work" "$work.log"
      trap - EXIT
      log "imported rootfs as $base"
    fi
  fi
fi

candidate="$repo:candidate-$hash"
log "building $tag from $base"
build_log=$(mktemp /var/tmp/gpuops-image-build.XXXXXX)
if ! DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$base" --build-arg "SUITE=$suite" \
    --build-arg "MIRROR=$mirror" -t "$candidate" "$recipe" >"$build_log" 2>&1; then
  tail -n 30 "$build_log" >&2
  die "docker build failed; full log: $build_log"
fi
rm -f "$build_log"

# Boot test: the same flags the lab and Molecule use (DESIGN.md: no --privileged on this daemon).
name="gpuops-image-boottest-$$"
docker run -d --name "$name" --cap-add SYS_ADMIN --cap-add NET_ADMIN --cgroupns=host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined "$candidate" >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
state=unknown
for _ in $(seq 1 60); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
if [ "$state" != running ]; then
  docker exec "$name" systemctl --failed --no-legend >&2 || true
  die "the image does not boot cleanly (systemd state: $state); candidate left as $candidate"
fi
docker exec "$name" sh -c 'for i in $(seq 1 20); do ss -Hltn "sport = :22" | grep -q . && exit 0; sleep 0.5; done; exit 1' ||
  die "sshd does not listen on port 22 in the booted image"
docker tag "$candidate" "$tag"
docker tag "$candidate" "$repo:$suite"
docker rmi "$candidate" >/dev/null
# Older builds of this suite are superseded: drop their tags (layers still used by containers stay).
docker images --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -E "^$repo:$suite-[0-9a-f]{12}\$" |
  grep -vx "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $tag"
echo "$tag"
