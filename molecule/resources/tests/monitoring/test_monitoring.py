"""monitoring role: Prometheus and Alertmanager as an operator and a scraper see them on a converged host.

Shared by the monitoring scenarios (Debian's packages over plain HTTP; release binaries with TLS and basic auth on
both web endpoints and on the node_exporter scrape). The host runs node_exporter too and is its own scrape target
(group molecule, by its container address). Expectations come from the scenario's inventory variables, with the
role's defaults where a scenario does not set one.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass

import pytest
import yaml

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
PORTS = {PROMETHEUS: 9090, ALERTMANAGER: 9093}
DEADLINE_S = 90
ARTIFACT = "/etc/molecule-artifact.json"


@dataclass(frozen=True)
class Web:
    """How a client reaches Prometheus' and Alertmanager's web endpoints in this scenario."""

    address: str
    tls: bool
    ca_file: str
    login: tuple[str, str] | None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, unit: str, path: str, scheme: str | None = None) -> str:
        return f"{scheme or self.scheme}://{self.address}:{PORTS[unit]}{path}"

    def curl(self, url: str, with_credentials: bool = True, with_ca: bool = True, options: tuple = ()) -> str:
        """A curl command line for url, with the scenario's CA and an operator's login unless told otherwise."""
        args = ["curl", "-sS", "--max-time", "10", *options]
        if self.tls and with_ca:
            args += ["--cacert", self.ca_file]
        if self.login and with_credentials:
            args += ["-u", ":".join(self.login)]
        return shlex.join([*args, url])


@pytest.fixture(scope="module")
def address(default_ipv4):
    """Where the role listens by default (config and default_ipv4 come from ../conftest.py)."""
    return default_ipv4


@pytest.fixture(scope="module")
def web(config, address):
    """An operator's view: the scenario's CA and its first operator user (sorted by name), if any."""
    users = config.get("monitoring_web_basic_auth_users") or {}
    return Web(
        address=address,
        tls=bool(config.get("monitoring_web_tls_enabled", False)),
        ca_file=config.get("monitoring_web_tls_ca_file", ""),
        login=sorted(users.items())[0] if users else None,
    )


@pytest.fixture(scope="module")
def artifact(host, config):
    """Versions and binary checksums of the release tarballs the scenario's prepare built."""
    if config.get("monitoring_install_method", "package") != "binary":
        pytest.skip("package install")
    return json.loads(host.check_output(f"cat {ARTIFACT}"))


def journal(host, unit):
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


def http_status(host, web, url, **kwargs):
    """GET url and return (HTTP status, body); status '000' when no HTTP answer came."""
    result = host.run(web.curl(url, options=("-w", "\n%{http_code}"), **kwargs))
    body, _, status = result.stdout.rpartition("\n")
    return status.strip(), body


