#!/usr/bin/env bash
# The lab's operator key (.cache/lab/ssh/id_ed25519): Molecule SSH scenarios and the lab log in with it.
# Made once per checkout, never committed, never used outside the lab.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
key="$here/.cache/lab/ssh/id_ed25519"
if [ ! -s "$key" ] || [ ! -s "$key.pub" ]; then
  command -v ssh-keygen >/dev/null || { echo "lab-ssh-key: ssh-keygen is missing (apt-get install openssh-client)" >&2; exit 1; }
  mkdir -p "$(dirname "$key")"
  chmod 0700 "$(dirname "$key")"
  rm -f "$key" "$key.pub"
  ssh-keygen -q -t ed25519 -N '' -C "gpuops-lab-operator" -f "$key"
  echo "lab-ssh-key: created $key" >&2
fi
