"""chaosgpu.power: the docker driver against a recording fake docker CLI, the systemd driver against a recording
transport, the redfish driver against a Redfish service on 127.0.0.1 (plain HTTP and TLS)."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosgpu.inventory import Inventory
from chaosgpu.power import DockerPower, PowerRefused, RedfishPower, SystemdPower, default_drivers, power
from chaosgpu.types import CommandResult, Host, TransportError

FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_DOCKER_FAIL") in sys.argv:
    sys.stderr.write("Error response from daemon: No such container: " + sys.argv[-1] + "\\n")
    sys.exit(1)
"""


def make_inventory(drivers: dict[str, str], extra_vars: dict[str, dict[str, Any]] | None = None) -> Inventory:
    """Lab hosts gpu-node-1/2 (group lab), bare-metal hosts metal-1/2; each with the driver given."""
    groups = {"lab": ("gpu-node-1", "gpu-node-2"), "metal": ("metal-1", "metal-2")}
    groups["all"] = groups["lab"] + groups["metal"]
    hosts = {}
    for name in groups["all"]:
        member_of = tuple(g for g, m in groups.items() if g != "all" and name in m)
        user = "root" if name == "metal-2" else "operator"
        hosts[name] = Host(name=name, address=name, user=user, groups=member_of, vars=(extra_vars or {}).get(name, {}))
    return Inventory(
        source="inventories/test",
        hosts=hosts,
        groups=groups,
        production=False,
        power_drivers={name: drivers.get(name, "systemd") for name in hosts},
    )


@dataclass
class RecordingTransport:
    """A Transport that records commands and answers with a fixed status."""

    rc: int = 0
    commands: list[tuple[str, str]] = field(default_factory=list)

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        self.commands.append((host.name, command))
        return CommandResult(host.name, command, self.rc, "", "Failed to start transient timer" if self.rc else "", 0.1)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        result = self.run(host, command, timeout, stdin)
        if not result.ok:
            raise TransportError(result)
        return result

    def run_many(self, hosts, command, timeout=60, stdin=None):
        return {h.name: self.run(h, command, timeout, stdin) for h in hosts}


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> tuple[str, Path]:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return str(docker), log


def docker_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


# --- docker ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("on", [["start", "gpuops-lab-gpu-node-1"]]),
        ("off", [["stop", "-t", "30", "gpuops-lab-gpu-node-1"]]),
        ("force-off", [["kill", "gpuops-lab-gpu-node-1"]]),
        ("reboot", [["restart", "-t", "30", "gpuops-lab-gpu-node-1"]]),
        ("force-reboot", [["kill", "gpuops-lab-gpu-node-1"], ["start", "gpuops-lab-gpu-node-1"]]),
    ],
)
def test_docker_driver_runs_the_docker_cli_on_the_hosts_container(fake_docker, action, expected):
    docker, log = fake_docker
    inventory = make_inventory(
        {"gpu-node-1": "docker"}, {"gpu-node-1": {"chaosgpu_docker_container": "gpuops-lab-gpu-node-1"}}
    )
    done = power(inventory, ["gpu-node-1"], action, drivers={"docker": DockerPower(docker=docker)})
    assert docker_calls(log) == expected
    assert done == {"gpu-node-1": " && ".join(" ".join([docker, *argv]) for argv in expected)}


def test_docker_container_defaults_to_the_host_name(fake_docker):
    docker, log = fake_docker
    power(
        make_inventory({"gpu-node-2": "docker"}), ["gpu-node-2"], "force-off", drivers={"docker": DockerPower(docker)}
    )
    assert docker_calls(log) == [["kill", "gpu-node-2"]]


def test_docker_driver_refuses_hosts_outside_the_lab(fake_docker):
    docker, log = fake_docker
    inventory = make_inventory({"metal-1": "docker"})
    with pytest.raises(PowerRefused, match=r"metal-1: the docker power driver is for lab containers only"):
        power(inventory, ["metal-1"], "off", drivers={"docker": DockerPower(docker)})
    assert docker_calls(log) == []


