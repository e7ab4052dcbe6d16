"""gpu_health: the agent as a node, an operator and node_exporter see it, and its reactions to injected XIDs.

In Molecule the GPUs are the lab's simulator (8 GPUs behind STAND-IN nvidia-smi, dcgmi and nv-hostengine) and XIDs
are injected with `dcgmi test --inject -f 230`, which writes the driver's kernel-log line to the file the agent
reads. Every wait has a deadline derived from the deployed config (poll interval, the sources' timeouts,
undrain_after_s), never from how fast this machine is. The tests of one module run in order: XID 94 first (no drain),
then XID 48 (drain, reset, undrain).
"""

from __future__ import annotations

import json
import re
import time

import pytest

SERVICE = "gpu-health"
CONFIG = "/etc/gpu_health/agent.json"
EXPECTED_GPUS = 8
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
# A GPU for each XID, neither of them GPU 1 (dcgmi's default when --gpuid is left out).
XID94_GPU = 5
XID48_GPU = 2


def journal(host, unit=SERVICE, lines=60):
    """The unit's recent journal, printed with a failed assertion."""
    return host.run(f"journalctl -u {unit} -n {lines} --no-pager -o cat").stdout


@pytest.fixture(scope="module")
def agent_config(host):
    """The config the role deployed (the agent's own view of the role's variables)."""
    return json.loads(host.file(CONFIG).content_string)


@pytest.fixture(scope="module")
def poll_bound(agent_config):
    """The longest one poll can take: the interval, then every source up to its timeout, plus a second."""
    sources = agent_config["sources"]
    timeouts = sources["nvidia_smi"].get("timeout_s", 30) + sources["dcgm"].get("timeout_s", 30)
    return agent_config["poll_interval_s"] + timeouts + 1


def prom_path(agent_config):
    return f"{agent_config['textfile_dir']}/gpu_health.prom"


def samples(host, agent_config):
    """[(name, labels, value)] of gpu_health.prom; [] while it does not exist."""
    f = host.file(prom_path(agent_config))
    if not f.exists:
        return []
    found = []
    for line in f.content_string.splitlines():
        m = SAMPLE.match(line)
        if m:
            found.append((m["name"], dict(LABEL.findall(m["labels"] or "")), float(m["value"])))
    return found


def value(host, agent_config, name, **labels):
    """The sample's value, or None."""
    for n, found, v in samples(host, agent_config):
        if n == name and all(found.get(k) == str(want) for k, want in labels.items()):
            return v
    return None


def wait_for(what, check, deadline_s, host):
    """Poll `check` until it returns a true value, at most `deadline_s`; fail with the agent's journal."""
    end = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s. gpu-health journal:\n{journal(host)}")
        time.sleep(0.5)


def inject_xid(host, gpu, xid):
    """An XID on a GPU the way DCGM's test injection does it (field 230); the simulator logs the driver's line."""
    host.check_output(f"dcgmi test --inject --gpuid {gpu} -f 230 -v {xid}")


def drain_file(host, agent_config):
    return host.file(agent_config["actions"]["drain_file"]["path"])


# --- the installation ---------------------------------------------------------------------------------------------


def test_service_is_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled
    assert service.is_running, journal(host)


def test_service_keeps_its_runtime_directory_and_is_sandboxed(host):
    shown = host.check_output(
        f"systemctl show {SERVICE} -p RuntimeDirectoryPreserve -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p NoNewPrivileges -p Restart -p Environment -p StateDirectory -p RuntimeDirectory"
    )
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["RuntimeDirectoryPreserve"] == "yes"
    assert props["StateDirectory"] == "gpu_health"
    assert props["RuntimeDirectory"] == "gpu_health"
    assert props["ProtectSystem"] == "full"
    assert props["ProtectHome"] == "read-only"
    assert props["PrivateTmp"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert props["Restart"] == "always"
    assert "PYTHONPATH=/usr/local/lib/gpu_health" in props["Environment"]


def test_config_is_readable_by_root_only(host):
    f = host.file(CONFIG)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o640)
    assert "Ansible managed" in json.loads(f.content_string)["_comment"]


def test_the_installed_agent_accepts_its_config(host):
    out = host.check_output(
        f"env PYTHONPATH=/usr/local/lib/gpu_health PYTHONDONTWRITEBYTECODE=1 python3 -m gpu_health_agent "
        f"--check-config --config {CONFIG}"
    )
    assert json.loads(out)["policy"]["xid"]["48"]["decision"] == "drain_reset"


def test_agent_package_is_root_owned_and_not_writable_by_others(host):
    modules = host.check_output("find /usr/local/lib/gpu_health/gpu_health_agent -name '*.py' -printf '%u %g %m\\n'")
    assert modules.splitlines(), "no module installed"
    assert set(modules.splitlines()) == {"root root 644"}


def test_kernel_log_path_is_the_simulators(agent_config, config):
    assert agent_config["sources"]["kernel_log"]["path"] == config["gpu_simulator_kernel_log"]
    assert agent_config["sources"]["dcgm"]["set_watches"] is False


# --- a healthy node -----------------------------------------------------------------------------------------------


def test_metrics_show_every_gpu_healthy(host, agent_config, poll_bound):
    def healthy():
        found = [s for s in samples(host, agent_config) if s[0] == "gpu_health_gpu_healthy"]
        return found if len(found) == EXPECTED_GPUS and all(v == 1 for _, _, v in found) else None

    found = wait_for("8 GPUs reported healthy in gpu_health.prom", healthy, 2 * poll_bound, host)
    assert sorted(int(labels["gpu"]) for _, labels, _ in found) == list(range(EXPECTED_GPUS))
    assert all(labels["uuid"].startswith("GPU-") for _, labels, _ in found)


