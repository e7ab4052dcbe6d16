#!/usr/bin/env bash
# Make sure promtool (Prometheus' rule checker and rule unit-test runner) is at .cache/tools/promtool, and print its
# version. `make rules-test` calls this first.
#
# promtool comes from Debian's `prometheus` package, but installing that package on the controller would also
# install and start a Prometheus server. So the package is only downloaded (`apt-get download`) into a temporary
# folder and unpacked there (`dpkg-deb -x`); only usr/bin/promtool is kept. Nothing is installed, no service starts.
#
# - promtool already there and runs: print its version, exit 0.
# - Otherwise, as root on Debian: download the package (running `apt-get update` only when the download fails),
#   unpack it, keep promtool, check that it runs, print its version.
# - Otherwise: say exactly what to do, exit 1.
#
# PROMTOOL_DIR overrides the folder (default: <repo>/.cache/tools).
set -euo pipefail

log() { printf 'ensure-promtool: %s\n' "$*" >&2; }

repo_root=$(cd "$(dirname "$0")/.." && pwd)
tool_dir=${PROMTOOL_DIR:-$repo_root/.cache/tools}
promtool=$tool_dir/promtool

runs() { "$promtool" --version >/dev/null 2>&1; }
version() { "$promtool" --version 2>&1 | head -n 1; }

if [ -x "$promtool" ] && runs; then
  version
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  log "promtool is not at $promtool, and fetching it needs root on Debian (apt-get download + dpkg-deb)."
  log "fix: run 'sudo scripts/ensure-promtool.sh' once (it installs nothing: it unpacks promtool from Debian's"
  log "     prometheus package into $tool_dir), or copy a promtool binary (Prometheus >= 2.42) to $promtool."
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt for the transfer; let that user write into the folder.
chmod 0755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi

download() { (cd "$work" && apt-get download -q prometheus >/dev/null 2>"$work/apt.err"); }
if ! download; then
  log "apt-get download prometheus failed; running apt-get update once and retrying"
  apt-get update -q >/dev/null
  if ! download; then
    log "apt-get download prometheus failed again:"
    cat "$work/apt.err" >&2
    exit 1
  fi
fi

deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)
if [ -z "$deb" ]; then
  log "apt-get download succeeded but left no prometheus_*.deb in $work"
  exit 1
fi
dpkg-deb -x "$deb" "$work/root"
if [ ! -f "$work/root/usr/bin/promtool" ]; then
  log "$(basename "$deb") holds no usr/bin/promtool"
  exit 1
fi
mkdir -p "$tool_dir"
install -m 0755 "$work/root/usr/bin/promtool" "$promtool.new"
mv "$promtool.new" "$promtool"
if ! runs; then
  log "$promtool was unpacked from $(basename "$deb") but does not run:"
  "$promtool" --version >&2 || true
  rm -f "$promtool"
  exit 1
fi
log "unpacked promtool from $(basename "$deb") into $tool_dir"
version
