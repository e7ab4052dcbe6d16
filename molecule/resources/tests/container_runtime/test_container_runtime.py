"""container_runtime role: what an engine, apt and an auditor see on a converged host.

Shared by the container_runtime scenarios (containerd / Docker). Expectations come from the scenario's inventory
variables (the shared `config` fixture, ../conftest.py), with the role's defaults where a scenario does not set
one. Files that prepare seeded before the role ran are kept under /root/molecule-seed/, so the tests can check that
the role kept what it does not own. The NVIDIA Container Toolkit here is the lab's STAND-IN package set
(lab/standins/nvidia-container-toolkit.json): same names, versions and nvidia-ctk command lines, no GPU behind.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid

import pytest
import yaml

TOOLKIT_PACKAGES = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
]
CRI = "io.containerd.grpc.v1.cri"
DROPIN = "/etc/containerd/conf.d/99-nvidia.toml"
IMPORT = "/etc/containerd/conf.d/*.toml"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
CDI_INPUTS = "/var/lib/gpuops-fleet/container_runtime/cdi-inputs.json"
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
PIN = "/etc/apt/preferences.d/nvidia-container-toolkit.pref"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
SEED = "/root/molecule-seed"
IMAGE_ROOTFS = "/root/molecule-images/busybox.tar"


@pytest.fixture(scope="module")
def engine(config):
    return config.get("container_runtime_engine", "containerd")


@pytest.fixture(scope="module")
def strategy(config):
    return config.get("container_runtime_toolkit_device_list_strategy", "volume-mounts")


def read_toml(host, command):
    """Parse TOML on the host (its Python has tomllib) and return it as a dict."""
    script = "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))"
    return json.loads(host.check_output(f"{command} | python3 -c {shlex.quote(script)}"))


def journal(host, unit):
    """The unit's recent journal, printed with a failed service assertion."""
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


def flatten(table, prefix=()):
    """Leaves of a nested dict as {(key, path...): value}."""
    leaves = {}
    for key, value in table.items():
        if isinstance(value, dict):
            leaves.update(flatten(value, (*prefix, key)))
        else:
            leaves[(*prefix, key)] = value
    return leaves


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


# --- NVIDIA Container Toolkit: repository, packages, pin, hold --------------------------------------------------


@pytest.mark.parametrize("package", TOOLKIT_PACKAGES)
def test_toolkit_package_is_installed_at_the_pinned_version(host, config, package):
    pinned = config.get("container_runtime_toolkit_version", "1.17.4-1")
    assert host.package(package).is_installed
    assert host.package(package).version == pinned


@pytest.mark.parametrize("package", TOOLKIT_PACKAGES)
def test_toolkit_package_is_held(host, package):
    selection = host.check_output(f"dpkg --get-selections {package}").split()
    assert selection == [package, "hold"]


def test_apt_pins_the_toolkit_version(host, config):
    pin = host.file(PIN)
    assert pin.user == "root"
    assert pin.mode == 0o644
    assert f"Pin: version {config.get('container_runtime_toolkit_version', '1.17.4-1')}\n" in pin.content_string
    assert f"Package: {' '.join(TOOLKIT_PACKAGES)}\n" in pin.content_string
    assert "Pin-Priority: 1001\n" in pin.content_string


def test_repository_is_signed_by_its_own_keyring(host):
    sources = host.file(SOURCES).content_string
    assert f"Signed-By: {KEYRING}\n" in sources
    keyring = host.file(KEYRING)
    assert keyring.user == "root"
    assert keyring.mode == 0o644
    assert keyring.content_string.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


def test_keyring_holds_exactly_one_key(host):
    listing = host.check_output(
        f'home=$(mktemp -d) && gpg --batch --homedir "$home" --show-keys --with-colons {KEYRING}; rm -rf "$home"'
    )
    assert len([line for line in listing.splitlines() if line.startswith("pub:")]) == 1


