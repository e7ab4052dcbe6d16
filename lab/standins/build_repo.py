#!/usr/bin/env python3
"""Build a signed apt repository of STAND-IN packages for lab tests (lab only; never for production hosts).

NVIDIA-hosted packages (CUDA-repo drivers, the container toolkit) cannot be downloaded here, so Molecule
scenarios that exercise those install paths use packages that carry the same names and versions and whose
commands implement what the roles call. Every stand-in says so in its Description and in
/usr/share/doc/<package>/STAND-IN.

    build_repo.py SPEC.json [SPEC.json ...] --out DIR --key-name NAME

Writes DIR/pool/*.deb, DIR/dists/stable/main/binary-<arch>/Packages, a Release signed by a fresh GnuPG key
(InRelease and Release.gpg), and the public key as DIR/repo-key.pub; prints the key's fingerprint. Uses only
the Python standard library, dpkg-deb and gpg, which every Debian host has.

A spec is JSON: {"packages": [{"name", "version", "description", "depends": [...], "files": {path: {"mode",
"content"}}, "postinst": "...", "prerm": "..."}]}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
STANDIN_NOTE = "STAND-IN for gpuops.fleet lab tests; not NVIDIA software."


def build_deb(package: dict, pool: Path) -> Path:
    name, version = package["name"], package["version"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "DEBIAN").mkdir()
        control = [
            f"Package: {name}",
            f"Version: {version}",
            f"Architecture: {package.get('architecture', ARCH)}",
            "Maintainer: gpuops.fleet lab <lab@gpuops.invalid>",
            "Section: non-free/misc",
            "Priority: optional",
        ]
        if package.get("depends"):
            control.append("Depends: " + ", ".join(package["depends"]))
        control.append(f"Description: {package['description']} ({STANDIN_NOTE})")
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        for script in ("postinst", "prerm", "postrm"):
            if package.get(script):
                path = root / "DEBIAN" / script
                path.write_text("#!/bin/sh\nset -e\n" + package[script] + "\n")
                path.chmod(0o755)
        files = dict(package.get("files", {}))
        files[f"/usr/share/doc/{name}/STAND-IN"] = {"mode": "0644", "content": STANDIN_NOTE + "\n"}
        upstream = version.split(":")[-1].split("-")[0]
        for path, spec in files.items():
            target = root / path.replace("@VERSION@", upstream).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(spec["content"].replace("@VERSION@", upstream))
            target.chmod(int(spec.get("mode", "0644"), 8))
        deb = pool / f"{name}_{version}_{package.get('architecture', ARCH)}.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
            check=True,
            capture_output=True,
        )
    return deb


def packages_entry(deb: Path, repo: Path) -> str:
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    data = deb.read_bytes()
    return (
        control.rstrip("\n")
        + f"\nFilename: {deb.relative_to(repo)}\nSize: {len(data)}\n"
        + f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"  # noqa: S324 - apt index field
    )


def write_release(dist: Path, index_files: list[Path]) -> Path:
    lines = ["Origin: gpuops-lab-standins", "Label: gpuops-lab-standins", "Suite: stable", "Codename: stable"]
    lines += [f"Architectures: {ARCH}", "Components: main", "Description: " + STANDIN_NOTE, "SHA256:"]
    for path in index_files:
        data = path.read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {path.relative_to(dist)}")
    release = dist / "Release"
    release.write_text("\n".join(lines) + "\n")
    return release


def gpg(home: Path, *args: str) -> str:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--quiet", *args], capture_output=True, text=True, check=True
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key-name", default="gpuops lab stand-in repository")
    args = parser.parse_args()

    repo = args.out
    pool = repo / "pool"
    binary = repo / "dists" / "stable" / "main" / f"binary-{ARCH}"
    pool.mkdir(parents=True, exist_ok=True)
    binary.mkdir(parents=True, exist_ok=True)
    debs = [build_deb(package, pool) for spec in args.specs for package in json.loads(spec.read_text())["packages"]]
    index = "\n".join(packages_entry(deb, repo) for deb in sorted(debs))
    (binary / "Packages").write_text(index)
    (binary / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
    dist = repo / "dists" / "stable"
    release = write_release(dist, [binary / "Packages", binary / "Packages.gz"])

    home = Path(tempfile.mkdtemp(prefix="standin-gnupg-"))
    os.chmod(home, 0o700)
    gpg(
        home,
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-generate-key",
        args.key_name,
        "ed25519",
        "sign",
        "1d",
    )
    fingerprint = next(
        line.split(":")[9] for line in gpg(home, "--with-colons", "--list-keys").splitlines() if line.startswith("fpr")
    )
    gpg(home, "--yes", "--clearsign", "-o", str(dist / "InRelease"), str(release))
    gpg(home, "--yes", "-abs", "-o", str(dist / "Release.gpg"), str(release))
    (repo / "repo-key.pub").write_text(gpg(home, "--armor", "--export", fingerprint))
    print(fingerprint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
