"""The simulated node's loaded driver: nvidia-smi reports the driver installed when the node last booted
(`gpusim boot`), as a kernel module stays loaded after its packages were upgraded, until the next reboot.

dpkg-query is a fake on PATH here (a script answering from a file), so the tests do not depend on what this
machine has installed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from simhelpers import Sim, make_sim

QUERY = ["--query-gpu=driver_version", "--format=csv,noheader"]


def _fake_dpkg(sim: Sim, answer: str | None) -> None:
    """dpkg-query on the simulator's PATH: prints ``answer`` (rc 0), or dpkg's 'no packages found' (rc 1)."""
    bin_dir = sim.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "dpkg-query"
    if answer is None:
        body = 'echo "dpkg-query: no packages found matching $4" >&2\nexit 1\n'
    else:
        body = f"printf '%s' '{answer}'\n"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    sim.env["PATH"] = f"{bin_dir}{os.pathsep}{sim.env['PATH']}"


def _reported(sim: Sim) -> set[str]:
    result = sim.run("nvsmi", *QUERY)
    assert result.returncode == 0, result.stdout
    return set(result.stdout.split())


def _with_package(tmp_path: Path, answer: str | None) -> Sim:
    """A node whose config names libnvidia-ml1 as the driver package, dpkg answering ``answer``."""
    sim = make_sim(tmp_path, driver_package="libnvidia-ml1", driver_version="535.54.03")
    _fake_dpkg(sim, answer)
    sim.state_path.unlink()  # initialise again, now that dpkg-query is the fake
    assert sim.run("admin", "init").returncode == 0
    return sim


def test_the_configured_version_without_a_driver_package(sim):
    assert _reported(sim) == {"535.183.01"}
    assert "Driver Version                            : 535.183.01" in sim.run("nvsmi", "-q").stdout


def test_init_records_the_installed_driver(tmp_path):
    sim = _with_package(tmp_path, "535.183.01-1 ii ")
    assert sim.state()["loaded_driver_version"] == "535.183.01"
    assert _reported(sim) == {"535.183.01"}


def test_an_upgrade_shows_only_after_the_next_boot(tmp_path):
    sim = _with_package(tmp_path, "535.183.01-1 hi ")
    _fake_dpkg(sim, "535.216.01-1 hi ")  # the packages were upgraded: still the old module until a boot
    assert _reported(sim) == {"535.183.01"}
    assert "535.216.01" not in sim.run("nvsmi", "-q").stdout
    assert sim.run("admin", "boot").returncode == 0
    assert _reported(sim) == {"535.216.01"}
    assert "Driver Version                            : 535.216.01" in sim.run("nvsmi", "-q").stdout


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("535.216.01-1~deb12u1 ii ", "535.216.01"),  # Debian's revision
        ("1:550.54.14-1 ii ", "550.54.14"),  # an epoch
        ("535.216.01-1 rc ", "535.54.03"),  # removed, configuration left: not installed
        (None, "535.54.03"),  # dpkg does not know the package
    ],
)
def test_version_from_dpkg_or_the_configured_fallback(tmp_path, answer, expected):
    sim = _with_package(tmp_path, answer)
    assert sim.run("admin", "boot").returncode == 0
    assert _reported(sim) == {expected}


def test_a_state_from_before_this_field_reports_the_configured_version(sim):
    data = sim.state()
    data.pop("loaded_driver_version", None)
    sim.state_path.write_text(json.dumps(data))
    assert _reported(sim) == {"535.183.01"}


def test_reset_state_loads_the_installed_driver(tmp_path):
    sim = _with_package(tmp_path, "535.183.01-1 ii ")
    _fake_dpkg(sim, "535.216.01-1 ii ")
    assert sim.run("admin", "reset-state").returncode == 0
    assert _reported(sim) == {"535.216.01"}