def test_apt_trusts_the_toolkit_repository(host, config):
    # The installed version is pinned (1001) and comes from the signed repository, not only from dpkg's status.
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    version = re.escape(config.get("container_runtime_toolkit_version", "1.17.4-1"))
    assert re.search(rf"\*\*\* {version} 1001\n\s+500 https?://", policy), policy


def test_no_key_is_trusted_system_wide(host):
    # The toolkit key signs the toolkit repository only: not in trusted.gpg(.d).
    for path in ("/etc/apt/trusted.gpg.d/nvidia-container-toolkit.asc", "/etc/apt/trusted.gpg"):
        assert not host.file(path).exists


# --- Toolkit hardening ------------------------------------------------------------------------------------------


def test_toolkit_refuses_device_requests_by_environment_when_unprivileged(host, config):
    toolkit = read_toml(host, f"cat {TOOLKIT_CONFIG}")
    expected = config.get("container_runtime_toolkit_accept_envvar_when_unprivileged", False)
    assert toolkit["accept-nvidia-visible-devices-envvar-when-unprivileged"] is expected


def test_toolkit_follows_the_device_list_strategy(host, strategy):
    toolkit = read_toml(host, f"cat {TOOLKIT_CONFIG}")
    assert toolkit["accept-nvidia-visible-devices-as-volume-mounts"] is (strategy == "volume-mounts")
    expected_mode = "cdi" if strategy in ("cdi-annotations", "cdi-cri") else "auto"
    assert toolkit["nvidia-container-runtime"]["mode"] == expected_mode


def test_toolkit_keeps_its_packaged_settings(host):
    toolkit = read_toml(host, f"cat {TOOLKIT_CONFIG}")
    assert toolkit["nvidia-container-runtime"]["modes"]["cdi"]["default-kind"] == "nvidia.com/gpu"
    assert toolkit["nvidia-container-cli"]["ldconfig"]


def test_nvidia_runtime_hands_over_to_runc(host):
    result = host.run("/usr/bin/nvidia-container-runtime --version")
    assert result.rc == 0
    assert "runc version" in result.stdout


# --- CDI ----------------------------------------------------------------------------------------------------------


def test_cdi_spec_is_readable_by_engines_and_writable_by_root_only(host):
    spec = host.file(CDI_SPEC)
    assert spec.is_file
    assert spec.user == "root"
    assert spec.group == "root"
    assert spec.mode == 0o644


def test_cdi_spec_is_a_valid_nvidia_specification(host):
    spec = yaml.safe_load(host.file(CDI_SPEC).content_string)
    assert spec["cdiVersion"] == "0.5.0"
    assert spec["kind"] == "nvidia.com/gpu"
    names = [device["name"] for device in spec["devices"]]
    assert "all" in names
    assert all(device.get("containerEdits") for device in spec["devices"])


def test_cdi_spec_matches_the_installed_driver(host):
    # The driver's libraries carry the driver version in their names; libnvidia-container is the toolkit's own.
    libraries = sorted(
        path
        for path in host.check_output(f"find {LIBDIR} -maxdepth 1 -name 'libnvidia-*.so.*'").split()
        if re.search(r"\.so\.\d+\.\d", path) and "/libnvidia-container" not in path
    )
    spec = yaml.safe_load(host.file(CDI_SPEC).content_string)
    mounted = sorted(mount["hostPath"] for mount in spec.get("containerEdits", {}).get("mounts", []))
    assert mounted == libraries


def test_cdi_inputs_are_recorded(host):
    inputs = json.loads(host.file(CDI_INPUTS).content_string)
    assert inputs["toolkit"].startswith("NVIDIA Container Toolkit CLI version ")
    nvml = sorted(host.check_output(f"find {LIBDIR} -maxdepth 1 -name 'libnvidia-ml.so.*.*'").split())
    assert inputs["driver_libraries"] == nvml
    assert "/etc/cdi/" not in CDI_INPUTS


