"""dcgm_exporter: the DCGM host engine and dcgm-exporter as a scraper and an operator see them.

In the lab and in Molecule, DCGM is the STAND-IN package (lab/standins/dcgm.json) whose nv-hostengine and dcgmi
the gpu_simulator role diverts to simulated ones (8 GPUs), and the exporter is the simulator's stand-in; on a
real GPU node the same tests run against NVIDIA's binaries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import time
from pathlib import Path

import pytest

SERVICE = "dcgm-exporter"
HOSTENGINE = "nvidia-dcgm"
DEFAULT_USER = "dcgm-exporter"
DEFAULT_CONFIG_DIR = "/etc/dcgm-exporter"
EXPECTED_GPUS = 8
# Counters upstream leaves off and the role turns on (a sample of each family).
RELIABILITY_COUNTERS = [
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_RETIRED_DBE",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
]
SAMPLE = re.compile(r"^(?P<name>[A-Z_0-9]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


def journal(host, unit=SERVICE):
    """The unit's recent journal, printed with a failed service assertion."""
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


def main_pid(host, unit):
    pid = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
    assert pid > 0, journal(host, unit)
    return pid


def proc_status(host, pid):
    text = host.file(f"/proc/{pid}/status").content_string
    return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines())}


@pytest.fixture(scope="module")
def listen_address(config, default_ipv4):
    return config.get("dcgm_exporter_listen_address") or f"{default_ipv4}:9400"


@pytest.fixture(scope="module")
def hostengine_address(config):
    return config.get("dcgm_exporter_hostengine_address", "127.0.0.1:5555")


@pytest.fixture(scope="module")
def interval_s(config):
    return int(config.get("dcgm_exporter_collect_interval_ms", 30000)) / 1000


def curl_args(config, listen_address, with_credentials=True, scheme=None, status_line=True):
    scheme = scheme or ("https" if config.get("dcgm_exporter_tls_enabled") else "http")
    args = ["curl", "-sS", "--max-time", "10"] + (["-w", "\n%{http_code}"] if status_line else [])
    if scheme == "https":
        args.append("-k")
    users = config.get("dcgm_exporter_basic_auth_users") or {}
    if with_credentials and users:
        user, password = sorted(users.items())[0]
        args += ["-u", f"{user}:{password}"]
    return [*args, f"{scheme}://{listen_address}/metrics"]


def scrape(host, config, listen_address, **kwargs):
    """GET /metrics from inside the host; returns (http status, body)."""
    body, _, status = host.run(shlex.join(curl_args(config, listen_address, **kwargs))).stdout.rpartition("\n")
    return status.strip(), body


def samples(body, name):
    """{labels-dict-as-tuple: value} of one metric."""
    found = []
    for line in body.splitlines():
        match = SAMPLE.match(line.strip())
        if match and match["name"] == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            found.append((labels, match["value"]))
    return found


@pytest.fixture(scope="module")
def metrics(host, config, listen_address):
    status, body = scrape(host, config, listen_address)
    assert status == "200", journal(host)
    return body


def test_hostengine_is_enabled_and_running(host):
    service = host.service(HOSTENGINE)
    assert service.is_enabled, journal(host, HOSTENGINE)
    assert service.is_running, journal(host, HOSTENGINE)


def test_hostengine_runs_with_the_real_command_line(host, hostengine_address):
    bind, port = hostengine_address.rsplit(":", 1)
    command = host.check_output(f"tr '\\0' ' ' < /proc/{main_pid(host, HOSTENGINE)}/cmdline")
    assert "nv-hostengine" in command
    assert "-n --service-account nvidia-dcgm" in command
    assert f"-b {bind} -p {port}" in command


def test_hostengine_listens_only_on_configured_address(host, hostengine_address):
    port = hostengine_address.rsplit(":", 1)[1]
    sockets = host.check_output("ss -Hltn").splitlines()
    on_port = {line.split()[3] for line in sockets if line.split()[3].rsplit(":", 1)[1] == port}
    assert on_port == {hostengine_address}, sockets


def test_hostengine_sandbox_is_in_force(host):
    shown = host.check_output(f"systemctl show {HOSTENGINE} -p ProtectSystem -p ProtectHome -p PrivateTmp")
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "ProtectSystem": "full",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }
    # ProtectSystem=full: /usr and /etc are read-only mounts in the running host engine's namespace.
    mounts = host.file(f"/proc/{main_pid(host, HOSTENGINE)}/mountinfo").content_string.splitlines()
    read_only = {line.split()[4] for line in mounts if "ro" in line.split()[5].split(",")}
    assert {"/usr", "/etc"} <= read_only


def test_dcgm_package_is_installed_and_held(host, config):
    package = config.get("dcgm_exporter_dcgm_package", "datacenter-gpu-manager")
    assert host.package(package).is_installed
    assert package in host.check_output("apt-mark showhold").split()


