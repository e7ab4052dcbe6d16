"""lab_workload: the inference service on a simulated GPU node behind HAProxy on an ops instance, as a client of
HAProxy sees it: 200 while the node is fit, HAProxy's own 503 (no server left) once a drain file or a lost GPU has
taken the only node out, 200 again once it recovers.

Every wait has a deadline derived from the deployed configuration (HAProxy's fall x inter plus its check timeout,
or rise x inter; the service's check interval) plus a fixed slack for a loaded machine, never from how fast this
machine is. The tests run in order; each one leaves the node healthy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable

import pytest
import testinfra

testinfra_hosts = ["ansible://ops"]

GPU_NODE = "molecule-lab_workload-gpu"
SERVICE = "lab-workload"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
DRAIN_FILE = "/var/lib/gpu_health/drain.json"
EXPECTED_GPUS = 8
NO_SERVER = "No server is available"
# Added to every computed deadline: process start-up, docker exec round trips, a loaded CI machine.
SLACK_S = 10.0
# One request from the ops instance: "<status> <body>" (status 0 when no HTTP answer came).
CLIENT = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, e)
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _gpu_host():
    return testinfra.get_host(f"ansible://{GPU_NODE}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def _duration_s(value: str) -> float:
    """An HAProxy duration in seconds (a bare number is milliseconds)."""
    number, unit = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value).groups()
    return int(number) * _UNITS.get(unit or "ms", 1e-3)


@pytest.fixture(scope="module")
def haproxy(host):
    """The frontend URL, the server address and the check settings from HAProxy's own configuration file."""
    text = host.file(HAPROXY_CFG).content_string
    bind = re.search(r"^frontend inference\n\s+bind (\S+)$", text, re.MULTILINE).group(1)
    checks = re.search(r"default-server inter (\S+) fall (\d+) rise (\d+)", text)
    timeout_check = re.search(r"timeout check (\S+)", text)
    return {
        "url": f"http://{bind}/infer",
        "server": re.search(r"server \S+ (\S+) check", text).group(1),
        "inter_s": _duration_s(checks.group(1)),
        "fall": int(checks.group(2)),
        "rise": int(checks.group(3)),
        "check_timeout_s": _duration_s(timeout_check.group(1)) if timeout_check else 0.0,
    }


@pytest.fixture(scope="module")
def service_interval_s():
    """The service's GPU check interval, from its unit's command line."""
    unit = _gpu_host().file(f"/etc/systemd/system/{SERVICE}.service").content_string
    return float(re.search(r"--health-interval-s (\S+)", unit).group(1))


def request(host, url):
    """(status, body) of one request from the ops instance."""
    out = host.check_output(f"python3 -c {shlex.quote(CLIENT)} {shlex.quote(url)}")
    status, _, body = out.partition(" ")
    return int(status), body


def diagnostics(host):
    stats = host.run("curl -s 'http://127.0.0.1:8404/stats;csv'").stdout
    haproxy_log = host.run("journalctl -u haproxy -n 20 --no-pager -o cat").stdout
    service_log = _gpu_host().run(f"journalctl -u {SERVICE} -n 20 --no-pager -o cat").stdout
    return f"HAProxy stats:\n{stats}\nhaproxy journal:\n{haproxy_log}\n{SERVICE} journal:\n{service_log}"


def wait_until(host, url, done: Callable[[int, str], bool], since: float, deadline_s: float, what: str) -> str:
    """Request until `done(status, body)`, at most `deadline_s` after `since` (time.monotonic()); the last body."""
    while True:
        status, body = request(host, url)
        if done(status, body):
            return body
        if time.monotonic() - since > deadline_s:
            pytest.fail(f"{what}: still {status} {body!r} {deadline_s:.0f} s later\n{diagnostics(host)}")
        time.sleep(0.2)


