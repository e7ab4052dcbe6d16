"""apt_installed: apt runs only when dpkg does not show every package installed as asked.

The parsing is checked against dpkg-query's own output on this (Debian) machine and against crafted lines for the
states a host can be in; the action end to end with ansible-playbook on localhost (connection local), in check
mode: for installed packages it reports ok without apt; for a missing one it hands over to apt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "plugins" / "action"))

from apt_installed import Spec, parse_specs, query_command, unsatisfied  # noqa: E402

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg (Debian)")


def _specs(*names: str) -> list[Spec]:
    specs = parse_specs(list(names))
    assert specs is not None
    return specs


def _dpkg(lines: list[str], native: str = "amd64") -> str:
    return "\n".join([native, *lines]) + "\n"


def test_plain_names_arches_and_versions_parse() -> None:
    assert _specs("nftables", "libc6:amd64", "nvidia-container-toolkit=1.17.8-1", "prometheus=2.42*") == [
        Spec("nftables", "nftables", None, None),
        Spec("libc6:amd64", "libc6", "amd64", None),
        Spec("nvidia-container-toolkit=1.17.8-1", "nvidia-container-toolkit", None, "1.17.8-1"),
        Spec("prometheus=2.42*", "prometheus", None, "2.42*"),
    ]


@pytest.mark.parametrize("name", ["./local.deb", "/srv/x.deb", "foo>=1.0", "Foo", "foo bar", "foo;rm", "", "foo=*1"])
def test_anything_else_is_left_to_apt(name: str) -> None:
    assert parse_specs(["nftables", name]) is None


def test_the_query_quotes_each_name_once_and_keeps_dpkg_escapes() -> None:
    command = query_command(_specs("nftables", "nftables=1.0.6-2", "libc6:i386"))
    assert command.startswith("dpkg --print-architecture && { dpkg-query -W -f='${Package}\\t")
    assert command.endswith("-- nftables libc6 || true; }")


def test_installed_packages_at_any_version_satisfy() -> None:
    out = _dpkg(["nftables\tamd64\t1.0.6-2+deb12u2\tii ", "tzdata\tall\t2024a-0+deb12u1\thi "])
    assert unsatisfied(_specs("nftables", "tzdata"), out) == []


@pytest.mark.parametrize(
    "status",
    ["rc ", "un ", "iU ", "iF ", "iHR", "ih ", "pn ", "ii R"],
    ids=[
        "config-files",
        "unknown",
        "unpacked",
        "half-configured",
        "reinst-required",
        "half-installed",
        "purged",
        "err",
    ],
)
def test_a_package_not_fully_installed_is_missing(status: str) -> None:
    assert unsatisfied(_specs("auditd"), _dpkg([f"auditd\tamd64\t1:3.0.9-1\t{status}"])) == ["auditd"]


def test_an_unknown_package_is_missing() -> None:
    assert unsatisfied(_specs("nftables", "slurmd"), _dpkg(["nftables\tamd64\t1.0.6-2\tii "])) == ["slurmd"]


def test_versions_must_match_exactly_or_as_a_glob() -> None:
    out = _dpkg(["prometheus\tamd64\t2.42.0+ds-5+b5\tii ", "containerd\tamd64\t1.6.20~ds1-1+b1\tii "])
    assert unsatisfied(_specs("prometheus=2.42.0+ds-5+b5", "containerd=1.6.20~ds1-1+b1"), out) == []
    assert unsatisfied(_specs("prometheus=2.42*", "containerd=1.6*"), out) == []
    assert unsatisfied(_specs("prometheus=2.42.0+ds-5", "containerd=1.7*"), out) == [
        "prometheus=2.42.0+ds-5",
        "containerd=1.7*",
    ]


def test_only_the_native_architecture_or_all_counts_unless_one_is_named() -> None:
    out = _dpkg(["libfoo1\ti386\t1.0-1\tii "])
    assert unsatisfied(_specs("libfoo1"), out) == ["libfoo1"]
    assert unsatisfied(_specs("libfoo1:i386"), out) == []
    assert unsatisfied(_specs("libfoo1:arm64"), _dpkg(["libfoo1\tarm64\t1.0-1\tii "], native="arm64")) == []


@pytest.mark.parametrize("out", ["", "bash: dpkg: command not found\n", "amd64\nnot four fields\n"])
def test_output_that_is_not_dpkgs_is_left_to_apt(out: str) -> None:
    assert unsatisfied(_specs("nftables"), out) is None


@needs_dpkg
def test_real_dpkg_output_on_this_machine() -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "dpkg"], capture_output=True, text=True, check=True
    ).stdout
    specs = _specs("dpkg", f"bash:{arch}", f"dpkg={version}", "gpuops-no-such-package", "dpkg=0.0.1-not-this")
    out = subprocess.run(["sh", "-c", query_command(specs)], capture_output=True, text=True, check=True).stdout
    assert unsatisfied(specs, out) == ["gpuops-no-such-package", "dpkg=0.0.1-not-this"]


def _playbook(tmp_path: Path, task: dict[str, Any], *options: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook of the one task on localhost (connection local) with the JSON callback."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", *options,
         str(playbook)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def _run(tmp_path: Path, names: list[str]) -> dict[str, Any]:
    """The task's result, in check mode."""
    task = {"gpuops.fleet.apt_installed": {"name": names, "update_cache": False}, "register": "out",
            "ignore_errors": True}  # fmt: skip
    done = _playbook(tmp_path, task, "--check")
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


@needs_dpkg
def test_installed_packages_report_ok_without_apt(tmp_path: Path) -> None:
    result = _run(tmp_path, ["dpkg", "bash"])
    assert result["changed"] is False, result
    assert not result.get("failed"), result
    assert result["apt_ran"] is False
    assert result["missing"] == []


@needs_dpkg
def test_a_missing_package_hands_over_to_apt(tmp_path: Path) -> None:
    # apt runs in check mode: either python-apt is absent here (apt says it must be installed to use check mode)
    # or apt does not know the package. Both are apt's own answers, and both fail the task.
    result = _run(tmp_path, ["dpkg", "gpuops-no-such-package"])
    assert result["apt_ran"] is True, result
    assert result["missing"] == ["gpuops-no-such-package"]
    assert result.get("failed") is True
    assert "apt" in result["msg"].lower() or "gpuops-no-such-package" in result["msg"], result["msg"]


def test_bad_arguments_name_the_option(tmp_path: Path) -> None:
    done = _playbook(tmp_path, {"gpuops.fleet.apt_installed": {"name": ["dpkg"], "state": "absent"}})
    assert done.returncode != 0
    assert "state" in done.stdout, done.stdout
    assert "absent" in done.stdout


def test_an_empty_package_list_is_refused_naming_the_option(tmp_path: Path) -> None:
    done = _playbook(tmp_path, {"gpuops.fleet.apt_installed": {"name": []}})
    assert done.returncode != 0
    assert "name: the list of packages is empty" in done.stdout, done.stdout
