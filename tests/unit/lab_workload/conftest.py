"""The `node` fixture: a fake nvidia-smi and drain files in a temporary directory; servers stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from workloadhelpers import FakeNode, make_node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    fake = make_node(tmp_path)
    yield fake
    fake.stop()
