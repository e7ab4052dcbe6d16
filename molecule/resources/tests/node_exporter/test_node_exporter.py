"""node_exporter role: what a scraper and an auditor see on a converged host.

Shared by the node_exporter scenarios (package / binary with TLS + basic auth). Expectations come from the
scenario's inventory variables, with the role's defaults where a scenario does not set one.
"""

from __future__ import annotations

import json
import shlex
import uuid

import pytest

SERVICE = "node_exporter"
DEFAULT_USER = "node-exporter"
DEFAULT_TEXTFILE_DIR = "/var/lib/node_exporter/textfile"


@pytest.fixture(scope="module")
def listen_address(config, default_ipv4):
    return config.get("node_exporter_web_listen_address") or f"{default_ipv4}:9100"


@pytest.fixture(scope="module")
def main_pid(host):
    pid = int(host.check_output(f"systemctl show -p MainPID --value {SERVICE}"))
    assert pid > 0, journal(host)
    return pid


def journal(host):
    """The unit's recent journal, printed with a failed service assertion."""
    return host.run(f"journalctl -u {SERVICE} -n 40 --no-pager").stdout


def scrape(host, config, listen_address, with_credentials=True, scheme=None):
    """GET /metrics from inside the host; returns (http status, body)."""
    tls = config.get("node_exporter_tls_enabled", False)
    scheme = scheme or ("https" if tls else "http")
    path = config.get("node_exporter_web_telemetry_path", "/metrics")
    args = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"]
    if scheme == "https":
        args.append("-k")
    users = config.get("node_exporter_basic_auth_users") or {}
    if with_credentials and users:
        user, password = sorted(users.items())[0]
        args += ["-u", f"{user}:{password}"]
    args.append(f"{scheme}://{listen_address}{path}")
    body, _, status = host.run(shlex.join(args)).stdout.rpartition("\n")
    return status.strip(), body


def test_service_is_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled, journal(host)
    assert service.is_running, journal(host)


def test_runs_as_dedicated_non_root_user(host, config, main_pid):
    user = config.get("node_exporter_system_user", DEFAULT_USER)
    owner = host.check_output(f"ps -o user= -p {main_pid}").strip()
    assert owner == user
    assert host.user(user).uid != 0
    assert host.user(user).shell == "/usr/sbin/nologin"


def test_listens_only_on_configured_address(host, listen_address):
    # ss cannot name another user's process without CAP_SYS_PTRACE, so look at every socket on the port.
    port = listen_address.rsplit(":", 1)[1]
    sockets = host.check_output("ss -Hltn").splitlines()
    on_port = {line.split()[3] for line in sockets if line.split()[3].rsplit(":", 1)[1] == port}
    assert on_port == {listen_address}, sockets


def test_metrics_answer_with_build_info(host, config, listen_address):
    status, body = scrape(host, config, listen_address)
    assert status == "200", journal(host)
    assert "node_exporter_build_info{" in body


def test_configured_collectors_are_active(host, config, listen_address):
    _, body = scrape(host, config, listen_address)
    for collector in config.get("node_exporter_enabled_collectors", ["systemd"]):
        assert f'node_scrape_collector_success{{collector="{collector}"}} 1' in body
    for collector in config.get("node_exporter_disabled_collectors", []):
        assert f'collector="{collector}"' not in body


def test_textfile_metric_appears(host, config, listen_address):
    directory = config.get("node_exporter_textfile_dir", DEFAULT_TEXTFILE_DIR)
    marker = uuid.uuid4().hex
    prom = f"{directory}/molecule_probe.prom"
    host.run_expect([0], f"printf 'molecule_probe{{marker=\"{marker}\"}} 1\\n' > {prom}")
    try:
        _, body = scrape(host, config, listen_address)
    finally:
        host.run(f"rm -f {prom}")
    assert f'molecule_probe{{marker="{marker}"}} 1' in body


def test_unit_declares_sandbox(host):
    wanted = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    shown = host.check_output(f"systemctl show {SERVICE} " + " ".join(f"-p {k}" for k in wanted))
    actual = dict(line.split("=", 1) for line in shown.splitlines())
    assert actual == wanted


def test_sandbox_is_in_force_on_the_process(host, main_pid):
    status = dict(line.split(":", 1) for line in host.file(f"/proc/{main_pid}/status").content_string.splitlines())
    assert status["NoNewPrivs"].strip() == "1"
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapBnd"].strip() == "0000000000000000"
    assert status["Seccomp"].strip() == "2"


def test_web_config_is_not_world_readable(host, config):
    web = host.file(f"{config.get('node_exporter_config_dir', '/etc/node_exporter')}/web.yml")
    if not (config.get("node_exporter_tls_enabled") or config.get("node_exporter_basic_auth_users")):
        assert not web.exists
        return
    assert web.user == "root"
    assert web.mode & 0o007 == 0


def test_no_plaintext_password_on_host(host, config):
    users = config.get("node_exporter_basic_auth_users") or {}
    if not users:
        pytest.skip("scenario has no basic auth users")
    for password in users.values():
        found = host.run(f"grep -rlsF -- {shlex.quote(password)} /etc /var/lib /run /root")
        assert found.stdout == "", f"plaintext password found in: {found.stdout}"
    web = host.file(f"{config.get('node_exporter_config_dir', '/etc/node_exporter')}/web.yml").content_string
    assert web.count("$2b$") == len(users)


def test_request_without_credentials_is_refused(host, config, listen_address):
    if not config.get("node_exporter_basic_auth_users"):
        pytest.skip("scenario has no basic auth users")
    status, _ = scrape(host, config, listen_address, with_credentials=False)
    assert status == "401"


def test_plain_http_is_refused_when_tls_is_on(host, config, listen_address):
    if not config.get("node_exporter_tls_enabled"):
        pytest.skip("scenario has no TLS")
    status, body = scrape(host, config, listen_address, scheme="http")
    assert status != "200"
    assert "node_exporter_build_info" not in body


def test_tls_key_stays_readable_by_root_only(host, config):
    if not config.get("node_exporter_tls_enabled"):
        pytest.skip("scenario has no TLS")
    key = host.file(config["node_exporter_tls_key_file"])
    assert key.user == "root"
    assert key.mode & 0o077 == 0


def test_distribution_unit_is_masked(host, config):
    if config.get("node_exporter_install_method", "package") != "package":
        pytest.skip("binary install")
    state = host.run("systemctl is-enabled prometheus-node-exporter.service").stdout.strip()
    assert state == "masked"
    assert not host.service("prometheus-node-exporter").is_running


def test_binary_is_the_verified_release(host, config):
    if config.get("node_exporter_install_method", "package") != "binary":
        pytest.skip("package install")
    binary = host.file(f"{config.get('node_exporter_binary_install_dir', '/usr/local/bin')}/node_exporter")
    assert binary.user == "root"
    assert binary.mode == 0o755
    facts = json.loads(host.check_output("cat /etc/molecule-artifact.json"))
    assert binary.sha256sum == facts["binary_sha256"]
