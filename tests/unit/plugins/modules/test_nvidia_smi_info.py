"""nvidia_smi_info against recorded nvidia-smi calls (argv, rc, stdout) kept beside this test as data.

Each fixture names its source. Only `debian_535_container_no_driver` is a real capture so far; the others are
synthetic (written from NVIDIA's documented formats) and their test ids say so, until a session with a GPU
replaces them with real captures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE_PATH = ROOT / "plugins" / "modules" / "nvidia_smi_info.py"
FIXTURES = Path(__file__).parent / "fixtures" / "nvidia_smi"
sys.path.insert(0, str(MODULE_PATH.parent))

import nvidia_smi_info as module  # noqa: E402


def _load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _fixture_id(path: Path) -> str:
    kind = "real" if _load(path.stem)["source"].startswith("real capture") else "synthetic"
    return f"{path.stem}[{kind}]"


FIXTURE_PATHS = sorted(FIXTURES.glob("*.json"))


def _replay(calls: list[dict]):
    """A runner that answers only the exact command lines that were recorded, in order."""
    pending = list(calls)

    def run(argv: list[str]) -> tuple[int, str, str]:
        assert pending, f"unexpected extra call {argv}"
        call = pending.pop(0)
        assert argv[1:] == call["argv"][1:], f"module ran {argv[1:]}, recording has {call['argv'][1:]}"
        return call["rc"], call["stdout"], call["stderr"]

    return run


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=_fixture_id)
def test_facts_from_recorded_calls(path, tmp_path):
    fixture = _load(path.stem)
    result = module.gather(_replay(fixture["calls"]), "/usr/bin/nvidia-smi", sys_root=str(tmp_path))
    expected = fixture["expected"]
    for key in ("driver_loaded", "driver_version", "cuda_version", "gpu_count"):
        assert result[key] == expected[key], key
    assert result["changed"] is False
    if "first_gpu" in expected:
        assert result["gpus"][0] == expected["first_gpu"]
        assert [gpu["index"] for gpu in result["gpus"]] == list(range(expected["gpu_count"]))
        assert result["reason"] == ""
    else:
        assert result["gpus"] == []
        assert result["reason"] == expected["reason"]


def test_every_fixture_names_its_source():
    for path in FIXTURE_PATHS:
        source = _load(path.stem)["source"]
        assert source.startswith(("real capture", "synthetic")), path.name


def test_no_nvidia_smi_is_not_a_failure(tmp_path):
    result = module.gather(_replay([]), None, sys_root=str(tmp_path))
    assert result["driver_loaded"] is False
    assert result["gpus"] == []
    assert result["reason"] == "nvidia-smi is not installed"


def test_loaded_driver_that_nvml_refuses_is_reported(tmp_path):
    (tmp_path / "module" / "nvidia").mkdir(parents=True)
    (tmp_path / "module" / "nvidia" / "version").write_text("535.183.01\n")
    calls = [{"argv": ["nvidia-smi", *module.QUERY_ARGS], "rc": 18, "stdout": "", "stderr": ""}]
    calls[0]["stdout"] = "Failed to initialize NVML: Driver/library version mismatch\n"
    result = module.gather(_replay(calls), "/usr/bin/nvidia-smi", sys_root=str(tmp_path))
    assert result["driver_loaded"] is True
    assert result["driver_version"] == "535.183.01"
    assert result["gpus"] == []
    assert "Driver/library version mismatch" in result["reason"]


def test_timeout_is_an_error_that_says_so(tmp_path):
    calls = [{"argv": ["nvidia-smi", *module.QUERY_ARGS], "rc": 124, "stdout": "", "stderr": ""}]
    with pytest.raises(RuntimeError, match="did not answer within the timeout"):
        module.gather(_replay(calls), "/usr/bin/nvidia-smi", sys_root=str(tmp_path))


def test_unexpected_failure_names_the_command(tmp_path):
    calls = [{"argv": ["nvidia-smi", *module.QUERY_ARGS], "rc": 3, "stdout": "", "stderr": "boom\n"}]
    with pytest.raises(RuntimeError, match=r"--query-gpu=.* failed with exit code 3: boom"):
        module.gather(_replay(calls), "/usr/bin/nvidia-smi", sys_root=str(tmp_path))


def test_malformed_row_is_refused():
    with pytest.raises(ValueError, match="expected 10 fields"):
        module.parse_query("0, GPU-x, NVIDIA H100\n")


def test_unknown_mode_value_is_refused():
    row = "0, GPU-x, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559, Maybe, Disabled, Enabled, Default, 535.183.01\n"
    with pytest.raises(ValueError, match="unexpected mode value 'Maybe'"):
        module.parse_query(row)


def _stub_nvidia_smi(directory: Path, fixture: str) -> None:
    """A stand-in nvidia-smi on PATH that replays a fixture's recorded calls (any order)."""
    stub = directory / "nvidia-smi"
    stub.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys
            for call in json.load(open({str(FIXTURES / (fixture + ".json"))!r}))["calls"]:
                if call["argv"][1:] == sys.argv[1:]:
                    sys.stdout.write(call["stdout"]); sys.stderr.write(call["stderr"]); sys.exit(call["rc"])
            sys.exit(2)
            """
        )
    )
    stub.chmod(0o755)


def _run_module(tmp_path: Path, args: dict) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, MODULE_PATH, args_file], capture_output=True, text=True, env=env, check=False
    )
    return json.loads(proc.stdout)


def test_module_runs_end_to_end_in_check_mode(tmp_path):
    _stub_nvidia_smi(tmp_path, "h100_x8_hgx")
    result = _run_module(tmp_path, {"_ansible_check_mode": True})
    assert result.get("failed") is not True, result
    assert result["gpu_count"] == 8
    assert result["cuda_version"] == "12.2"
    assert result["gpus"][7]["pci_bus_id"] == "00000000:DB:00.0"


def test_module_reports_a_bad_explicit_path(tmp_path):
    result = _run_module(tmp_path, {"nvidia_smi_path": str(tmp_path / "missing-nvidia-smi")})
    assert result["failed"] is True
    assert "nvidia_smi_path=" in result["msg"]
