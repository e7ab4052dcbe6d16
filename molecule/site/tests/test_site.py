"""playbooks/site.yml: the whole GPU-node stack on one host, each part in its expected end state.

The driver comes from Debian's real packages; the NVIDIA Container Toolkit and DCGM are the lab's STAND-IN
packages; GPUs, nv-hostengine and dcgm-exporter are the lab simulator's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from ssh_client import ssh_with_lab_key


def test_driver_userspace_is_installed_and_held(host):
    assert host.package("nvidia-smi").is_installed
    assert "nvidia-smi" in host.check_output("apt-mark showhold").split()


def test_toolkit_is_installed_and_held(host):
    assert host.package("nvidia-container-toolkit").is_installed
    assert "nvidia-container-toolkit" in host.check_output("apt-mark showhold").split()


def test_containerd_knows_the_nvidia_runtime(host):
    dump = host.check_output("containerd config dump")
    assert "nvidia" in dump
    assert "SystemdCgroup = true" in dump


def test_cdi_spec_is_generated(host):
    spec = host.file("/etc/cdi/nvidia.yaml")
    assert spec.exists
    assert spec.mode == 0o644
    assert "cdiVersion" in spec.content_string


def test_the_simulated_node_has_eight_gpus(host):
    gpus = host.check_output("nvidia-smi -L").splitlines()
    assert len(gpus) == 8, gpus
    assert all("NVIDIA H100 80GB HBM3" in line for line in gpus)


@pytest.mark.parametrize("unit", ["containerd", "node_exporter", "nvidia-dcgm", "dcgm-exporter", "nvidia-persistenced"])
def test_every_service_of_the_stack_runs(host, unit):
    assert host.service(unit).is_running, host.run(f"journalctl -u {unit} -n 30 --no-pager").stdout


def _address(host) -> str:
    return host.ansible.get_variables()["ansible_host"]


@pytest.mark.parametrize(("port", "metric"), [(9100, "node_load1"), (9400, "DCGM_FI_DEV_GPU_TEMP")])
def test_exporters_answer_on_the_node_and_not_from_elsewhere(host, port, metric):
    address = _address(host)
    local = host.run(f"curl -fsS --max-time 5 http://{address}:{port}/metrics")
    assert local.rc == 0, local.stderr
    assert metric in local.stdout
    # The controller is an admin source for SSH, not a Prometheus source: the firewall drops it.
    remote = subprocess.run(
        ["curl", "-sS", "--max-time", "3", f"http://{address}:{port}/metrics"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert remote.returncode != 0, f"port {port} answered the controller"


def test_hardening_is_in_force_and_the_operator_still_gets_in(host):
    assert "net.ipv4.ip_forward = 1" in host.file("/etc/sysctl.d/60-gpuops-hardening.conf").content_string
    assert "pam_faillock.so" in host.file("/etc/pam.d/common-auth").content_string
    assert "policy drop" in host.check_output("nft list chain inet gpuops_filter input")
    result = ssh_with_lab_key(_address(host), "operator")
    assert result.returncode == 0, result.stderr


def test_no_unit_failed(host):
    # Units that need a capability the container lacks (acct, auditd) are skipped by condition, not failed.
    failed = host.check_output("systemctl list-units --failed --plain --no-legend")
    assert failed == "", failed