# --- containerd ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd_dump(host, engine):
    if engine != "containerd":
        pytest.skip("Docker scenario")
    return read_toml(host, "containerd config dump")


def test_engine_is_enabled_and_running(host, engine):
    service = host.service(engine)
    assert service.is_enabled, journal(host, engine)
    assert service.is_running, journal(host, engine)


def test_containerd_runs_the_nvidia_runtime_with_systemd_cgroups(containerd_dump):
    runtimes = containerd_dump["plugins"][CRI]["containerd"]["runtimes"]
    assert runtimes["nvidia"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert runtimes["nvidia"]["options"]["SystemdCgroup"] is True


def test_containerd_runs_runc_with_systemd_cgroups(containerd_dump):
    runc = containerd_dump["plugins"][CRI]["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is True


def test_containerd_default_runtime(containerd_dump, config):
    expected = "nvidia" if config.get("container_runtime_nvidia_default", False) else "runc"
    assert containerd_dump["plugins"][CRI]["containerd"]["default_runtime_name"] == expected


def test_containerd_dropin_enables_cdi(host, engine, config):
    if engine != "containerd":
        pytest.skip("Docker scenario")
    dropin = read_toml(host, f"cat {DROPIN}")["plugins"][CRI]
    if not config.get("container_runtime_cdi_enabled", True):
        pytest.skip("CDI off in this scenario")
    assert dropin["enable_cdi"] is True
    assert "/etc/cdi" in dropin["cdi_spec_dirs"]


def test_containerd_runs_with_cdi_enabled(host, containerd_dump, config):
    if not config.get("container_runtime_cdi_enabled", True):
        pytest.skip("CDI off in this scenario")
    version = host.check_output("containerd --version").split()[2]
    if version_tuple(version) < (1, 7):
        pytest.skip(f"containerd {version} has no CDI support (added in 1.7); Debian 12 ships 1.6")
    assert containerd_dump["plugins"][CRI]["enable_cdi"] is True
    assert "/etc/cdi" in containerd_dump["plugins"][CRI]["cdi_spec_dirs"]


def test_containerd_imports_the_dropin_directory(host, engine):
    if engine != "containerd":
        pytest.skip("Docker scenario")
    main = read_toml(host, "cat /etc/containerd/config.toml")
    assert main["version"] == 2
    assert IMPORT in main["imports"]
    dropin = host.file(DROPIN)
    assert dropin.user == "root"
    assert dropin.mode == 0o644


def test_config_toml_changed_only_by_the_import_line(host, engine):
    if engine != "containerd":
        pytest.skip("Docker scenario")
    seed = host.file(f"{SEED}/config.toml")
    if not seed.exists:
        pytest.skip("scenario did not seed config.toml")
    before = seed.content_string.splitlines()
    after = host.file("/etc/containerd/config.toml").content_string.splitlines()
    added = [line for line in after if line not in before]
    assert added == [f'imports = ["{IMPORT}"]']
    assert [line for line in after if line in before] == before


def test_config_toml_settings_stay_in_force(host, containerd_dump):
    # containerd replaces a whole plugin section from an imported file: the drop-in must carry these over.
    main = read_toml(host, "cat /etc/containerd/config.toml")
    dump = flatten(containerd_dump)
    for path, value in flatten(main).items():
        if path in {("version",), ("imports",)}:
            continue
        assert dump.get(path) == value, f"{'.'.join(path)} = {value!r} in config.toml, {dump.get(path)!r} in force"


def test_containerd_cri_plugin_is_loaded(host, engine):
    if engine != "containerd":
        pytest.skip("Docker scenario")
    plugins = host.check_output("ctr plugins ls")
    cri = [line for line in plugins.splitlines() if line.split()[:2] == ["io.containerd.grpc.v1", "cri"]]
    assert cri, plugins
    assert cri[0].split()[-1] == "ok", f"{cri[0]}\n{journal(host, 'containerd')}"


# --- Docker -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_json(host, engine):
    if engine != "docker":
        pytest.skip("containerd scenario")
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


@pytest.fixture(scope="module")
def docker_info(host, engine):
    if engine != "docker":
        pytest.skip("containerd scenario")
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


def test_daemon_json_keeps_keys_the_role_does_not_own(host, daemon_json):
    seed = host.file(f"{SEED}/daemon.json")
    if not seed.exists:
        pytest.skip("scenario did not seed daemon.json")
    merged = flatten(daemon_json)
    for path, value in flatten(json.loads(seed.content_string)).items():
        assert merged.get(path) == value, ".".join(path)


def test_daemon_json_registers_the_nvidia_runtime(daemon_json, config):
    assert daemon_json["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    if config.get("container_runtime_cdi_enabled", True):
        assert daemon_json["features"]["cdi"] is True
    if config.get("container_runtime_nvidia_default", False):
        assert daemon_json["default-runtime"] == "nvidia"
    else:
        assert daemon_json.get("default-runtime") != "nvidia"


def test_daemon_json_is_root_owned(host, engine):
    if engine != "docker":
        pytest.skip("containerd scenario")
    daemon = host.file("/etc/docker/daemon.json")
    assert daemon.user == "root"
    assert daemon.mode == 0o644


def test_docker_runs_with_the_nvidia_runtime(docker_info, config):
    assert docker_info["Runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    expected = "nvidia" if config.get("container_runtime_nvidia_default", False) else "runc"
    assert docker_info["DefaultRuntime"] == expected


def test_docker_runs_with_the_settings_it_had(host, docker_info):
    seed = host.file(f"{SEED}/daemon.json")
    if not seed.exists:
        pytest.skip("scenario did not seed daemon.json")
    seeded = json.loads(seed.content_string)
    if "log-driver" in seeded:
        assert docker_info["LoggingDriver"] == seeded["log-driver"]
    for mirror in seeded.get("registry-mirrors", []):
        assert mirror.rstrip("/") + "/" in docker_info["RegistryConfig"]["Mirrors"]
    for name in seeded.get("runtimes", {}):
        assert name in docker_info["Runtimes"]


def run_busybox(host, *docker_args):
    """Run a busybox container (image imported from prepare's root file system); return (result, its runtime)."""
    if not host.file(IMAGE_ROOTFS).exists:
        pytest.skip("scenario prepared no image root file system")
    image = "local/busybox"
    host.run_expect([0], f"docker image inspect {image} >/dev/null 2>&1 || docker import {IMAGE_ROOTFS} {image}")
    name = f"molecule-{uuid.uuid4().hex[:12]}"
    try:
        # No network: Docker 26 cannot configure a container's IPv6 inside the lab container (/proc/sys read-only),
        # and the runtime is what is under test here.
        command = ["docker", "run", "--name", name, "--network=none", *docker_args, image, "/bin/busybox", "echo", name]
        result = host.run(shlex.join(command))
        runtime = host.run(f"docker inspect -f '{{{{.HostConfig.Runtime}}}}' {name}").stdout.strip()
    finally:
        host.run(f"docker rm -f {name}")
    assert result.rc == 0, f"{result.stderr}\n{journal(host, 'docker')}"
    assert result.stdout.strip() == name
    return runtime


def test_container_runs_through_the_nvidia_runtime(host, engine):
    if engine != "docker":
        pytest.skip("containerd scenario")
    assert run_busybox(host, "--runtime=nvidia") == "nvidia"


def test_container_gets_the_configured_default_runtime(host, engine, config):
    if engine != "docker":
        pytest.skip("containerd scenario")
    expected = "nvidia" if config.get("container_runtime_nvidia_default", False) else "runc"
    assert run_busybox(host) == expected