def test_repository_is_trusted_through_the_shared_keyring_only(host):
    sources = host.file("/etc/apt/sources.list.d/gpuops-dcgm.sources").content_string
    assert "Signed-By: /etc/apt/keyrings/gpuops-nvidia-cuda.asc" in sources
    keyring = host.file("/etc/apt/keyrings/gpuops-nvidia-cuda.asc")
    assert keyring.user == "root"
    assert keyring.mode == 0o644


def test_exporter_is_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled, journal(host)
    assert service.is_running, journal(host)


def test_exporter_runs_as_dedicated_non_root_user(host, config):
    user = config.get("dcgm_exporter_system_user", DEFAULT_USER)
    assert host.check_output(f"ps -o user= -p {main_pid(host, SERVICE)}").strip() == user
    assert host.user(user).uid != 0
    assert host.user(user).shell == "/usr/sbin/nologin"


def test_exporter_uses_the_remote_host_engine(host, hostengine_address):
    command = host.check_output(f"tr '\\0' ' ' < /proc/{main_pid(host, SERVICE)}/cmdline")
    assert f"--remote-hostengine-info={hostengine_address}" in command


def test_exporter_listens_only_on_configured_address(host, listen_address):
    # ss cannot name another user's process without CAP_SYS_PTRACE, so look at every socket on the port.
    port = listen_address.rsplit(":", 1)[1]
    sockets = host.check_output("ss -Hltn").splitlines()
    on_port = {line.split()[3] for line in sockets if line.split()[3].rsplit(":", 1)[1] == port}
    assert on_port == {listen_address}, sockets


def test_gpu_temperature_for_every_gpu(metrics):
    # Not counted with nvidia-smi: after the XID 79 injection below, the simulated GPU 0 is off the bus for it.
    temperatures = samples(metrics, "DCGM_FI_DEV_GPU_TEMP")
    assert sorted(labels["gpu"] for labels, _ in temperatures) == [str(i) for i in range(EXPECTED_GPUS)]


def test_series_carry_the_dcgm_exporter_labels(metrics):
    labels, _ = samples(metrics, "DCGM_FI_DEV_GPU_TEMP")[0]
    assert {"gpu", "UUID", "pci_bus_id", "device", "modelName"} <= set(labels)
    assert labels["UUID"].startswith("GPU-")
    assert {name.lower() for name in labels} >= {"hostname"}


@pytest.mark.parametrize("counter", RELIABILITY_COUNTERS)
def test_reliability_counter_is_exported_for_every_gpu(metrics, counter):
    assert len(samples(metrics, counter)) == EXPECTED_GPUS, counter


def test_counters_file_is_honoured(host, config, metrics):
    # Upstream's default has the encoder utilisation; the role's file does not, so it must not be scraped.
    counters = host.file(f"{config.get('dcgm_exporter_config_dir', DEFAULT_CONFIG_DIR)}/counters.csv")
    assert counters.user == "root"
    assert counters.mode == 0o640
    assert "DCGM_FI_DEV_ENC_UTIL" not in counters.content_string
    assert "DCGM_FI_DEV_ENC_UTIL" not in metrics


# Runs on the host: inject with dcgmi, then scrape every 0.1 s until gpu 0's XID gauge shows the value; prints
# the seconds it took (exit 1 when it never shows within 10 s).
INJECT_AND_WAIT = r"""
import re, subprocess, sys, time
curl, value = sys.argv[1:-1], sys.argv[-1]
pattern = re.compile(r'^DCGM_FI_DEV_XID_ERRORS\{[^}]*gpu="0"[^}]*\}\s+(\S+)$', re.M)
start = time.monotonic()
subprocess.run(["dcgmi", "test", "--inject", "--gpuid", "0", "-f", "230", "-v", value], check=True,
               stdout=subprocess.DEVNULL)
while time.monotonic() - start < 10:
    match = pattern.search(subprocess.run(curl, capture_output=True, text=True).stdout)
    if match and float(match.group(1)) == float(value):
        print(f"{time.monotonic() - start:.3f}")
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
"""


def inject_xid_and_wait(host, config, listen_address, value):
    curl = curl_args(config, listen_address, status_line=False)
    return host.run(shlex.join(["python3", "-c", INJECT_AND_WAIT, *curl, str(value)]))


def test_injected_xid_shows_within_one_collection_interval(host, config, listen_address, interval_s, metrics):
    """dcgmi test --inject reaches the exporter through the shared host engine, within one interval."""
    before = [value for labels, value in samples(metrics, "DCGM_FI_DEV_XID_ERRORS") if labels["gpu"] == "0"]
    if before and float(before[0]) == 79:
        # An earlier run left 79 (the gauge keeps the last XID): move it away first, so 79 below is news.
        assert inject_xid_and_wait(host, config, listen_address, 31).rc == 0, journal(host)
    result = inject_xid_and_wait(host, config, listen_address, 79)
    assert result.rc == 0, f"XID 79 never reached the exporter: {result.stderr}\n{journal(host)}"
    elapsed = float(result.stdout.strip())
    # One collection interval, plus the time one scrape over TLS takes.
    assert elapsed <= interval_s + 1.0, f"took {elapsed:.2f} s with a {interval_s} s interval"