def test_docker_failure_names_host_command_and_docker_stderr(fake_docker, monkeypatch):
    docker, _ = fake_docker
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "gpu-node-1")
    with pytest.raises(ActivityFailed, match=r"gpu-node-1: `.*docker start gpu-node-1` exited 1: .*No such container"):
        power(make_inventory({"gpu-node-1": "docker"}), ["gpu-node-1"], "on", drivers={"docker": DockerPower(docker)})


def test_docker_driver_needs_the_docker_cli(tmp_path):
    driver = DockerPower(docker=str(tmp_path / "no-docker"))
    with pytest.raises(PowerRefused, match="needs the docker CLI"):
        power(make_inventory({"gpu-node-1": "docker"}), ["gpu-node-1"], "on", drivers={"docker": driver})


# --- systemd --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "systemctl"),
    [
        ("off", "systemctl poweroff"),
        ("force-off", "systemctl poweroff --force --force"),
        ("reboot", "systemctl reboot"),
        ("force-reboot", "systemctl reboot --force --force"),
    ],
)
def test_systemd_driver_schedules_systemctl_over_the_transport(action, systemctl):
    transport = RecordingTransport()
    power(make_inventory({}), ["metal-1", "metal-2"], action, transport=transport)
    timer = "systemd-run --quiet --collect --on-active=2 --timer-property=AccuracySec=100ms"
    assert sorted(transport.commands) == [
        ("metal-1", f"sudo -n {timer} {systemctl}"),  # operator: through sudo
        ("metal-2", f"{timer} {systemctl}"),  # root: as is
    ]


def test_systemd_driver_refuses_power_on_before_touching_any_host(fake_docker):
    docker, log = fake_docker
    transport = RecordingTransport()
    inventory = make_inventory({"gpu-node-1": "docker"})
    drivers = {"docker": DockerPower(docker), "systemd": SystemdPower(transport)}
    with pytest.raises(PowerRefused, match=r"metal-1: power-on cannot be done over SSH"):
        power(inventory, ["gpu-node-1", "metal-1"], "on", drivers=drivers)
    assert docker_calls(log) == []  # gpu-node-1 was prepared first, and still not switched on
    assert transport.commands == []


def test_systemd_driver_needs_a_transport():
    with pytest.raises(PowerRefused, match="needs a transport"):
        power(make_inventory({}), ["metal-1"], "reboot", transport=None)


def test_failures_are_reported_with_what_was_done_elsewhere():
    transport = RecordingTransport(rc=1)
    with pytest.raises(ActivityFailed) as failed:
        power(make_inventory({}), ["metal-1"], "reboot", transport=transport)
    assert "power reboot failed on 1 of 1 host(s)" in str(failed.value)
    assert "Failed to start transient timer" in str(failed.value)


@pytest.mark.parametrize(
    ("hosts", "action", "message"),
    [
        (["metal-9"], "reboot", r"host 'metal-9' is not in inventory inventories/test"),
        (["metal-1"], "hibernate", r"power action 'hibernate' is not one of on, off, force-off, reboot, force-reboot"),
        (["metal-1", "metal-1"], "reboot", r"hosts given more than once: metal-1"),
    ],
)
def test_bad_requests_are_refused(hosts, action, message):
    transport = RecordingTransport()
    with pytest.raises(PowerRefused, match=message):
        power(make_inventory({}), hosts, action, transport=transport)
    assert transport.commands == []


# --- redfish --------------------------------------------------------------------------------------------------


@dataclass
class Bmc:
    """What the Redfish service below was asked."""

    systems: list[str] = field(default_factory=lambda: ["1"])
    allowed: list[str] | None = field(
        default_factory=lambda: ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart"]
    )
    status: int = 204
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0


