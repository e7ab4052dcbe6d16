#!/usr/bin/env bash
# Create or refresh the development virtualenv ($VENV, default .venv) from requirements.txt + constraints.txt,
# install chaosgpu into it (editable) and link this repository as the gpuops.fleet collection.
#
# The virtualenv is reused only when its recorded requirements hash matches and it still imports what it must;
# otherwise it is rebuilt from scratch. A second run with nothing changed takes a few seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
# The interpreter to build the virtualenv from: never the virtualenv's own (make puts $venv/bin first on PATH, and a
# rebuild removes it), so python3 is looked up on PATH without $venv/bin.
if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
else
  python=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$venv/bin" | paste -sd: -) command -v python3 || true)
  [ -n "$python" ] || { printf 'setup: error: no python3 on PATH\n' >&2; exit 1; }
fi
log() { printf 'setup: %s\n' "$*" >&2; }

"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' ||
  { log "error: Python 3.11 or newer is needed ($python is $("$python" -V 2>&1))"; exit 1; }

want=$( { cat "$here/requirements.txt" "$here/constraints.txt"; "$python" -V; } | sha256sum | cut -c1-16)
have=$(cat "$venv/.gpuops-requirements" 2>/dev/null || true)

healthy() {
  [ "$have" = "$want" ] &&
    "$venv/bin/python" -c 'import ansible, molecule, testinfra, chaoslib, bcrypt, docker' 2>/dev/null
}

if ! healthy; then
  [ -n "$have" ] && log "requirements changed or virtualenv broken: rebuilding $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  log "installing pinned requirements into $venv (about a minute)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" -c "$here/constraints.txt" \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
  echo "$want" > "$venv/.gpuops-requirements"
fi

# chaosgpu, editable, pointing at this checkout (re-done when the venv was made for another checkout).
where=$(cd / && "$venv/bin/python" -c 'import chaosgpu, os; print(os.path.dirname(os.path.dirname(chaosgpu.__file__)))' \
        2>/dev/null || true)
if [ "$where" != "$here" ]; then
  log "installing chaosgpu (editable) from $here"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$here" \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
fi

# This repository is the collection gpuops.fleet (ansible.cfg: collections_path = ./.collections).
mkdir -p "$here/.collections/ansible_collections/gpuops"
ln -sfn ../../.. "$here/.collections/ansible_collections/gpuops/fleet"
log "ready: $venv"
