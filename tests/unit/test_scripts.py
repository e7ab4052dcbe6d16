"""The shell entry points refuse bad input and say what to do, without needing Docker."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_build_image_refuses_an_unknown_suite(repo_root):
    result = subprocess.run(
        [repo_root / "scripts" / "build-image.sh"],
        env={**os.environ, "LAB_SUITE": "jessie"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "LAB_SUITE='jessie' is not supported" in result.stderr


def test_ensure_docker_tells_a_non_root_user_what_to_do(repo_root, tmp_path):
    # Stand-ins: a docker client whose engine does not answer, and a non-root user id.
    _stub(tmp_path, "docker", "exit 1")
    _stub(tmp_path, "id", "echo 1000")
    result = subprocess.run(
        ["bash", repo_root / "scripts" / "ensure-docker.sh"],
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert "fix:" in result.stderr


def _gameday(repo_root: Path, tmp_path: Path, rc: int, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/gameday.sh with a stand-in `chaosgpu` that records its arguments, writes a summary and exits rc."""
    reports = tmp_path / "reports"
    _stub(
        tmp_path,
        "chaosgpu",
        f'echo "$@" > {tmp_path}/args; mkdir -p {reports}/run; ln -sfn run {reports}/latest; '
        f"printf '# Game day\\n\\n| # | Experiment | Result |\\n|---|---|---|\\n| 1 | xid | FAIL |\\n\\n' "
        f"> {reports}/run/summary.md; exit {rc}",
    )
    return subprocess.run(
        ["bash", repo_root / "scripts" / "gameday.sh"],
        env={
            **os.environ,
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
            "GAMEDAY_REPORTS": str(reports),
            "GPUOPS_LAB_LOCK": str(tmp_path / "lock"),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )


def test_gameday_passes_the_suite_and_subset_and_prints_the_summary_table(repo_root, tmp_path):
    result = _gameday(repo_root, tmp_path, 1, GAMEDAY_ONLY="01,11", GAMEDAY_ARGS="--stop-on-failure")
    assert result.returncode == 1
    args = (tmp_path / "args").read_text().split()
    assert args[:5] == ["gameday", "--inventory", "inventories/lab", "--suite", "experiments/lab"]
    assert args[args.index("--preflight-wait") + 1] == "180"
    assert args[-3:] == ["--only", "01,11", "--stop-on-failure"]
    assert "| 1 | xid | FAIL |" in result.stdout
    assert "report.html" in result.stdout


def test_gameday_refused_input_prints_no_stale_summary(repo_root, tmp_path):
    result = _gameday(repo_root, tmp_path, 2)
    assert result.returncode == 2
    assert "| 1 | xid" not in result.stdout
