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


def test_gameday_says_it_is_not_built_yet(repo_root):
    result = subprocess.run(["make", "-s", "gameday"], cwd=repo_root, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "does not exist yet" in result.stderr
