"""Helpers of the GPU simulator tests: a private state directory and the stand-ins run as subprocesses."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
LIB = ROOT / "roles" / "gpu_simulator" / "files" / "lib"
EXPORTER = ROOT / "lab" / "standins" / "bin" / "dcgm-exporter"
FIXTURES = ROOT / "tests" / "unit" / "plugins" / "modules" / "fixtures" / "nvidia_smi"
sys.path.insert(0, str(LIB))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Sim:
    """One simulated node in a temporary directory."""

    root: Path
    env: dict[str, str]
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.root / "state" / "state.json"

    @property
    def kernel_log(self) -> Path:
        return self.root / "log" / "kmsg"

    def run(self, module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"gpusim.{module}", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def spawn(self, argv: list[str], **env: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            argv, env={**self.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.children.append(child)
        return child

    def spawn_module(self, module: str, *args: str, **env: str) -> subprocess.Popen[str]:
        return self.spawn([sys.executable, "-m", f"gpusim.{module}", *args], **env)

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def edit(self, **per_gpu: dict[str, Any]) -> None:
        """Overwrite fields of GPUs in the saved state: edit(gpu0={...})."""
        data = self.state()
        for key, values in per_gpu.items():
            data["gpus"][int(key.removeprefix("gpu"))].update(values)
        self.state_path.write_text(json.dumps(data))

    def hostengine(self) -> int:
        port = free_port()
        self.spawn_module("hostengine", "-n", "-p", str(port), "--pid", str(self.root / "he.pid"), "-f", "/dev/null")
        wait_for_port(port)
        return port

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()


def make_sim(tmp_path: Path, hostname: str = "gpu-node-1", **config: Any) -> Sim:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / "gpusim.json"
    config_path.write_text(json.dumps({"gpu_count": 8, "profile": "h100-80gb-hbm3", **config}))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(LIB),
        "GPUSIM_LIB": str(LIB),
        "GPUSIM_CONFIG": str(config_path),
        "GPUSIM_STATE": str(tmp_path / "state" / "state.json"),
        "GPUSIM_KERNEL_LOG": str(tmp_path / "log" / "kmsg"),
        "GPUSIM_HOSTNAME": hostname,
        "GPUSIM_PERSISTENCED_PIDFILE": str(tmp_path / "persistenced" / "nvidia-persistenced.pid"),
        "GPUSIM_PERSISTENCED_DIR": str(tmp_path / "persistenced"),
        "GPUSIM_ASSUME_ROOT": "1",
        "TZ": "UTC",
        "LC_ALL": "C",
    }
    sim = Sim(tmp_path, env)
    result = sim.run("admin", "init")
    assert result.returncode == 0, result.stderr
    return sim


# dcgmi and the dcgm-exporter stand-in


def dcgmi(sim: Sim, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return sim.run("dcgmi", *args, "--host", f"127.0.0.1:{port}")


def start_exporter(sim: Sim, *args: str, **env: str) -> int:
    port = free_port()
    child = sim.spawn([sys.executable, str(EXPORTER), "-a", f"127.0.0.1:{port}", *args], **env)
    try:
        wait_for_port(port)
    except AssertionError:
        child.terminate()
        raise AssertionError(child.communicate(timeout=5)) from None
    return port


def scrape(
    port: int, headers: dict[str, str] | None = None, scheme: str = "http", context: ssl.SSLContext | None = None
) -> str:
    url = f"{scheme}://127.0.0.1:{port}/metrics"
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http(s) on loopback only
    with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
        return response.read().decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], str]]:
    """(labels, value) of every series of one metric, in exposition order."""
    pattern = re.compile(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$", re.M)
    found = []
    for match in pattern.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        found.append((labels, match["value"]))
    return found
