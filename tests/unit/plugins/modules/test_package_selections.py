"""package_selections: only the packages whose selection differs are set, in one dpkg call; check mode sets none.

dpkg-query and dpkg are stand-ins on PATH that keep a package database in a JSON file, speaking the real tools'
arguments and formats (``-W -f=${db:Status-Abbrev}\\n`` and ``--set-selections`` on stdin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE_PATH = ROOT / "plugins" / "modules" / "package_selections.py"

FAKE_QUERY = """#!/usr/bin/env python3
import json, os, sys
db = json.load(open(os.environ["FAKE_DPKG_DB"]))
assert sys.argv[1:3] == ["-W", "-f=${db:Status-Abbrev}\\n"], sys.argv
name = sys.argv[3]
if name not in db:
    print(f"dpkg-query: no packages found matching {name}", file=sys.stderr)
    sys.exit(1)
print(db[name])
"""

FAKE_DPKG = """#!/usr/bin/env python3
import json, os, sys
path = os.environ["FAKE_DPKG_DB"]
db = json.load(open(path))
assert sys.argv[1:] == ["--set-selections"], sys.argv
letter = {"install": "i", "hold": "h", "deinstall": "r", "purge": "p"}
for line in sys.stdin.read().splitlines():
    name, selection = line.split()
    with open(path + ".calls", "a") as calls:
        calls.write(line + "\\n")
    if name in db:
        db[name] = letter[selection] + db[name][1:]
    else:
        print(f"dpkg: warning: package not in status nor available database at line 1: {name}", file=sys.stderr)
json.dump(db, open(path, "w"))
"""


@pytest.fixture
def dpkg(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dpkg-query", FAKE_QUERY), ("dpkg", FAKE_DPKG)):
        (bin_dir / name).write_text(text, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    db = tmp_path / "db.json"
    db.write_text(json.dumps({"nvidia-smi": "hi ", "libnvidia-ml1": "ii ", "dcgm": "rc ", "old-tool": "un "}))
    return db


def _run(db: Path, args: dict, check_mode: bool = False) -> dict:
    args_file = db.parent / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": check_mode, **args}}))
    env = {**os.environ, "PATH": f"{db.parent / 'bin'}:{os.environ['PATH']}", "FAKE_DPKG_DB": str(db)}
    proc = subprocess.run(
        [sys.executable, MODULE_PATH, args_file], capture_output=True, text=True, env=env, check=False
    )
    return json.loads(proc.stdout)


def _calls(db: Path) -> list[str]:
    calls = db.parent / "db.json.calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_only_the_packages_that_differ_are_set_in_one_call_then_nothing(dpkg: Path) -> None:
    result = _run(dpkg, {"names": ["nvidia-smi", "libnvidia-ml1"], "selection": "hold"})
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["before"] == {"nvidia-smi": "hold", "libnvidia-ml1": "install"}
    assert result["changed_packages"] == ["libnvidia-ml1"]
    assert _calls(dpkg) == ["libnvidia-ml1 hold"]
    assert json.loads(dpkg.read_text())["libnvidia-ml1"] == "hi "
    again = _run(dpkg, {"names": ["nvidia-smi", "libnvidia-ml1"], "selection": "hold"})
    assert again["changed"] is False
    assert _calls(dpkg) == ["libnvidia-ml1 hold"]  # no second dpkg call


def test_check_mode_reports_and_sets_nothing(dpkg: Path) -> None:
    result = _run(dpkg, {"names": ["nvidia-smi"], "selection": "install"}, check_mode=True)
    assert result["changed"] is True
    assert result["changed_packages"] == ["nvidia-smi"]
    assert _calls(dpkg) == []
    assert json.loads(dpkg.read_text())["nvidia-smi"] == "hi "


def test_only_installed_leaves_removed_and_unknown_packages_alone(dpkg: Path) -> None:
    names = ["libnvidia-ml1", "dcgm", "old-tool", "never-heard-of"]
    result = _run(dpkg, {"names": names, "selection": "hold", "only_installed": True})
    assert result["changed_packages"] == ["libnvidia-ml1"]
    assert result["before"]["dcgm"] == "deinstall"
    assert result["before"]["never-heard-of"] == "not present"
    # without it, like ansible.builtin.dpkg_selections, every package that is not held is a change
    everyone = _run(dpkg, {"names": names, "selection": "hold"}, check_mode=True)
    assert everyone["changed_packages"] == ["dcgm", "old-tool", "never-heard-of"]


def test_a_bad_name_is_refused_before_anything_is_set(dpkg: Path) -> None:
    result = _run(dpkg, {"names": ["nvidia-smi", "rm -rf /"], "selection": "hold"})
    assert result["failed"] is True
    assert result["msg"] == "names: not a Debian package name: rm -rf /"
    assert _calls(dpkg) == []
