"""gpu_health agent tests: the package from roles/gpu_health/files, the GPU simulator's helpers for stand-in output."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "roles" / "gpu_health" / "files"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "gpu_simulator"))  # simhelpers: stand-ins without Docker