def test_metrics_file_is_world_readable_for_node_exporter(host, agent_config):
    f = host.file(prom_path(agent_config))
    assert f.mode == 0o644


def test_every_source_answers(host, agent_config, poll_bound):
    def all_up():
        up = {labels["source"]: v for n, labels, v in samples(host, agent_config) if n == "gpu_health_source_up"}
        return up if up and all(v == 1 for v in up.values()) else None

    up = wait_for("every source up", all_up, 2 * poll_bound, host)
    assert set(up) == {"kernel_log", "nvidia_smi", "dcgm"}


def test_node_is_not_drained_and_not_dry_run(host, agent_config):
    assert value(host, agent_config, "gpu_health_node_drained") == 0
    assert value(host, agent_config, "gpu_health_dry_run") == 0
    assert not drain_file(host, agent_config).exists


# --- XID 94 (contained ECC): the application's business, the node stays in service ---------------------------


@pytest.fixture(scope="module")
def xid94(host, agent_config, poll_bound):
    inject_xid(host, XID94_GPU, 94)
    wait_for(
        f'gpu_health_last_xid{{gpu="{XID94_GPU}"}} 94',
        lambda: value(host, agent_config, "gpu_health_last_xid", gpu=XID94_GPU) == 94,
        2 * poll_bound,
        host,
    )


@pytest.mark.usefixtures("xid94")
def test_xid_94_is_shown_in_the_metrics(host, agent_config):
    assert value(host, agent_config, "gpu_health_last_xid", gpu=XID94_GPU) == 94
    assert value(host, agent_config, "gpu_health_last_xid", gpu=XID48_GPU) == 0


@pytest.mark.usefixtures("xid94")
def test_xid_94_does_not_drain_the_node(host, agent_config):
    # The poll that read the XID wrote these metrics after its actions: a drain would already be there.
    assert not drain_file(host, agent_config).exists
    assert value(host, agent_config, "gpu_health_node_drained") == 0
    assert value(host, agent_config, "gpu_health_action_total", action="drain", outcome="ok") is None


@pytest.mark.usefixtures("xid94")
def test_xid_94_is_journaled(host):
    events = [json.loads(line) for line in journal(host, lines=400).splitlines() if line.startswith("{")]
    xids = [e for e in events if e.get("GPU_HEALTH_EVENT") == "xid" and str(e.get("XID")) == "94"]
    assert xids, "no xid event with XID 94 in the journal"


# --- XID 48 (double-bit ECC): drain, reset the GPU, undrain after undrain_after_s healthy ----------------------


@pytest.fixture(scope="module")
def xid48(host, agent_config, poll_bound):
    """Inject XID 48 and record what the drain file said while the node was drained."""
    injected = time.monotonic()  # before the XID: the undrain can only be later than this plus undrain_after_s
    inject_xid(host, XID48_GPU, 48)
    f = drain_file(host, agent_config)
    drained = wait_for("the drain file after XID 48", lambda: f.exists and f.content_string, 2 * poll_bound, host)
    return {"drain": json.loads(drained), "injected": injected}


def test_xid_48_drains_the_node(xid48, agent_config):
    drain = xid48["drain"]
    assert drain["drained"] is True
    assert drain["rma"] is False
    assert drain["node"] == agent_config["node_name"]
    assert "48" in drain["reason"]


@pytest.mark.usefixtures("xid48")
def test_xid_48_resets_the_gpu(host, agent_config, poll_bound):
    wait_for(
        "gpu_health_action_total{action=reset,outcome=ok} 1",
        lambda: value(host, agent_config, "gpu_health_action_total", action="reset", outcome="ok") == 1,
        2 * poll_bound,
        host,
    )
    # The simulator's side: a successful `nvidia-smi -r` cleared the GPU's health incidents, so DCGM passes it.
    state = json.loads(host.check_output("gpusim show --json"))
    gpu = next(g for g in state["gpus"] if g["index"] == XID48_GPU)
    assert gpu["xid_events"] == []
    assert gpu["last_xid"] == 48  # DCGM's cached XID survives a reset


def test_xid_48_undrains_after_undrain_after_s_healthy(xid48, host, agent_config, poll_bound):
    undrain_after = agent_config["policy"]["undrain_after_s"]
    f = drain_file(host, agent_config)
    # Healthy polls for undrain_after_s, counted from the end of the reset, then the undrain in the next poll.
    deadline = undrain_after + 3 * poll_bound
    wait_for("the drain file removed after undrain_after_s healthy", lambda: not f.exists, deadline, host)
    # Not before undrain_after_s: the node was held while it proved healthy. The healthy time counts from the end of
    # the reset, which came after the injection, so this lower bound holds however fast or slow the machine is.
    assert time.monotonic() - xid48["injected"] >= undrain_after
    assert value(host, agent_config, "gpu_health_node_drained") == 0
    assert value(host, agent_config, "gpu_health_action_total", action="undrain", outcome="ok") == 1
    assert value(host, agent_config, "gpu_health_phase", phase="healthy") == 1


@pytest.mark.usefixtures("xid48")
def test_xid_48_did_not_request_a_reboot(host, agent_config):
    assert value(host, agent_config, "gpu_health_action_total", action="reboot", outcome="ok") is None
    assert not host.file("/var/lib/gpu_health/molecule-reboot-requested").exists
