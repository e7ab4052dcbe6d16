#!/usr/bin/env bash
# Make sure a Docker engine answers. Every Makefile target that needs Docker calls this first.
#
# - An engine already answers: exit 0 at once.
# - None answers, we are root on Debian: install docker.io (and its runtime) from the Debian archive when
#   missing, start dockerd in the background, wait until it answers (bounded), exit 0.
# - Otherwise: say exactly what to do, exit 1.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
answers() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
  exit 0
fi

is_debian=false
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  case " ${ID:-} ${ID_LIKE:-} " in *" debian "*) is_debian=true ;; esac
fi

if [ "$(id -u)" != 0 ] || [ "$is_debian" != true ]; then
  log "no Docker engine answers ('docker info' failed)."
  if [ "$is_debian" = true ]; then
    log "fix: as root run 'apt-get install docker.io' and start it ('systemctl start docker' or 'dockerd &'),"
    log "     then add yourself to the docker group ('usermod -aG docker $USER') and log in again."
  else
    log "fix: install Docker Engine for your OS (https://docs.docker.com/engine/install/), start it,"
    log "     and make sure 'docker info' works for this user."
  fi
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from the Debian archive"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends docker.io iptables >/dev/null
fi

# Prefer the init system when there is one; fall back to starting dockerd directly (containers, CI sandboxes).
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null && answers; then
  exit 0
fi

log_file=/var/log/dockerd.log
log "starting dockerd in the background (log: $log_file)"
# In a session of its own (setsid): a job runner that ends the process group of the command that started it (CI
# steps, terminal multiplexers, agents' shells) must not take the engine and every lab container down with it.
# Appended, so the log of an engine that went away is still there to read.
setsid nohup dockerd >>"$log_file" 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if answers; then
    log "Docker engine is up"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; the last lines of $log_file:"
tail -n 20 "$log_file" >&2 || true
exit 1
