"""Power faults: switch hosts off, on, or reboot them, through the driver each host's inventory names.

``chaosgpu_power_driver`` (chaosgpu.inventory) picks the driver per host:

``docker`` (lab only)
    The Docker CLI on the controller acts on the host's container: ``docker stop`` (graceful off: the container's
    stop signal, SIGRTMIN+3 for the lab's systemd), ``docker kill`` (power loss), ``docker start``,
    ``docker restart``. The container is ``chaosgpu_docker_container`` (default: the inventory host name). Hosts
    outside group ``lab`` are refused.
``systemd`` (the default)
    ``systemctl reboot``/``poweroff`` over the transport (``--force --force`` for the forced variants: no clean
    shutdown, like a reset button). The command is handed to a transient systemd timer two seconds out
    (``systemd-run --on-active``), so the SSH call returns before the host goes down. Power-on is refused: a host
    that is off cannot be reached over SSH. ``sudo -n`` is prefixed unless the host's user is root.
``redfish``
    ``ComputerSystem.Reset`` on the host's BMC (ResetType On, GracefulShutdown, ForceOff, GracefulRestart,
    ForceRestart). Host variables: ``chaosgpu_redfish_address`` (``https://bmc`` or a bare host name, which means
    https), optional ``chaosgpu_redfish_system`` (a system id or ``/redfish/v1/Systems/...`` path; by default the
    BMC's only system), ``chaosgpu_redfish_username``, ``chaosgpu_redfish_password_secret`` (the name of the secret
    holding the password, default ``redfish_password``), ``chaosgpu_redfish_verify_tls`` (default true),
    ``chaosgpu_redfish_ca_file``. The password comes from the experiment's secrets (or CHAOSGPU_REDFISH_PASSWORD),
    never from the inventory; the username may come from the secret ``redfish_username`` or
    CHAOSGPU_REDFISH_USERNAME. Redirects are not followed, so credentials go only to the configured BMC.

Actions: ``on``, ``off`` (graceful), ``force-off`` (power loss), ``reboot`` (graceful), ``force-reboot`` (reset).

``power()`` prepares every host first (driver, variables, credentials, the BMC's reset target and allowed reset
types, read-only) and refuses before any host is switched; only then does it act, in parallel.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaosgpu.inventory import POWER_DRIVER_VAR, Inventory
from chaosgpu.secrets import get_secret
from chaosgpu.types import Host, Transport, TransportError

__all__ = [
    "POWER_ACTIONS",
    "DockerPower",
    "PowerDriver",
    "PowerRefused",
    "PowerStep",
    "RedfishPower",
    "SystemdPower",
    "default_drivers",
    "power",
]

POWER_ACTIONS = ("on", "off", "force-off", "reboot", "force-reboot")
LAB_GROUP = "lab"


class PowerRefused(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """A power action was refused before any host was switched; the message names the host and the reason."""


@dataclass(frozen=True)
class PowerStep:
    """One prepared power action: what will be done to which host, and the call that does it."""

    host: str
    driver: str
    action: str
    detail: str  # e.g. "docker kill gpuops-lab-gpu-node-1"; never holds a credential
    run: Callable[[], None]


class PowerDriver(Protocol):
    name: str

    def prepare(self, host: Host, action: str) -> PowerStep:
        """Check that ``action`` can be done to ``host`` (raise PowerRefused if not) and return the step."""
        ...


def _check_action(action: str) -> None:
    if action not in POWER_ACTIONS:
        raise PowerRefused(f"power action {action!r} is not one of {', '.join(POWER_ACTIONS)}")


class DockerPower:
    """Lab hosts are containers: the Docker CLI on the controller is their power switch."""

    name = "docker"

    def __init__(self, docker: str = "docker", stop_timeout: int = 30, timeout: float = 120) -> None:
        self.docker = docker
        self.stop_timeout = stop_timeout
        self.timeout = timeout

    def container(self, host: Host) -> str:
        return str(host.vars.get("chaosgpu_docker_container") or host.name)

    def commands(self, host: Host, action: str) -> list[list[str]]:
        """The docker command lines for ``action`` on ``host``, in order."""
        name = self.container(host)
        wait = str(self.stop_timeout)
        by_action = {
            "on": [[self.docker, "start", name]],
            "off": [[self.docker, "stop", "-t", wait, name]],
            "force-off": [[self.docker, "kill", name]],
            "reboot": [[self.docker, "restart", "-t", wait, name]],
            "force-reboot": [[self.docker, "kill", name], [self.docker, "start", name]],
        }
        return by_action[action]

    def prepare(self, host: Host, action: str) -> PowerStep:
        _check_action(action)
        if LAB_GROUP not in host.groups:
            raise PowerRefused(
                f"{host.name}: the docker power driver is for lab containers only and the host is not in group "
                f"{LAB_GROUP}; set {POWER_DRIVER_VAR} to systemd or redfish"
            )
        if shutil.which(self.docker) is None:
            raise PowerRefused(f"{host.name}: the docker power driver needs the docker CLI ({self.docker}) here")
        commands = self.commands(host, action)
        detail = " && ".join(" ".join(argv) for argv in commands)
        return PowerStep(host.name, self.name, action, detail, lambda: self._run(host, commands))

    def _run(self, host: Host, commands: list[list[str]]) -> None:
        for argv in commands:
            try:
                done = subprocess.run(  # noqa: S603 - an argument list, no shell
                    argv, capture_output=True, text=True, timeout=self.timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise ActivityFailed(f"{host.name}: `{' '.join(argv)}` timed out after {self.timeout:g} s") from None
            if done.returncode != 0:
                raise ActivityFailed(
                    f"{host.name}: `{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}"
                )


class SystemdPower:
    """``systemctl reboot``/``poweroff`` on the host, over the transport; cannot power a host on."""

    name = "systemd"
    DELAY_S = 2

    _SYSTEMCTL: ClassVar[dict[str, str]] = {
        "off": "systemctl poweroff",
        "force-off": "systemctl poweroff --force --force",
        "reboot": "systemctl reboot",
        "force-reboot": "systemctl reboot --force --force",
    }

    def __init__(self, transport: Transport | None, timeout: float = 30) -> None:
        self.transport = transport
        self.timeout = timeout

    def command(self, host: Host, action: str) -> str:
        """The shell command that schedules ``action`` on ``host``."""
        sudo = "" if host.user == "root" else "sudo -n "
        return (
            f"{sudo}systemd-run --quiet --collect --on-active={self.DELAY_S} --timer-property=AccuracySec=100ms "
            f"{self._SYSTEMCTL[action]}"
        )

    def prepare(self, host: Host, action: str) -> PowerStep:
        _check_action(action)
        if action == "on":
            raise PowerRefused(
                f"{host.name}: power-on cannot be done over SSH ({POWER_DRIVER_VAR} is systemd): a host that is "
                "off has no SSH; use the redfish driver for hosts with a BMC, or power it on by hand"
            )
        transport = self.transport
        if transport is None:
            raise PowerRefused(f"{host.name}: the systemd power driver needs a transport (SSH) and has none")
        command = self.command(host, action)

        def run() -> None:
            result = transport.run(host, command, timeout=self.timeout)
            if not result.ok:
                raise TransportError(result)

        return PowerStep(host.name, self.name, action, command, run)


_RESET_TYPES = {
    "on": "On",
    "off": "GracefulShutdown",
    "force-off": "ForceOff",
    "reboot": "GracefulRestart",
    "force-reboot": "ForceRestart",
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Credentials go to the configured BMC only: a redirect is an error, not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - urllib's signature
        return None


class RedfishPower:
    """``ComputerSystem.Reset`` on the host's BMC over HTTPS, with basic authentication."""

    name = "redfish"

    def __init__(self, secrets: Secrets | None = None, timeout: float = 30) -> None:
        self.secrets = secrets
        self.timeout = timeout

    def prepare(self, host: Host, action: str) -> PowerStep:
        _check_action(action)
        bmc = _Bmc.for_host(host, self.secrets, self.timeout)
        system = bmc.system_path()
        resource = bmc.get(system)
        reset = resource.get("Actions", {}).get("#ComputerSystem.Reset", {})
        target = str(reset.get("target") or f"{system}/Actions/ComputerSystem.Reset")
        reset_type = _RESET_TYPES[action]
        allowed = reset.get("ResetType@Redfish.AllowableValues")
        if isinstance(allowed, list) and reset_type not in allowed:
            raise PowerRefused(
                f"{host.name}: the BMC at {bmc.base} does not allow ResetType {reset_type} on {system} "
                f"(allowed: {', '.join(map(str, allowed)) or 'none'})"
            )
        detail = f"POST {bmc.base}{target} ResetType={reset_type}"
        return PowerStep(host.name, self.name, action, detail, lambda: bmc.post(target, {"ResetType": reset_type}))


