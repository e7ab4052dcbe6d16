#!/usr/bin/env bash
# `make ee`: the build context of the execution environment (execution-environment.yml) in build/ee, ready for
# `ansible-builder build` (or `podman build`/`docker build` of build/ee) on a machine that reaches a registry.
# 1. the collection tarball and the chaosgpu wheel into build/ee-dist (exactly one of each);
# 2. `ansible-builder create`, which checks the definition and copies them into the context.
# No image is built here: the base image comes from a registry (docs/awx.md).
set -euo pipefail
cd "$(dirname "$0")/.."

dist=build/ee-dist
context=build/ee
rm -rf "$dist" "$context"
mkdir -p "$dist"

echo "ee: building the collection gpuops.fleet into $dist"
ansible-galaxy collection build --force --output-path "$dist" . >/dev/null
echo "ee: building the chaosgpu wheel into $dist"
python -m pip wheel --quiet --no-deps --wheel-dir "$dist" . >/dev/null
ls "$dist"

echo "ee: ansible-builder create -> $context"
ansible-builder create --file execution-environment.yml --context "$context" --output-filename Containerfile
echo "ee: build context ready: ansible-builder build -f execution-environment.yml -c $context -t <registry>/gpuops-fleet-ee:<version>"
