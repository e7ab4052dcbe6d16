"""playbooks/gpu_node.yml: both roles applied together on one host, each in its expected end state.

The driver comes from Debian's real packages; the NVIDIA Container Toolkit is the lab's STAND-IN package set.
"""

from __future__ import annotations


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
