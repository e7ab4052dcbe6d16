"""monitoring role: Prometheus and Alertmanager as an operator and a scraper see them on a converged host.

The host runs node_exporter too and is its own scrape target (group molecule, by its container address).
"""

from __future__ import annotations

import json
import shlex
import time

import pytest
import yaml

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
DEADLINE_S = 90


@pytest.fixture(scope="module")
def address(default_ipv4):
    """Where the role listens by default (config and default_ipv4 come from ../conftest.py)."""
    return default_ipv4


def journal(host, unit):
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


def get_json(host, url):
    result = host.run(shlex.join(["curl", "-sSf", "--max-time", "10", url]))
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def poll(host, url, accept):
    """GET url until accept(json) is true or DEADLINE_S passes; returns the last answer."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        answer = get_json(host, url)
        if accept(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(2)


def main_pid(host, unit):
    pid = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
    assert pid > 0, journal(host, unit)
    return pid


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_service_is_enabled_and_running(host, unit):
    service = host.service(unit)
    assert service.is_enabled, journal(host, unit)
    assert service.is_running, journal(host, unit)


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_runs_the_roles_unit_not_the_packages(host, unit):
    fragment = host.check_output(f"systemctl show -p FragmentPath --value {unit}")
    assert fragment == f"/etc/systemd/system/{unit}.service"
    assert not host.file(f"/run/systemd/system/{unit}.service").exists


@pytest.mark.parametrize("port", [9090, 9093])
def test_listens_only_on_the_primary_address(host, address, port):
    sockets = host.check_output("ss -Hltn").splitlines()
    on_port = {line.split()[3] for line in sockets if line.split()[3].rsplit(":", 1)[1] == str(port)}
    assert on_port == {f"{address}:{port}"}, sockets


def test_alertmanager_cluster_port_is_closed(host):
    assert ":9094 " not in host.check_output("ss -Hltn")


def test_retention_flags_are_in_force(host, config):
    argv = host.file(f"/proc/{main_pid(host, PROMETHEUS)}/cmdline").content_string.split("\0")
    assert f"--storage.tsdb.retention.time={config['monitoring_prometheus_retention_time']}" in argv
    assert f"--storage.tsdb.retention.size={config['monitoring_prometheus_retention_size']}" in argv


def test_rules_api_lists_every_installed_rule_group(host, address):
    wanted = set()
    for path in host.check_output("ls /etc/prometheus/rules").split():
        rules = yaml.safe_load(host.file(f"/etc/prometheus/rules/{path}").content_string)
        wanted |= {group["name"] for group in rules["groups"]}
    assert "molecule-always-firing" in wanted
    assert any(name.startswith("gpuops-gpu") for name in wanted)
    loaded = {g["name"] for g in get_json(host, f"http://{address}:9090/api/v1/rules")["data"]["groups"]}
    assert loaded == wanted


def test_targets_are_generated_from_the_scrape_groups(host, address):
    def node_up(answer):
        return any(
            t["labels"]["job"] == "node_exporter" and t["health"] == "up" for t in answer["data"]["activeTargets"]
        )

    targets = poll(host, f"http://{address}:9090/api/v1/targets", node_up)["data"]["activeTargets"]
    by_job = {t["labels"]["job"]: t for t in targets}
    assert set(by_job) == {"prometheus", "node_exporter", "dcgm_exporter"}, targets
    assert by_job["node_exporter"]["scrapeUrl"] == f"http://{address}:9100/metrics"
    assert by_job["node_exporter"]["health"] == "up", by_job["node_exporter"]
    assert by_job["node_exporter"]["labels"]["host"] == "molecule-monitoring"
    # Nothing runs dcgm-exporter here: the job exists with the right URL; its health is not this role's concern.
    assert by_job["dcgm_exporter"]["scrapeUrl"] == f"http://{address}:9400/metrics"
    assert by_job["prometheus"]["health"] == "up"


def test_prometheus_reaches_alertmanager(host, address):
    answer = get_json(host, f"http://{address}:9090/api/v1/alertmanagers")
    urls = [a["url"] for a in answer["data"]["activeAlertmanagers"]]
    assert urls == [f"http://{address}:9093/api/v2/alerts"], answer


def test_firing_alert_reaches_alertmanager(host, address):
    def firing(answer):
        return any(a["labels"]["alertname"] == "MoleculeAlwaysFiring" for a in answer)

    alerts = poll(host, f"http://{address}:9093/api/v2/alerts", firing)
    assert firing(alerts), f"not in Alertmanager within {DEADLINE_S}s: {alerts}"


def test_default_receiver_is_a_blackhole(host, address):
    status = get_json(host, f"http://{address}:9093/api/v2/status")
    config = yaml.safe_load(status["config"]["original"])
    assert config["route"]["receiver"] == "default"
    assert config["receivers"] == [{"name": "default"}]


def test_reload_keeps_the_process_and_succeeds(host, address):
    for unit, port, metric in [
        (PROMETHEUS, 9090, "prometheus_config_last_reload_successful"),
        (ALERTMANAGER, 9093, "alertmanager_config_last_reload_successful"),
    ]:
        before = main_pid(host, unit)
        host.run_expect([0], f"systemctl reload {unit}")
        assert main_pid(host, unit) == before
        metrics = host.check_output(f"curl -sSf --max-time 10 http://{address}:{port}/metrics")
        assert f"{metric} 1" in metrics.splitlines(), journal(host, unit)


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_sandbox_is_in_force(host, unit):
    wanted = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    shown = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {k}" for k in wanted))
    assert dict(line.split("=", 1) for line in shown.splitlines()) == wanted
    status = dict(
        line.split(":", 1) for line in host.file(f"/proc/{main_pid(host, unit)}/status").content_string.splitlines()
    )
    assert status["NoNewPrivs"].strip() == "1"
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["Seccomp"].strip() == "2"
    assert host.check_output(f"ps -o user= -p {main_pid(host, unit)}").strip() == "prometheus"


def test_configuration_is_not_world_readable(host):
    for name in ["prometheus.yml", "alertmanager.yml"]:
        config = host.file(f"/etc/prometheus/{name}")
        assert config.user == "root"
        assert config.mode & 0o007 == 0
