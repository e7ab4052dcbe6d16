"""dcgmi, the host engine and the dcgm-exporter stand-in over one simulated node."""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
from simhelpers import EXPORTER, dcgmi, free_port, samples, scrape, start_exporter


def test_dcgmi_fails_like_the_real_tool_without_a_host_engine(sim):
    result = sim.run("dcgmi", "discovery", "-l", GPUSIM_HOSTENGINE_PORT=str(free_port()))
    assert result.returncode == 236  # DCGM_ST_CONNECTION_NOT_VALID (-20)
    assert result.stdout == (
        "Error: unable to establish a connection to the specified host: localhost\n"
        "Error: Unable to connect to host engine. Host engine connection invalid/disconnected.\n"
    )


def test_discovery_lists_the_gpus_through_the_host_engine(sim):
    port = sim.hostengine()
    result = dcgmi(sim, port, "discovery", "-l")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "8 GPUs found."
    assert "| 0      | Name: NVIDIA H100 80GB HBM3" in result.stdout
    assert "|        | PCI Bus ID: 00000000:18:00.0" in result.stdout
    assert len({len(line) for line in lines[1:-5]}) == 1  # a rectangular table


def test_inject_takes_numeric_field_ids_only(sim):
    port = sim.hostengine()
    result = dcgmi(sim, port, "test", "--inject", "--gpuid", "0", "-f", "DCGM_FI_DEV_XID_ERRORS", "-v", "79")
    assert result.returncode != 0
    assert "Field IDs are numeric" in result.stdout
    assert sim.state()["gpus"][0]["last_xid"] == 0


def test_inject_defaults_to_gpu_1(sim):
    port = sim.hostengine()
    result = dcgmi(sim, port, "test", "--inject", "-f", "150", "-v", "95")
    assert (result.returncode, result.stdout) == (0, "Successfully injected field info.\n")
    temps = sim.run("nvsmi", "--query-gpu=temperature.gpu", "--format=csv,noheader").stdout.split()
    assert temps[1] == "95"
    assert temps[0] != "95"


def test_inject_fatal_xid_turns_health_to_failure_and_reaches_the_exporter(sim):
    port = sim.hostengine()
    assert "Overall Health            | Healthy" in dcgmi(sim, port, "health", "-c").stdout
    exporter = start_exporter(sim, "-c", "100", "-r", f"127.0.0.1:{port}")
    before = samples(scrape(exporter), "DCGM_FI_DEV_XID_ERRORS")
    assert {value for _, value in before} == {"0"}

    result = dcgmi(sim, port, "test", "--inject", "--gpuid", "2", "-f", "230", "-v", "48")
    assert (result.returncode, result.stdout) == (0, "Successfully injected field info.\n")

    text = dcgmi(sim, port, "health", "-c").stdout
    assert "| Overall Health            | Failure" in text
    assert "| -> 2                      | Failure" in text
    report = json.loads(dcgmi(sim, port, "health", "-c", "-j").stdout)
    assert report["body"]["Overall Health"]["value"] == "Failure"
    assert list(report["body"]["GPU"]["children"]) == ["2"]
    assert "NVRM: Xid (PCI:0000:3A:00): 48," in sim.kernel_log.read_text()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        xid = {labels["gpu"]: (value, labels) for labels, value in samples(scrape(exporter), "DCGM_FI_DEV_XID_ERRORS")}
        if xid["2"][0] == "48":
            break
        time.sleep(0.1)
    value, labels = xid["2"]
    assert value == "48"
    assert labels["err_code"] == "48"
    assert xid["0"][0] == "0"


@pytest.mark.parametrize(("xid", "expected"), [(94, "Warning"), (63, "Warning"), (79, "Failure"), (92, "Healthy")])
def test_health_follows_the_design_xid_table(sim, xid, expected):
    port = sim.hostengine()
    dcgmi(sim, port, "test", "--inject", "--gpuid", "0", "-f", "230", "-v", str(xid))
    assert f"| Overall Health            | {expected}" in dcgmi(sim, port, "health", "-c").stdout


