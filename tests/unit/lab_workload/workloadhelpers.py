"""Helpers of the lab workload service tests: the module from roles/lab_workload/files, served in-process on
127.0.0.1 against a fake nvidia-smi (a script whose answer a JSON file next to it decides) and temporary drain
files."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "roles" / "lab_workload" / "files"))

import workload_service as ws  # noqa: E402

FAKE_NVIDIA_SMI = """#!{python}
# Fake nvidia-smi of the lab workload tests: behaves as {mode_file} says; counts its runs in {calls_file}.
import json, sys, time
with open({calls_file!r}, "a") as calls:
    calls.write("x")
mode = json.load(open({mode_file!r}))
time.sleep(mode.get("sleep_s", 0))
for n in range(mode.get("gpus", 8)):
    if n in mode.get("lost", []):
        print(f"Unable to determine the device handle for GPU 0000:{{n:02x}}:00.0: GPU is lost. "
              "Reboot the system to recover this GPU")
    else:
        print(f"{{n}}, GPU-fake-{{n:04d}}")
if mode.get("stderr"):
    print(mode["stderr"], file=sys.stderr)
sys.exit(mode.get("rc", 15 if mode.get("lost") else 0))
"""


@dataclass
class FakeNode:
    """A fake nvidia-smi and drain-file paths in a temporary directory."""

    root: Path
    servers: list[ws.Server] = field(default_factory=list)

    @property
    def nvidia_smi(self) -> Path:
        return self.root / "nvidia-smi"

    @property
    def drain_file(self) -> Path:
        return self.root / "gpu_health" / "drain.json"

    @property
    def maintenance_file(self) -> Path:
        return self.root / "gpu_health" / "maintenance.json"

    def set_gpus(self, **mode: object) -> None:
        """What the fake nvidia-smi does next: gpus=N, lost=[indexes], rc=N, stderr=text, sleep_s=S."""
        tmp = self.root / "mode.json.tmp"
        tmp.write_text(json.dumps(mode), encoding="utf-8")
        tmp.replace(self.root / "mode.json")

    def calls(self) -> int:
        path = self.root / "calls"
        return len(path.read_text(encoding="utf-8")) if path.exists() else 0

    def config(self, **overrides: object) -> ws.Config:
        settings: dict[str, object] = {
            "listen": "127.0.0.1",
            "port": 0,
            "node": "fake-node",
            "nvidia_smi": str(self.nvidia_smi),
            "nvidia_smi_timeout_s": 5.0,
            "expected_gpus": 8,
            "drain_files": (str(self.drain_file), str(self.maintenance_file)),
            "health_interval_s": 0.2,
            "compute_ms_min": 1.0,
            "compute_ms_max": 3.0,
        }
        settings.update(overrides)
        return ws.Config(**settings)  # type: ignore[arg-type]

    def start(self, **overrides: object) -> str:
        """Serve in a thread; the base URL."""
        server = ws.serve(self.config(**overrides))
        self.servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
            server.workload.stop_monitor()


def make_node(tmp_path: Path) -> FakeNode:
    """A FakeNode whose fake nvidia-smi lists 8 healthy GPUs; no drain file yet."""
    fake = FakeNode(tmp_path)
    fake.nvidia_smi.write_text(
        FAKE_NVIDIA_SMI.format(
            python=sys.executable, mode_file=str(tmp_path / "mode.json"), calls_file=str(tmp_path / "calls")
        ),
        encoding="utf-8",
    )
    fake.nvidia_smi.chmod(0o755)
    fake.drain_file.parent.mkdir()
    fake.set_gpus(gpus=8)
    return fake
