"""The `sim` fixture: one simulated node in a temporary directory, its child processes stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from simhelpers import Sim, make_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    node = make_sim(tmp_path)
    yield node
    node.stop()
