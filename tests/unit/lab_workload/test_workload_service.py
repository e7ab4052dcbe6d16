"""The lab workload service answers /infer only while its node is fit: healthy GPUs by nvidia-smi and no drain
file. Served in-process on 127.0.0.1 against a fake nvidia-smi (conftest.py); one test runs it as the unit does."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import workload_service as ws
from workloadhelpers import ROOT, FakeNode

# Bound for anything that waits for the service's background check; generous so a slow machine passes too.
SETTLE_S = 15.0
MODULE = ROOT / "roles" / "lab_workload" / "files" / "workload_service.py"


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    """Status and decoded body (JSON when it is JSON) of one request."""
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1 only
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode("utf-8")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what: str, probe: Callable[[], tuple[int, Any]], want: int) -> tuple[int, Any]:
    """Poll until the probe's status is `want`, at most SETTLE_S; the last answer otherwise fails the test."""
    deadline = time.monotonic() + SETTLE_S
    last = probe()
    while last[0] != want and time.monotonic() < deadline:
        time.sleep(0.02)
        last = probe()
    assert last[0] == want, f"{what}: still {last} after {SETTLE_S} s"
    return last


def test_healthy_node_answers_inference_and_health(node: FakeNode) -> None:
    base = node.start()
    status, body = call(f"{base}/infer")
    assert status == 200
    assert body["node"] == "fake-node"
    assert body["model"] == ws.MODEL
    assert body["gpu"] in range(8)
    assert body["gpu_uuid"] == f"GPU-fake-{body['gpu']:04d}"
    assert 1.0 <= body["compute_ms"] <= 3.0
    assert call(f"{base}/healthz") == (200, {"status": "ok", "node": "fake-node", "gpus": 8})


def test_gpus_are_used_round_robin(node: FakeNode) -> None:
    base = node.start()
    used = [call(f"{base}/infer")[1]["gpu"] for _ in range(16)]
    assert sorted(used) == sorted(list(range(8)) * 2)
    assert used[:8] == [(used[0] + n) % 8 for n in range(8)]


def test_post_infers_on_the_json_input(node: FakeNode) -> None:
    base = node.start()
    status, body = call(f"{base}/infer", "POST", json.dumps({"input": "hello GPU"}).encode())
    assert status == 200
    assert body["input_chars"] == len("hello GPU")
    assert body["output"] == hashlib.sha256(b"hello GPU").hexdigest()[:16]


def test_drain_file_makes_the_node_refuse_at_once_and_removal_restores_it(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    node.drain_file.write_text(json.dumps({"drained": True, "reason": "gpu_health: xid 79 on GPU 3"}))
    for path in ("/infer", "/healthz"):
        status, body = call(f"{base}{path}")
        assert status == 503, path
        assert body["status"] == "unavailable"
        assert str(node.drain_file) in body["reason"]
        assert "xid 79 on GPU 3" in body["reason"]
    node.drain_file.unlink()
    assert call(f"{base}/infer")[0] == 200
    assert call(f"{base}/healthz")[0] == 200


def test_maintenance_marker_drains_too(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    node.maintenance_file.write_text("not json")  # unreadable content: still drained, reason without detail
    status, body = call(f"{base}/infer")
    assert status == 503
    assert body["reason"] == f"node drained ({node.maintenance_file})"


def test_lost_gpu_refuses_and_recovery_answers_again(node: FakeNode) -> None:
    base = node.start(health_interval_s=0.2)
    node.set_gpus(gpus=8, lost=[3])
    _, body = wait_for("lost GPU", lambda: call(f"{base}/infer"), 503)
    assert body["reason"].startswith("GPU lost: Unable to determine the device handle for GPU 0000:03:00.0")
    assert call(f"{base}/healthz")[0] == 503
    node.set_gpus(gpus=8)
    wait_for("recovered GPU", lambda: call(f"{base}/infer"), 200)
    assert call(f"{base}/healthz")[0] == 200


def test_one_check_after_recovery_is_enough(node: FakeNode) -> None:
    """With the background check effectively off, the verdict changes exactly when a check runs."""
    base = node.start(health_interval_s=3600.0)
    workload = node.servers[0].workload
    node.set_gpus(gpus=8, rc=9, stderr="NVIDIA-SMI has failed because it couldn't communicate with the driver")
    assert call(f"{base}/infer")[0] == 200  # not checked yet: the last verdict holds
    workload.refresh()
    status, body = call(f"{base}/infer")
    assert status == 503
    assert "exited 9" in body["reason"]
    node.set_gpus(gpus=8)
    assert call(f"{base}/infer")[0] == 503
    workload.refresh()
    assert call(f"{base}/infer")[0] == 200


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (
            {"gpus": 8, "rc": 9, "stderr": "NVIDIA-SMI has failed because it couldn't communicate with the driver"},
            "nvidia-smi exited 9: NVIDIA-SMI has failed because it couldn't communicate with the driver",
        ),
        ({"gpus": 7}, "nvidia-smi lists 7 GPUs, 8 expected"),
        ({"gpus": 0, "rc": 6, "stderr": ""}, "nvidia-smi exited 6: no output"),
    ],
)
def test_failing_nvidia_smi_refuses_with_the_reason(node: FakeNode, mode: dict[str, Any], reason: str) -> None:
    node.set_gpus(**mode)
    base = node.start(health_interval_s=3600.0)
    assert call(f"{base}/infer") == (503, {"status": "unavailable", "node": "fake-node", "reason": reason})
    assert call(f"{base}/healthz")[0] == 503


