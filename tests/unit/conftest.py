"""Shared helpers of the unit tests (no Docker, no network beyond 127.0.0.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "filter"))
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture
def repo_root() -> Path:
    return ROOT