class _Bmc:
    """One BMC's Redfish service: base URL, TLS context, authorisation header (never shown)."""

    def __init__(
        self, host: Host, base: str, authorization: str, context: ssl.SSLContext, timeout: float, system: str = ""
    ) -> None:
        self.host = host
        self.base = base
        self.configured_system = system
        self._authorization = authorization
        self._context = context
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))

    @classmethod
    def for_host(cls, host: Host, secrets: Secrets | None, timeout: float) -> _Bmc:
        values = host.vars
        if "chaosgpu_redfish_password" in values:
            raise PowerRefused(
                f"{host.name}: chaosgpu_redfish_password is set in the inventory; put the BMC password in the "
                "experiment's secrets (chaosgpu_redfish_password_secret names the key) instead"
            )
        address = str(values.get("chaosgpu_redfish_address") or "").strip()
        if not address:
            raise PowerRefused(f"{host.name}: {POWER_DRIVER_VAR} is redfish but chaosgpu_redfish_address is not set")
        if "://" not in address:
            address = f"https://{address}"
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise PowerRefused(f"{host.name}: chaosgpu_redfish_address {address!r} is not an http(s) address")
        base = f"{parsed.scheme}://{parsed.netloc}"
        username = str(
            values.get("chaosgpu_redfish_username")
            or get_secret(secrets, "redfish_username", "CHAOSGPU_REDFISH_USERNAME")
        )
        secret_key = str(values.get("chaosgpu_redfish_password_secret") or "redfish_password")
        password = get_secret(secrets, secret_key, "CHAOSGPU_REDFISH_PASSWORD")
        if not username:
            raise PowerRefused(
                f"{host.name}: no Redfish username (chaosgpu_redfish_username, secret redfish_username or "
                "CHAOSGPU_REDFISH_USERNAME)"
            )
        if not password:
            raise PowerRefused(f"{host.name}: no Redfish password (secret {secret_key} or CHAOSGPU_REDFISH_PASSWORD)")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        ca_file = values.get("chaosgpu_redfish_ca_file") or None
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PowerRefused(f"{host.name}: chaosgpu_redfish_ca_file {ca_file!r} cannot be used: {exc}") from None
        if not _truthy(values.get("chaosgpu_redfish_verify_tls", True)):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        system = str(values.get("chaosgpu_redfish_system") or "")
        return cls(host, base, f"Basic {token}", context, timeout, system)

    def system_path(self) -> str:
        """The ComputerSystem to reset: the configured one, else the BMC's only one."""
        if self.configured_system:
            if self.configured_system.startswith("/"):
                return self.configured_system
            return f"/redfish/v1/Systems/{urllib.parse.quote(self.configured_system, safe='')}"
        members = self.get("/redfish/v1/Systems").get("Members", [])
        paths = [str(m.get("@odata.id")) for m in members if isinstance(m, dict) and m.get("@odata.id")]
        if len(paths) != 1:
            raise PowerRefused(
                f"{self.host.name}: the BMC at {self.base} has {len(paths)} systems ({', '.join(paths) or 'none'}); "
                "set chaosgpu_redfish_system to the one to reset"
            )
        return paths[0]

    def get(self, path: str) -> dict[str, Any]:
        body = self._request("GET", path, None)
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError:
            raise ActivityFailed(f"{self.host.name}: GET {self.base}{path} returned no JSON") from None
        if not isinstance(data, dict):
            raise ActivityFailed(
                f"{self.host.name}: GET {self.base}{path} returned {type(data).__name__}, not an object"
            )
        return data

    def post(self, path: str, payload: dict[str, Any]) -> None:
        self._request("POST", path, payload)

    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> bytes:
        url = f"{self.base}{path}"
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked: http(s)
        request.add_header("Accept", "application/json")
        request.add_header("OData-Version", "4.0")
        request.add_header("Authorization", self._authorization)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise ActivityFailed(
                f"{self.host.name}: {method} {url} failed: HTTP {exc.code} {exc.reason}{_redfish_message(exc)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActivityFailed(f"{self.host.name}: {method} {url} failed: {reason}") from None


def _redfish_message(exc: urllib.error.HTTPError) -> str:
    """The BMC's own explanation of an error (Redfish error body), if it gave one."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (json.JSONDecodeError, OSError, ValueError):
        return ""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    messages = [str(m.get("Message")) for m in error.get("@Message.ExtendedInfo", []) if isinstance(m, dict)]
    text = "; ".join(messages) or str(error.get("message") or "")
    return f": {text[:500]}" if text else ""


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "off", "0", "")
    return bool(value)


def default_drivers(transport: Transport | None, secrets: Secrets | None = None) -> dict[str, PowerDriver]:
    """One driver of each kind, sharing ``transport`` and ``secrets``."""
    return {"docker": DockerPower(), "systemd": SystemdPower(transport), "redfish": RedfishPower(secrets)}


def power(
    inventory: Inventory,
    hosts: Sequence[str | Host],
    action: str,
    transport: Transport | None = None,
    secrets: Secrets | None = None,
    drivers: Mapping[str, PowerDriver] | None = None,
    max_workers: int = 16,
) -> dict[str, str]:
    """Apply ``action`` to ``hosts``, each through its inventory's power driver; returns what was done per host.

    Every host is prepared first; a refusal (PowerRefused) leaves all hosts untouched. Hosts are then switched in
    parallel; if any fails, ActivityFailed lists the failures and what was done to the others.
    """
    _check_action(action)
    chosen = drivers if drivers is not None else default_drivers(transport, secrets)
    steps: list[PowerStep] = []
    names = [item.name if isinstance(item, Host) else item for item in hosts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PowerRefused(f"hosts given more than once: {', '.join(duplicates)}")
    for name in names:
        if name not in inventory.hosts:
            raise PowerRefused(f"host {name!r} is not in inventory {inventory.source}")
        host = inventory.hosts[name]
        driver = chosen.get(inventory.power_driver(host))
        if driver is None:
            raise PowerRefused(f"{name}: no power driver {inventory.power_driver(host)!r} available")
        steps.append(driver.prepare(host, action))
    if not steps:
        return {}
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=min(max_workers, len(steps)), thread_name_prefix="chaosgpu-power") as pool:
        futures = {step.host: pool.submit(step.run) for step in steps}
        for name, future in futures.items():
            error = future.exception()
            if error is not None:
                failures[name] = str(error)
    done = {step.host: step.detail for step in steps if step.host not in failures}
    if failures:
        lines = [f"{name}: {message}" for name, message in failures.items()]
        lines += [f"{name}: done ({detail})" for name, detail in done.items()]
        raise ActivityFailed(f"power {action} failed on {len(failures)} of {len(steps)} host(s):\n" + "\n".join(lines))
    return done