def test_missing_nvidia_smi_refuses(node: FakeNode) -> None:
    base = node.start(nvidia_smi=str(node.root / "absent"), health_interval_s=3600.0)
    status, body = call(f"{base}/infer")
    assert status == 503
    assert body["reason"] == f"nvidia-smi not found: {node.root / 'absent'}"


def test_hanging_nvidia_smi_refuses(node: FakeNode) -> None:
    node.set_gpus(gpus=8, sleep_s=30)
    base = node.start(nvidia_smi_timeout_s=0.3, health_interval_s=3600.0)
    status, body = call(f"{base}/infer")
    assert status == 503
    assert body["reason"] == "nvidia-smi did not answer within 0.3 s"


def test_load_does_not_run_nvidia_smi_per_request(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    for _ in range(30):
        assert call(f"{base}/infer")[0] == 200
        assert call(f"{base}/healthz")[0] == 200
    assert node.calls() == 1  # the check at start only


def test_background_check_runs_once_per_interval(node: FakeNode) -> None:
    interval = 0.2
    start = time.monotonic()
    base = node.start(health_interval_s=interval)
    for _ in range(20):
        call(f"{base}/infer")
    elapsed = time.monotonic() - start
    # At most one check per interval (plus the one at start and one in flight), whatever the request rate.
    assert 1 <= node.calls() <= elapsed / interval + 2


def test_stale_verdict_counts_as_unhealthy(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    workload = node.servers[0].workload
    old = workload.verdict()
    workload._verdict = ws.Verdict(True, "", old.gpus, old.checked_at - 4 * 3600)
    status, body = call(f"{base}/healthz")
    assert status == 503
    assert body["reason"].startswith("GPU health check is stale")


def test_unknown_path_and_oversized_body_are_refused(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    assert call(f"{base}/nope")[0] == 404
    assert call(f"{base}/infer", "POST", b"x" * (ws.MAX_BODY_BYTES + 1))[0] == 413


def test_metrics_count_requests_and_show_the_verdict(node: FakeNode) -> None:
    base = node.start(health_interval_s=3600.0)
    call(f"{base}/infer")
    node.drain_file.write_text("{}")
    call(f"{base}/infer")
    status, text = call(f"{base}/metrics")
    assert status == 200
    assert 'lab_workload_requests_total{path="/infer",code="200"} 1' in text
    assert 'lab_workload_requests_total{path="/infer",code="503"} 1' in text
    assert "lab_workload_healthy 0" in text
    assert "lab_workload_gpus 8" in text


def test_parse_gpu_list_separates_error_lines() -> None:
    gpus, other = ws.parse_gpu_list("0, GPU-a\nUnable to determine the device handle: GPU is lost\n\n2, GPU-c\n")
    assert gpus == [ws.Gpu(0, "GPU-a"), ws.Gpu(2, "GPU-c")]
    assert other == ["Unable to determine the device handle: GPU is lost"]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "70000"], "--port 70000"),
        (["--nvidia-smi", "nvidia-smi"], "--nvidia-smi 'nvidia-smi'"),
        (["--expected-gpus", "0"], "--expected-gpus 0"),
        (["--drain-file", "drain.json"], "--drain-file 'drain.json'"),
        (["--health-interval-s", "0"], "--health-interval-s 0"),
        (["--compute-ms-min", "30", "--compute-ms-max", "20"], "--compute-ms-min 30.0 / --compute-ms-max 20.0"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        ws.parse_args(argv)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_the_script_serves_until_sigterm(node: FakeNode) -> None:
    """As the systemd unit runs it: a script with options; it says where it listens and stops on SIGTERM."""
    argv = [
        sys.executable,
        str(MODULE),
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--node",
        "script-node",
        "--nvidia-smi",
        str(node.nvidia_smi),
        "--drain-file",
        str(node.drain_file),
    ]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            lines = [proc.stderr.readline() for _ in range(2)]  # the first verdict, then where it serves
            assert lines[0] == "lab_workload: GPUs healthy (8 listed)\n", lines
            line = lines[1]
            assert "script-node serving on 127.0.0.1:" in line, lines
            port = int(line.rsplit(":", 1)[1])
            assert call(f"http://127.0.0.1:{port}/healthz")[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=SETTLE_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_client_hanging_up_is_not_logged_as_an_error(node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    """HAProxy closes a health check once it has the status; other errors keep their traceback."""
    node.start(health_interval_s=3600.0)
    server = node.servers[0]
    capsys.readouterr()
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real bug")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a real bug" in capsys.readouterr().err