def test_services_run_as_deployed(host):
    gpu = _gpu_host()
    assert gpu.service(SERVICE).is_running
    assert gpu.service(SERVICE).is_enabled
    assert gpu.user("lab-workload").shell == "/usr/sbin/nologin"
    assert gpu.check_output(f"systemctl show -p User --value {SERVICE}") == "lab-workload"
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled


def test_haproxy_configuration_is_valid_and_checks_health(host):
    assert host.run(f"haproxy -c -q -f {HAPROXY_CFG}").rc == 0
    text = host.file(HAPROXY_CFG).content_string
    assert "option httpchk GET /healthz" in text
    assert "option redispatch 1" in text


def test_inference_answers_through_haproxy(host, haproxy):
    start = time.monotonic()
    deadline = haproxy["rise"] * haproxy["inter_s"] + SLACK_S
    answer = json.loads(wait_until(host, haproxy["url"], lambda s, _: s == 200, start, deadline, "first answer"))
    assert answer["node"] == GPU_NODE
    assert answer["gpu"] in range(EXPECTED_GPUS)
    gpus = {json.loads(request(host, haproxy["url"])[1])["gpu"] for _ in range(EXPECTED_GPUS)}
    assert len(gpus) > 1, f"every request went to the same GPU: {gpus}"


def test_the_service_answers_its_health_check_from_the_ops_host(host, haproxy):
    status, body = request(host, f"http://{haproxy['server']}/healthz")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "node": GPU_NODE, "gpus": EXPECTED_GPUS}


def test_drain_file_takes_the_node_out_and_back(host, haproxy):
    gpu = _gpu_host()
    down_s = haproxy["fall"] * haproxy["inter_s"] + haproxy["check_timeout_s"] + SLACK_S
    up_s = haproxy["rise"] * haproxy["inter_s"] + haproxy["check_timeout_s"] + SLACK_S
    drain = json.dumps({"drained": True, "reason": "molecule drain"})
    start = time.monotonic()
    gpu.check_output(f"install -d -m 0755 /var/lib/gpu_health && echo {shlex.quote(drain)} > {DRAIN_FILE}")
    try:
        status, body = request(host, f"http://{haproxy['server']}/healthz")
        assert status == 503, body
        assert json.loads(body)["reason"] == f"node drained ({DRAIN_FILE}): molecule drain"
        # The node refuses at once; HAProxy answers 503 itself once its checks took the only server out.
        wait_until(host, haproxy["url"], lambda s, b: s == 503 and NO_SERVER in b, start, down_s, "drained node")
    finally:
        gpu.check_output(f"rm -f {DRAIN_FILE}")
    start = time.monotonic()
    wait_until(host, haproxy["url"], lambda s, _: s == 200, start, up_s, "undrained node")


def test_lost_gpu_takes_the_node_out_and_a_boot_brings_it_back(host, haproxy, service_interval_s):
    """The simulator's XID 79 loses a GPU (nvidia-smi rc 15); `gpusim boot` is what a reboot does to it. This runs
    the simulator's nvidia-smi as the service's user, inside its sandbox."""
    gpu = _gpu_host()
    base = service_interval_s + haproxy["check_timeout_s"] + SLACK_S
    start = time.monotonic()
    gpu.check_output("gpusim xid --gpu 3 --xid 79")
    try:
        down_s = base + haproxy["fall"] * haproxy["inter_s"]
        wait_until(host, haproxy["url"], lambda s, b: s == 503 and NO_SERVER in b, start, down_s, "lost GPU")
        status, body = request(host, f"http://{haproxy['server']}/healthz")
        assert status == 503, body
        assert json.loads(body)["reason"].startswith("GPU lost: "), body
    finally:
        gpu.check_output("gpusim boot")
    start = time.monotonic()
    up_s = base + haproxy["rise"] * haproxy["inter_s"]
    wait_until(host, haproxy["url"], lambda s, _: s == 200, start, up_s, "GPU back after gpusim boot")