def handler_for(bmc: Bmc) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, body: Any = None) -> None:
            bmc.requests.append(
                {"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )

        def do_GET(self):
            self._record()
            if self.path == "/redfish/v1/Systems":
                members = [{"@odata.id": f"/redfish/v1/Systems/{s}"} for s in bmc.systems]
                return self._reply(200, {"Members": members})
            if self.path == "/moved":
                return self._reply(302, headers={"Location": "/redfish/v1/Systems"})
            for system in bmc.systems:
                if self.path == f"/redfish/v1/Systems/{system}":
                    reset = {"target": f"/redfish/v1/Systems/{system}/Actions/ComputerSystem.Reset"}
                    if bmc.allowed is not None:
                        reset["ResetType@Redfish.AllowableValues"] = bmc.allowed
                    return self._reply(200, {"Id": system, "Actions": {"#ComputerSystem.Reset": reset}})
            return self._reply(404, {"error": {"message": "no such resource"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            self._record(json.loads(self.rfile.read(length) or b"null"))
            if bmc.status >= 400:
                info = [{"Message": "The ResetType is not supported right now."}]
                return self._reply(bmc.status, {"error": {"code": "Base.GeneralError", "@Message.ExtendedInfo": info}})
            return self._reply(bmc.status)

    return Handler


def serve(bmc: Bmc, context: ssl.SSLContext | None = None) -> Iterator[Bmc]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(bmc))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    bmc.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield bmc
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def bmc() -> Iterator[Bmc]:
    yield from serve(Bmc())


@pytest.fixture
def tls_bmc(localhost_tls: tuple[ssl.SSLContext, Path]) -> Iterator[tuple[Bmc, Path]]:
    """A Redfish service over TLS with a self-signed certificate for 127.0.0.1, and that certificate's path."""
    context, cert_file = localhost_tls
    for served in serve(Bmc(), context):
        yield served, cert_file


SECRETS = {"redfish": {"redfish_password": "s3cret-pw"}}


def redfish_inventory(address: str, **host_vars: Any) -> Inventory:
    values = {"chaosgpu_redfish_address": address, "chaosgpu_redfish_username": "chaos", **host_vars}
    return make_inventory({"metal-1": "redfish"}, {"metal-1": values})


def reset(inventory: Inventory, action: str, secrets: Any = SECRETS) -> dict[str, str]:
    return power(inventory, ["metal-1"], action, secrets=secrets, drivers={"redfish": RedfishPower(secrets, timeout=5)})


@pytest.mark.parametrize(
    ("action", "reset_type"),
    [
        ("on", "On"),
        ("off", "GracefulShutdown"),
        ("force-off", "ForceOff"),
        ("reboot", "GracefulRestart"),
        ("force-reboot", "ForceRestart"),
    ],
)
def test_redfish_driver_posts_computer_system_reset(bmc, action, reset_type):
    done = reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}"), action)
    post = bmc.requests[-1]
    assert post["method"] == "POST"
    assert post["path"] == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    assert post["body"] == {"ResetType": reset_type}
    assert post["auth"] == "Basic " + base64.b64encode(b"chaos:s3cret-pw").decode()
    assert [r["path"] for r in bmc.requests[:-1]] == ["/redfish/v1/Systems", "/redfish/v1/Systems/1"]
    assert done == {"metal-1": f"POST http://127.0.0.1:{bmc.port}{post['path']} ResetType={reset_type}"}
    assert "s3cret-pw" not in json.dumps(done)


def test_redfish_reset_type_the_bmc_does_not_allow_is_refused_before_posting(bmc):
    bmc.allowed = ["On", "ForceOff"]
    with pytest.raises(PowerRefused, match=r"does not allow ResetType GracefulRestart on /redfish/v1/Systems/1"):
        reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}"), "reboot")
    assert [r["method"] for r in bmc.requests] == ["GET", "GET"]


def test_redfish_with_several_systems_needs_one_named(bmc):
    bmc.systems = ["1", "2"]
    with pytest.raises(PowerRefused, match=r"has 2 systems .*set chaosgpu_redfish_system"):
        reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}"), "force-off")
    reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}", chaosgpu_redfish_system="2"), "force-off")
    assert bmc.requests[-1]["path"] == "/redfish/v1/Systems/2/Actions/ComputerSystem.Reset"