def get_json(host, web, url):
    result = host.run(web.curl(url, options=("-f",)))
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def poll(host, web, url, accept):
    """GET url until accept(json) is true or DEADLINE_S passes; returns the last answer."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        answer = get_json(host, web, url)
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


def test_rules_api_lists_every_installed_rule_group(host, web):
    wanted = set()
    for path in host.check_output("ls /etc/prometheus/rules").split():
        rules = yaml.safe_load(host.file(f"/etc/prometheus/rules/{path}").content_string)
        wanted |= {group["name"] for group in rules["groups"]}
    assert "molecule-always-firing" in wanted
    assert any(name.startswith("gpuops-gpu") for name in wanted)
    loaded = {g["name"] for g in get_json(host, web, web.url(PROMETHEUS, "/api/v1/rules"))["data"]["groups"]}
    assert loaded == wanted


def test_targets_are_generated_from_the_scrape_groups(host, config, web, address):
    def node_up(answer):
        return any(
            t["labels"]["job"] == "node_exporter" and t["health"] == "up" for t in answer["data"]["activeTargets"]
        )

    targets = poll(host, web, web.url(PROMETHEUS, "/api/v1/targets"), node_up)["data"]["activeTargets"]
    by_job = {t["labels"]["job"]: t for t in targets}
    assert set(by_job) == {"prometheus", "node_exporter", "dcgm_exporter"}, targets
    # The node_exporter job scrapes over HTTPS with basic auth when the target's own node_exporter_* say so.
    node_scheme = "https" if config.get("node_exporter_tls_enabled") else "http"
    assert by_job["node_exporter"]["scrapeUrl"] == f"{node_scheme}://{address}:9100/metrics"
    assert by_job["node_exporter"]["health"] == "up", by_job["node_exporter"]
    assert by_job["node_exporter"]["labels"]["host"] == config["inventory_hostname"]
    # Nothing runs dcgm-exporter here: the job exists with the right URL; its health is not this role's concern.
    assert by_job["dcgm_exporter"]["scrapeUrl"] == f"http://{address}:9400/metrics"
    # Prometheus scrapes itself the way its users reach it (TLS, its client user).
    assert by_job["prometheus"]["scrapeUrl"] == web.url(PROMETHEUS, "/metrics")
    assert by_job["prometheus"]["health"] == "up", by_job["prometheus"]


def test_prometheus_reaches_alertmanager(host, web):
    answer = get_json(host, web, web.url(PROMETHEUS, "/api/v1/alertmanagers"))
    urls = [a["url"] for a in answer["data"]["activeAlertmanagers"]]
    assert urls == [web.url(ALERTMANAGER, "/api/v2/alerts")], answer


def test_firing_alert_reaches_alertmanager(host, web):
    def firing(answer):
        return any(a["labels"]["alertname"] == "MoleculeAlwaysFiring" for a in answer)

    alerts = poll(host, web, web.url(ALERTMANAGER, "/api/v2/alerts"), firing)
    assert firing(alerts), f"not in Alertmanager within {DEADLINE_S}s: {alerts}"


def test_amtool_queries_alertmanager_like_an_operator(host, web):
    """amtool (on PATH: the package's, or the release's link) with the web settings as an HTTP client config."""
    http_config = {}
    if web.tls:
        http_config["tls_config"] = {"ca_file": web.ca_file}
    if web.login:
        http_config["basic_auth"] = {"username": web.login[0], "password": web.login[1]}
    path = "/root/molecule-amtool-http.yml"
    host.run_expect([0], f"umask 077; printf '%s' {shlex.quote(json.dumps(http_config))} > {path}")
    try:
        result = host.run(
            shlex.join(
                [
                    "amtool",
                    f"--alertmanager.url={web.url(ALERTMANAGER, '/')}",
                    f"--http.config.file={path}",
                    "alert",
                    "query",
                    "-o",
                    "json",
                    "alertname=MoleculeAlwaysFiring",
                ]
            )
        )
    finally:
        host.run(f"rm -f {path}")
    assert result.rc == 0, result.stderr
    assert [a["labels"]["alertname"] for a in json.loads(result.stdout)] == ["MoleculeAlwaysFiring"]


def test_default_receiver_is_a_blackhole(host, web):
    status = get_json(host, web, web.url(ALERTMANAGER, "/api/v2/status"))
    config = yaml.safe_load(status["config"]["original"])
    assert config["route"]["receiver"] == "default"
    assert config["receivers"] == [{"name": "default"}]


def test_reload_keeps_the_process_and_succeeds(host, web):
    for unit, metric in [
        (PROMETHEUS, "prometheus_config_last_reload_successful"),
        (ALERTMANAGER, "alertmanager_config_last_reload_successful"),
    ]:
        before = main_pid(host, unit)
        host.run_expect([0], f"systemctl reload {unit}")
        assert main_pid(host, unit) == before
        metrics = host.check_output(web.curl(web.url(unit, "/metrics"), options=("-f",)))
        assert f"{metric} 1" in metrics.splitlines(), journal(host, unit)


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_api_refuses_requests_without_credentials(host, web, unit):
    if not web.login:
        pytest.skip("scenario has no basic auth users")
    for path in ["/api/v2/status", "/metrics"]:
        status, _ = http_status(host, web, web.url(unit, path), with_credentials=False)
        assert status == "401", path


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_api_refuses_plain_http(host, web, unit):
    if not web.tls:
        pytest.skip("scenario has no TLS")
    status, body = http_status(host, web, web.url(unit, "/api/v2/status", scheme="http"))
    # Go's TLS server answers a plain-HTTP request with 400 and nothing of the API.
    assert status == "400", body
    assert "Client sent an HTTP request to an HTTPS server" in body


@pytest.mark.parametrize("unit", [PROMETHEUS, ALERTMANAGER])
def test_certificate_is_verified_against_the_ca(host, web, unit):
    if not web.tls:
        pytest.skip("scenario has no TLS")
    without_ca = host.run(web.curl(web.url(unit, "/-/ready"), with_ca=False))
    assert without_ca.rc == 60, without_ca.stderr  # curl: peer certificate cannot be authenticated
    with_ca = host.run(web.curl(web.url(unit, "/-/ready"), options=("-f",)))
    assert with_ca.rc == 0, with_ca.stderr


def test_web_configs_hold_only_bcrypt_hashes(host, config):
    users = config.get("monitoring_web_basic_auth_users") or {}
    if not users:
        pytest.skip("scenario has no basic auth users")
    client = config.get("monitoring_web_client_user", "prometheus")
    for name in ["web.yml", "alertmanager-web.yml"]:
        web_config = yaml.safe_load(host.file(f"/etc/prometheus/{name}").content_string)
        hashes = web_config["basic_auth_users"]
        assert set(hashes) == set(users) | {client}
        assert all(value.startswith("$2b$") for value in hashes.values())
    # Operators' passwords never reach the host; Prometheus' own is only in prometheus.yml, which must send it.
    for password in users.values():
        found = host.run(f"grep -rlsF -- {shlex.quote(password)} /etc /var/lib /run /root /opt")
        assert found.stdout == "", f"plaintext password found in: {found.stdout}"
    found = host.run(f"grep -rlsF -- {shlex.quote(config['monitoring_web_client_password'])} /etc /var/lib /run /opt")
    assert found.stdout.split() == ["/etc/prometheus/prometheus.yml"]


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
    for name in ["prometheus.yml", "alertmanager.yml", "web.yml", "alertmanager-web.yml"]:
        config = host.file(f"/etc/prometheus/{name}")
        if name.endswith("web.yml") and not config.exists:
            continue
        assert config.user == "root"
        assert config.mode & 0o007 == 0


RELEASES = [
    (PROMETHEUS, "prometheus", ["prometheus", "promtool"]),
    (ALERTMANAGER, "alertmanager", ["alertmanager", "amtool"]),
]


@pytest.mark.parametrize(("unit", "release", "binaries"), RELEASES)
def test_release_binaries_run_from_the_versioned_dir(host, config, artifact, unit, release, binaries):
    install_dir = config.get("monitoring_binary_install_dir", "/opt/monitoring")
    directory = f"{install_dir}/{release}-{artifact[release + '_version']}"
    links = config.get("monitoring_binary_link_dir", "/usr/local/bin")
    # /proc/PID/exe of another user's process needs CAP_SYS_PTRACE; the command line says what was executed.
    argv0 = host.file(f"/proc/{main_pid(host, unit)}/cmdline").content_string.split("\0")[0]
    assert argv0 == f"{directory}/{binaries[0]}"
    assert not host.file(argv0).is_symlink
    for name in binaries:
        binary = host.file(f"{directory}/{name}")
        assert (binary.user, binary.group, binary.mode) == ("root", "root", 0o755)
        assert binary.sha256sum == artifact["sha256"][name]
        assert host.file(f"{links}/{name}").linked_to == f"{directory}/{name}"


@pytest.mark.parametrize("package", ["prometheus", "prometheus-alertmanager"])
@pytest.mark.usefixtures("artifact")  # skips package installs
def test_release_install_leaves_debians_packages_out(host, package):
    assert not host.package(package).is_installed