def test_gpu_reset_clears_health_but_the_exporter_keeps_the_last_xid(sim):
    port = sim.hostengine()
    exporter = start_exporter(sim, "-c", "100")
    dcgmi(sim, port, "test", "--inject", "--gpuid", "0", "-f", "230", "-v", "95")
    assert sim.run("nvsmi", "-r", "-i", "0").returncode == 0
    assert "| Overall Health            | Healthy" in dcgmi(sim, port, "health", "-c").stdout
    time.sleep(0.3)
    xid = {labels["gpu"]: value for labels, value in samples(scrape(exporter), "DCGM_FI_DEV_XID_ERRORS")}
    assert xid["0"] == "95"


def test_exporter_exports_only_the_listed_counters_with_their_help(sim, tmp_path):
    counters = tmp_path / "counters.csv"
    counters.write_text(
        "# Format: DCGM FIELD, Prometheus metric type, help message\n"
        "DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\n"
        "\n"
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter, Total number of double-bit volatile ECC errors.\n"
        "# DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).\n"
    )
    text = scrape(start_exporter(sim, "-f", str(counters), "-d", "g:0,1"))
    names = set(re.findall(r"^(DCGM_FI_\w+)\{", text, re.M))
    assert names == {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"}
    assert "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n" in text
    assert "# TYPE DCGM_FI_DEV_ECC_DBE_VOL_TOTAL counter\n" in text
    labels, _ = samples(text, "DCGM_FI_DEV_GPU_TEMP")[0]
    assert list(labels) == ["gpu", "UUID", "pci_bus_id", "device", "modelName", "hostname"]
    assert labels["device"] == "nvidia0"
    assert labels["hostname"] == "gpu-node-1"
    assert len(samples(text, "DCGM_FI_DEV_GPU_TEMP")) == 2


def test_exporter_hostname_label_name_and_no_hostname(sim):
    old = scrape(start_exporter(sim, GPUSIM_HOSTNAME_LABEL="Hostname"))
    assert 'Hostname="gpu-node-1"' in old
    assert "hostname=" not in old
    none = scrape(start_exporter(sim, "--no-hostname"))
    assert "ostname=" not in none


def test_exporter_refuses_unknown_flags_and_fields(sim, tmp_path):
    bad_flag = subprocess.run(
        [sys.executable, str(EXPORTER), "--collectorz", "x"], env=sim.env, capture_output=True, text=True, check=False
    )
    assert bad_flag.returncode == 1
    assert "flag provided but not defined: -collectorz" in bad_flag.stderr
    counters = tmp_path / "bad.csv"
    counters.write_text("DCGM_FI_DEV_NOT_A_FIELD, gauge, nope\n")
    bad_field = subprocess.run(
        [sys.executable, str(EXPORTER), "-f", str(counters), "-a", f"127.0.0.1:{free_port()}"],
        env=sim.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_field.returncode == 1
    assert "DCGM_FI_DEV_NOT_A_FIELD" in bad_field.stderr


def _web_config(tmp_path, tls):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    text = f'basic_auth_users:\n  prometheus: "{hashed}"\n'
    if tls:
        key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        text = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n" + text
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "tls",
    [False, pytest.param(True, marks=pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl"))],
    ids=["http", "https"],
)
def test_exporter_basic_auth_rejects_missing_and_wrong_credentials(sim, tmp_path, tls):
    port = start_exporter(sim, "--web-config-file", str(_web_config(tmp_path, tls)))
    scheme = "https" if tls else "http"
    context = ssl._create_unverified_context() if tls else None  # noqa: S323 - self-signed test certificate
    good = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    for headers in ({}, {"Authorization": bad}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(port, headers, scheme, context)
        assert refused.value.code == 401
    assert "DCGM_FI_DEV_GPU_TEMP" in scrape(port, {"Authorization": good}, scheme, context)


def test_exporter_refreshes_every_collect_interval(sim):
    port = start_exporter(sim, "-c", "200")
    sim.edit(gpu0={"overrides": {"temperature": 77}})
    time.sleep(0.6)
    temps = {labels["gpu"]: value for labels, value in samples(scrape(port), "DCGM_FI_DEV_GPU_TEMP")}
    assert temps["0"] == "77"