def test_redfish_error_carries_the_bmcs_message_not_the_password(bmc):
    bmc.status = 400
    with pytest.raises(ActivityFailed) as failed:
        reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}"), "force-off")
    message = str(failed.value)
    assert "HTTP 400" in message
    assert "The ResetType is not supported right now." in message
    assert "s3cret-pw" not in message
    assert "chaos:" not in message


def test_redfish_redirects_are_not_followed(bmc):
    inventory = redfish_inventory(f"http://127.0.0.1:{bmc.port}", chaosgpu_redfish_system="/moved")
    with pytest.raises(ActivityFailed, match="HTTP 302"):
        reset(inventory, "force-off")
    assert [r["path"] for r in bmc.requests] == ["/moved"]


@pytest.mark.parametrize(
    ("host_vars", "secrets", "message"),
    [
        ({}, {}, r"no Redfish password \(secret redfish_password or CHAOSGPU_REDFISH_PASSWORD\)"),
        ({"chaosgpu_redfish_password_secret": "bmc_rack_a"}, SECRETS, r"secret bmc_rack_a"),
        ({"chaosgpu_redfish_username": ""}, SECRETS, r"no Redfish username"),
        ({"chaosgpu_redfish_password": "in-the-inventory"}, SECRETS, r"put the BMC password in the experiment's"),
        ({"chaosgpu_redfish_address": ""}, SECRETS, r"chaosgpu_redfish_address is not set"),
        ({"chaosgpu_redfish_address": "ftp://bmc"}, SECRETS, r"is not an http\(s\) address"),
    ],
)
def test_redfish_refuses_missing_settings_without_contacting_the_bmc(bmc, monkeypatch, host_vars, secrets, message):
    monkeypatch.delenv("CHAOSGPU_REDFISH_PASSWORD", raising=False)
    monkeypatch.delenv("CHAOSGPU_REDFISH_USERNAME", raising=False)
    with pytest.raises(PowerRefused, match=message) as refused:
        reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}", **host_vars), "force-off", secrets=secrets)
    assert "in-the-inventory" not in str(refused.value)
    assert bmc.requests == []


def test_redfish_password_from_a_named_secret_or_the_environment(bmc, monkeypatch):
    # The variable names the secret; it holds no password.
    inventory = redfish_inventory(f"http://127.0.0.1:{bmc.port}", chaosgpu_redfish_password_secret="bmc_rack_a")  # noqa: S106
    reset(inventory, "on", secrets={"bmc_rack_a": "rack-a-pw"})
    assert bmc.requests[-1]["auth"] == "Basic " + base64.b64encode(b"chaos:rack-a-pw").decode()
    monkeypatch.setenv("CHAOSGPU_REDFISH_PASSWORD", "env-pw")
    reset(redfish_inventory(f"http://127.0.0.1:{bmc.port}"), "on", secrets=None)
    assert bmc.requests[-1]["auth"] == "Basic " + base64.b64encode(b"chaos:env-pw").decode()


def test_redfish_verifies_tls_by_default(tls_bmc):
    server, _ = tls_bmc
    with pytest.raises(ActivityFailed, match="CERTIFICATE_VERIFY_FAILED"):
        reset(redfish_inventory(f"https://127.0.0.1:{server.port}"), "force-off")
    assert server.requests == []


def test_redfish_trusts_a_given_ca_and_a_bare_address_means_https(tls_bmc):
    server, certificate = tls_bmc
    reset(redfish_inventory(f"127.0.0.1:{server.port}", chaosgpu_redfish_ca_file=str(certificate)), "force-off")
    assert server.requests[-1]["body"] == {"ResetType": "ForceOff"}


def test_redfish_verification_can_be_turned_off_per_host(tls_bmc):
    server, _ = tls_bmc
    reset(redfish_inventory(f"https://127.0.0.1:{server.port}", chaosgpu_redfish_verify_tls=False), "force-off")
    assert server.requests[-1]["method"] == "POST"


def test_default_drivers_cover_every_inventory_driver():
    assert set(default_drivers(RecordingTransport())) == {"docker", "systemd", "redfish"}