def xid_count(body, gpu, xid):
    """DCGM_EXP_XID_ERRORS_COUNT of one GPU and XID (0 without a series: no such XID in the window)."""
    found = [
        float(value)
        for labels, value in samples(body, "DCGM_EXP_XID_ERRORS_COUNT")
        if labels["gpu"] == gpu and labels["xid"] == str(xid)
    ]
    return found[0] if found else 0.0


def test_injected_xid_is_counted_in_the_xid_window(host, config, listen_address, interval_s):
    """The role's counters file turns on DCGM_EXP_XID_ERRORS_COUNT: one more XID 79 counts one more, labelled."""
    _, body = scrape(host, config, listen_address)
    before = xid_count(body, "0", 79)
    assert inject_xid_and_wait(host, config, listen_address, 79).rc == 0, journal(host)
    deadline = time.monotonic() + interval_s + 5
    while time.monotonic() < deadline:
        _, body = scrape(host, config, listen_address)
        if xid_count(body, "0", 79) > before:
            break
        time.sleep(0.2)
    assert xid_count(body, "0", 79) == before + 1, journal(host)
    labels = next(labels for labels, _ in samples(body, "DCGM_EXP_XID_ERRORS_COUNT") if labels["xid"] == "79")
    assert {"gpu", "UUID", "device", "modelName", "window_size_in_ms", "xid"} <= set(labels)
    assert int(labels["window_size_in_ms"]) > 0


def test_request_without_credentials_is_refused(host, config, listen_address):
    if not config.get("dcgm_exporter_basic_auth_users"):
        pytest.skip("scenario has no basic auth users")
    status, body = scrape(host, config, listen_address, with_credentials=False)
    assert status == "401"
    assert "DCGM_FI_" not in body


def test_plain_http_is_refused_when_tls_is_on(host, config, listen_address):
    if not config.get("dcgm_exporter_tls_enabled"):
        pytest.skip("scenario has no TLS")
    status, body = scrape(host, config, listen_address, scheme="http")
    assert status != "200"
    assert "DCGM_FI_" not in body


def test_no_plaintext_password_on_host(host, config):
    users = config.get("dcgm_exporter_basic_auth_users") or {}
    if not users:
        pytest.skip("scenario has no basic auth users")
    for password in users.values():
        found = host.run(f"grep -rlsF -- {shlex.quote(password)} /etc /var/lib /run /root")
        assert found.stdout == "", f"plaintext password found in: {found.stdout}"
    web = host.file(f"{config.get('dcgm_exporter_config_dir', DEFAULT_CONFIG_DIR)}/web.yml")
    assert web.user == "root"
    assert web.mode & 0o007 == 0
    assert web.content_string.count("$2b$") == len(users)


def test_tls_key_stays_readable_by_root_only(host, config):
    if not config.get("dcgm_exporter_tls_enabled"):
        pytest.skip("scenario has no TLS")
    key = host.file(config["dcgm_exporter_tls_key_file"])
    assert key.user == "root"
    assert key.mode & 0o077 == 0


def test_exporter_unit_declares_sandbox(host):
    wanted = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
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
    assert dict(line.split("=", 1) for line in shown.splitlines()) == wanted


def test_exporter_sandbox_is_in_force_on_the_process(host):
    pid = main_pid(host, SERVICE)
    status = proc_status(host, pid)
    assert status["NoNewPrivs"] == "1"
    assert status["CapEff"] == "0000000000000000"
    assert status["CapBnd"] == "0000000000000000"
    assert status["Seccomp"] == "2"
    # PrivateDevices: the exporter's /dev is its own small tmpfs (pseudo-devices only), not the host's /dev with
    # its /dev/nvidia* nodes. (/proc/PID/root is closed to other processes, so compare the mounts.)
    assert dev_mount(host, pid) != dev_mount(host, 1)
    assert "nvidia" not in host.file(f"/proc/{pid}/mountinfo").content_string


def dev_mount(host, pid):
    """The device number of the filesystem mounted on /dev in the process's mount namespace."""
    mounts = host.file(f"/proc/{pid}/mountinfo").content_string.splitlines()
    return next(line.split()[2] for line in mounts if line.split()[4] == "/dev")


def test_binary_is_the_controller_file(host, config):
    if config.get("dcgm_exporter_install_method", "package") != "binary":
        pytest.skip("package install")
    local = config.get("dcgm_exporter_binary_local_file", "")
    local = local.replace(
        "{{ lookup('ansible.builtin.env', 'MOLECULE_PROJECT_DIRECTORY') }}", os.environ["MOLECULE_PROJECT_DIRECTORY"]
    )
    binary = host.file(f"{config.get('dcgm_exporter_binary_install_dir', '/usr/local/bin')}/dcgm-exporter")
    assert binary.user == "root"
    assert binary.mode == 0o755
    assert binary.sha256sum == hashlib.sha256(Path(local).read_bytes()).hexdigest()
