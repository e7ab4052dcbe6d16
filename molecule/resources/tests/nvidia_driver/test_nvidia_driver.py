"""nvidia_driver on a GPU-less lab host: packages, pins, holds, kernel module settings, persistenced, facts.

The lab has no GPU and no kernel driver (containers share the host's kernel), so the kernel module package is
skipped and validation is skipped; both must say why. The distribution scenario installs Debian's real
packages; the cuda_repo scenario installs STAND-IN packages (lab/standins/nvidia-driver.json) with NVIDIA's names
and versions from a signed repository served on the instance's loopback.
"""

from __future__ import annotations

import json

import pytest

PREF = "/etc/apt/preferences.d/gpuops-nvidia-driver.pref"


@pytest.fixture(scope="module")
def branch(host, config):
    configured = str(config.get("nvidia_driver_branch", ""))
    if configured.isdigit():
        return configured
    return {"12": "535", "13": "550"}[host.system_info.release.split(".")[0]]


@pytest.fixture(scope="module")
def expected_version(host, config):
    """The exact driver version the scenario pins last ('' when it pins only the branch)."""
    marker = host.file("/etc/molecule-expected-driver-version")
    if marker.exists:
        return marker.content_string.strip()
    return str(config.get("nvidia_driver_version", ""))


@pytest.fixture(scope="module")
def role_facts(host):
    return json.loads(host.file("/etc/molecule-nvidia-driver-facts.json").content_string)


@pytest.fixture(scope="module")
def expected_packages(config):
    if config.get("nvidia_driver_source", "distribution") == "distribution":
        return ["nvidia-smi", "libnvidia-ml1", "nvidia-persistenced", "nvidia-kernel-support", "nvidia-modprobe"]
    return ["nvidia-smi", "libnvidia-ml1", "nvidia-persistenced"]


def test_driver_userspace_is_installed_from_the_branch(host, expected_packages, branch):
    for name in expected_packages:
        package = host.package(name)
        assert package.is_installed, name
    assert host.package("nvidia-smi").version.startswith(f"{branch}.")


def test_driver_packages_are_held(host, expected_packages):
    held = set(host.check_output("apt-mark showhold").split())
    assert set(expected_packages) <= held


def test_installed_version_is_the_pinned_one(host, expected_version):
    if not expected_version:
        pytest.skip("scenario pins the branch only")
    assert host.package("nvidia-smi").version.startswith(f"{expected_version}-")
    assert host.package("libnvidia-ml1").version.startswith(f"{expected_version}-")


def test_lockstep_packages_are_pinned(host, branch, expected_version):
    pref = host.file(PREF)
    assert pref.mode == 0o644
    text = pref.content_string
    pin = f"{expected_version}-*" if expected_version else f"{branch}.*"
    assert f"Pin: version {pin}" in text
    assert "Pin-Priority: 1001" in text
    assert "nvidia-smi" in text.split("Package:")[1].splitlines()[0]


def test_pin_wins_over_the_archive(host, branch):
    policy = host.check_output("apt-cache policy nvidia-smi")
    assert "1001" in policy
    candidate = next(line for line in policy.splitlines() if "Candidate:" in line).split()[-1]
    assert candidate.startswith(f"{branch}.")


def test_kernel_module_package_is_skipped_in_a_container_with_a_reason(host, role_facts):
    assert not host.package("nvidia-open-kernel-dkms").is_installed
    assert not host.package("nvidia-kernel-open-dkms").is_installed
    assert role_facts["kernel_modules"]["installed"] is False
    assert "container" in role_facts["kernel_modules"]["reason"]


def test_nouveau_is_blacklisted(host):
    text = host.file("/etc/modprobe.d/gpuops-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in text
    assert "options nouveau modeset=0" in text


def test_device_files_are_restricted_by_module_options(host, config):
    module = "nvidia-current" if config.get("nvidia_driver_source", "distribution") == "distribution" else "nvidia"
    conf = host.file("/etc/modprobe.d/gpuops-nvidia.conf")
    assert conf.mode == 0o644
    assert (
        f"options {module} NVreg_DeviceFileGID=1500 NVreg_DeviceFileMode=0660 NVreg_DeviceFileUID=0"
        in conf.content_string
    )


def test_persistenced_is_enabled_and_runs_as_its_own_user(host):
    assert host.service("nvidia-persistenced").is_enabled
    exec_start = host.check_output("systemctl show -p ExecStart --value nvidia-persistenced")
    assert "--user nvpd" in exec_start
    user = host.user("nvpd")
    assert user.exists
    assert user.uid != 0
    assert user.shell == "/usr/sbin/nologin"


def test_no_reboot_is_claimed_inside_a_container(role_facts):
    assert role_facts["reboot_required"] is False
    assert "container" in role_facts["reboot_reason"]


def test_validation_is_skipped_with_the_reason(role_facts):
    assert role_facts["validation"]["skipped"] is True
    assert role_facts["validation"]["reason"].startswith("driver not loaded")


def test_nvidia_smi_fails_like_on_any_host_without_a_driver(host):
    result = host.run("nvidia-smi -L")
    assert result.rc != 0
    output = result.stdout + result.stderr
    assert "Failed to initialize NVML" in output or "couldn't communicate with the NVIDIA driver" in output


def test_cuda_repository_is_trusted_through_its_own_keyring_only(host, config):
    if config.get("nvidia_driver_source", "distribution") != "cuda_repo":
        pytest.skip("distribution source")
    sources = host.file("/etc/apt/sources.list.d/gpuops-nvidia-driver.sources").content_string
    assert "Signed-By: /etc/apt/keyrings/gpuops-nvidia-cuda.asc" in sources
    keyring = host.file("/etc/apt/keyrings/gpuops-nvidia-cuda.asc")
    assert keyring.user == "root"
    assert keyring.mode == 0o644
    assert "BEGIN PGP PUBLIC KEY BLOCK" in keyring.content_string


def test_fabric_manager_is_version_locked_and_enabled(host, config, expected_version):
    if not config.get("nvidia_driver_fabricmanager_enabled"):
        pytest.skip("no fabric manager in this scenario")
    branch = config["nvidia_driver_branch"]
    for name in (f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"):
        assert host.package(name).version.startswith(f"{expected_version}-"), name
    assert {f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"} <= set(
        host.check_output("apt-mark showhold").split()
    )
    assert host.service("nvidia-fabricmanager").is_enabled


def test_dcgm_is_held_where_installed(host):
    if not host.package("datacenter-gpu-manager").is_installed:
        pytest.skip("no DCGM on this host")
    assert "datacenter-gpu-manager" in host.check_output("apt-mark showhold").split()
