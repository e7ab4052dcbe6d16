"""The Ansible inventory as chaosgpu sees it: hosts with their connection variables, groups, and the safety marks.

chaosgpu reads the same inventory ``ansible-playbook`` uses, through ``ansible-inventory -i SOURCE --list``, so
dynamic inventories, ``group_vars``/``host_vars`` and inventory plugins work as they do for Ansible.

``ansible-inventory --list`` does not template variables. chaosgpu templates the ones it needs with Ansible's own
Templar (ansible-core must be importable from chaosgpu's Python): the connection variables (``ansible_host``,
``ansible_port``, ``ansible_user``, ``ansible_ssh_private_key_file``, ``ansible_ssh_common_args``,
``ansible_ssh_extra_args`` and their ``ansible_ssh_*`` aliases) and every ``chaosgpu_*`` variable. Other variables
stay in ``Host.vars`` as the inventory holds them (templates unrendered); ``Inventory.resolve`` renders one on
demand. The magic variables Ansible provides and these templates may use are ``inventory_hostname``,
``inventory_hostname_short``, ``group_names``, ``groups``, ``hostvars``, ``inventory_dir`` and ``inventory_file``.
``inventory_dir`` is the directory given as the source (or the directory of a source file): hosts defined in a
sub-directory of an inventory directory get the top directory, unlike Ansible. Vault-encrypted files are decrypted
by ansible-inventory as usual (``ANSIBLE_VAULT_PASSWORD_FILE``); a vault-encrypted value of a variable chaosgpu
needs is refused.

Variables chaosgpu reads:

``chaosgpu_environment``
    ``production``, ``staging``, ``test``, ``development`` or ``lab``. The inventory counts as production when
    any host has ``production``; targeting refuses production inventories unless explicitly allowed
    (chaosgpu.targeting). Any other value is refused, so a typo cannot turn the guard off.
``chaosgpu_power_driver``
    How chaosgpu.power switches the host: ``docker`` (lab containers), ``systemd`` (the default: reboot and
    power-off over SSH) or ``redfish`` (the host's BMC).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaosgpu.types import Host

__all__ = [
    "ENVIRONMENTS",
    "ENVIRONMENT_VAR",
    "POWER_DRIVERS",
    "POWER_DRIVER_VAR",
    "Inventory",
    "InventoryError",
    "load_inventory",
]

ENVIRONMENT_VAR = "chaosgpu_environment"
ENVIRONMENTS = ("production", "staging", "test", "development", "lab")
POWER_DRIVER_VAR = "chaosgpu_power_driver"
POWER_DRIVERS = ("docker", "systemd", "redfish")
DEFAULT_POWER_DRIVER = "systemd"

# Ansible's ssh connection plugin reads these, the last one defined winning (ansible-doc -t connection ssh).
_ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
_CONNECTION_VARS = frozenset(_ADDRESS_VARS + _PORT_VARS + _USER_VARS + _KEY_VARS + _ARGS_VARS)
_TEMPLATED_PREFIX = "chaosgpu_"


class InventoryError(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """The inventory could not be loaded, or a variable chaosgpu needs is missing or wrong."""


@dataclass(frozen=True)
class Inventory:
    """Hosts (in inventory order), groups (each with every host below it) and the safety marks."""

    source: str
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]
    production: bool
    power_drivers: dict[str, str]
    production_hosts: tuple[str, ...] = ()  # the hosts whose chaosgpu_environment is production
    # Raw variables of every host and the magic variables, kept for templating on demand (Inventory.resolve).
    _raw_hostvars: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    _inventory_dir: str = field(default="", repr=False, compare=False)
    _inventory_file: str = field(default="", repr=False, compare=False)

    def power_driver(self, host: str | Host) -> str:
        """The power driver of ``host`` (``chaosgpu_power_driver``, default systemd)."""
        name = host.name if isinstance(host, Host) else host
        try:
            return self.power_drivers[name]
        except KeyError:
            raise InventoryError(f"host {name!r} is not in inventory {self.source}") from None

    def resolve(self, host: str | Host, variable: str) -> Any:
        """Variable ``variable`` of ``host`` with its Jinja templates rendered as Ansible would render them."""
        name = host.name if isinstance(host, Host) else host
        if name not in self._raw_hostvars:
            raise InventoryError(f"host {name!r} is not in inventory {self.source}")
        raw = self._raw_hostvars[name]
        if variable not in raw:
            raise InventoryError(f"inventory {self.source}: host {name} has no variable {variable}")
        context = _TemplateContext(
            self.source,
            self._raw_hostvars,
            self.groups,
            _groups_of(self.groups),
            self._inventory_dir,
            self._inventory_file,
        )
        return context.render(name, variable, raw[variable])


def load_inventory(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    ansible_inventory: str = "ansible-inventory",
    timeout: float = 120,
) -> Inventory:
    """Load ``source`` (an inventory path, or several) through ``ansible-inventory --list``.

    Raises InventoryError, naming the inventory and carrying ansible-inventory's stderr, when the inventory does
    not parse, has no hosts, or gives a host a connection or chaosgpu variable chaosgpu cannot use.
    """
    sources = [os.fspath(source)] if isinstance(source, str | os.PathLike) else [os.fspath(s) for s in source]
    if not sources:
        raise InventoryError("no inventory source given")
    label = ", ".join(sources)
    data = _ansible_inventory_list(sources, label, ansible_inventory, timeout)
    hostvars: dict[str, dict[str, Any]] = {
        name: dict(values) for name, values in data.get("_meta", {}).get("hostvars", {}).items()
    }
    groups = _flatten_groups(data, label)
    for name in groups.get("all", ()):
        hostvars.setdefault(name, {})
    if not hostvars:
        raise InventoryError(f"inventory {label} has no hosts")
    first = Path(sources[0]).resolve()
    inventory_dir = str(first if first.is_dir() else first.parent)
    inventory_file = str(first)
    groups_of = _groups_of(groups)
    context = _TemplateContext(label, hostvars, groups, groups_of, inventory_dir, inventory_file)
    hosts: dict[str, Host] = {}
    power_drivers: dict[str, str] = {}
    production_hosts: list[str] = []
    for name in groups.get("all", tuple(hostvars)):
        resolved = context.resolve_needed(name)
        hosts[name] = _host(label, name, resolved, groups_of.get(name, ()))
        power_drivers[name] = _power_driver(label, name, resolved)
        if _environment(label, name, resolved) == "production":
            production_hosts.append(name)
    return Inventory(
        source=label,
        hosts=hosts,
        groups=groups,
        production=bool(production_hosts),
        production_hosts=tuple(production_hosts),
        power_drivers=power_drivers,
        _raw_hostvars=hostvars,
        _inventory_dir=inventory_dir,
        _inventory_file=inventory_file,
    )


def _ansible_inventory_list(sources: list[str], label: str, executable: str, timeout: float) -> dict[str, Any]:
    argv = [executable]
    for source in sources:
        argv += ["-i", source]
    argv.append("--list")
    # An inventory that does not parse must fail, not come back empty with a warning.
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    try:
        done = subprocess.run(  # noqa: S603 - an argument list, no shell
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError:
        raise InventoryError(f"inventory {label}: {executable} not found (install ansible-core)") from None
    except subprocess.TimeoutExpired:
        raise InventoryError(f"inventory {label}: {executable} --list did not finish within {timeout:g} s") from None
    stderr = done.stderr.strip()[-4000:]
    if done.returncode != 0:
        raise InventoryError(f"inventory {label}: ansible-inventory exited {done.returncode}: {stderr}")
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"inventory {label}: ansible-inventory printed no JSON ({exc}): {stderr}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"inventory {label}: ansible-inventory printed {type(data).__name__}, not an object")
    return data


def _flatten_groups(data: Mapping[str, Any], label: str) -> dict[str, tuple[str, ...]]:
    """Every group with every host in it or in a group below it, hosts in inventory order."""
    direct: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for name, body in data.items():
        if name == "_meta" or not isinstance(body, dict):
            continue
        direct[name] = [str(h) for h in body.get("hosts", [])]
        children[name] = [str(c) for c in body.get("children", [])]

    def walk(group: str, seen: tuple[str, ...]) -> list[str]:
        if group in seen:
            raise InventoryError(f"inventory {label}: group {group} is its own ancestor ({' > '.join(seen)})")
        members: list[str] = []
        members += direct.get(group, [])
        for child in children.get(group, []):
            members += walk(child, (*seen, group))
        return members

    names = ["all"] if "all" in direct else []
    names += [g for g in direct if g != "all"]
    return {group: tuple(dict.fromkeys(walk(group, ()))) for group in names}


def _groups_of(groups: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Every host's groups (parents included, ``all`` left out), in the order ansible-inventory lists them."""
    member_of: dict[str, list[str]] = {}
    for group, members in groups.items():
        if group == "all":
            continue
        for host in members:
            member_of.setdefault(host, []).append(group)
    return {host: tuple(names) for host, names in member_of.items()}


def _host(label: str, name: str, values: Mapping[str, Any], groups: tuple[str, ...]) -> Host:
    address = _last_defined(values, _ADDRESS_VARS) or name
    port_value = _last_defined(values, _PORT_VARS)
    try:
        port = 22 if port_value is None else int(port_value)
    except (TypeError, ValueError):
        raise InventoryError(f"inventory {label}: host {name}: ansible_port {port_value!r} is not a number") from None
    if not 0 < port < 65536:  # noqa: PLR2004 - the TCP port range
        raise InventoryError(f"inventory {label}: host {name}: ansible_port {port} is out of range")
    user = _last_defined(values, _USER_VARS)
    key = _last_defined(values, _KEY_VARS)
    ssh_args: list[str] = []
    for var in _ARGS_VARS:
        value = values.get(var)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):  # Ansible reads a string
            raise InventoryError(f"inventory {label}: host {name}: {var} must be a string, got {type(value).__name__}")
        try:
            ssh_args += shlex.split(str(value))
        except ValueError as exc:
            raise InventoryError(f"inventory {label}: host {name}: {var} does not split like a shell: {exc}") from None
    return Host(
        name=name,
        address=str(address),
        port=port,
        user=None if user in (None, "") else str(user),
        key_file=None if key in (None, "") else os.path.expanduser(str(key)),
        ssh_args=tuple(ssh_args),
        groups=groups,
        vars=dict(values),
    )


def _last_defined(values: Mapping[str, Any], names: Sequence[str]) -> Any:
    found = None
    for name in names:
        if values.get(name) is not None:
            found = values[name]
    return found


def _power_driver(label: str, name: str, values: Mapping[str, Any]) -> str:
    driver = values.get(POWER_DRIVER_VAR, DEFAULT_POWER_DRIVER)
    if driver not in POWER_DRIVERS:
        raise InventoryError(
            f"inventory {label}: host {name}: {POWER_DRIVER_VAR} is {driver!r}, "
            f"expected one of {', '.join(POWER_DRIVERS)}"
        )
    return str(driver)


def _environment(label: str, name: str, values: Mapping[str, Any]) -> str | None:
    environment = values.get(ENVIRONMENT_VAR)
    if environment is None:
        return None
    if environment not in ENVIRONMENTS:
        raise InventoryError(
            f"inventory {label}: host {name}: {ENVIRONMENT_VAR} is {environment!r}, "
            f"expected one of {', '.join(ENVIRONMENTS)}"
        )
    return str(environment)


def _needs_templating(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, Mapping):
        return any(_needs_templating(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_needs_templating(v) for v in value)
    return False


class _TemplateContext:
    """Renders host variables with Ansible's Templar, as a play would see them (no facts, no play vars)."""

    def __init__(
        self,
        label: str,
        hostvars: Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, tuple[str, ...]],
        groups_of: Mapping[str, tuple[str, ...]],
        inventory_dir: str,
        inventory_file: str,
    ) -> None:
        self.label = label
        self.hostvars = hostvars
        self.groups = groups
        self.groups_of = groups_of
        self.inventory_dir = inventory_dir
        self.inventory_file = inventory_file
        self._trusted_hostvars: dict[str, Any] | None = None

    def resolve_needed(self, name: str) -> dict[str, Any]:
        """The host's variables with the connection and chaosgpu_* ones rendered."""
        values = dict(self.hostvars[name])
        for var, value in values.items():
            if not (var in _CONNECTION_VARS or var.startswith(_TEMPLATED_PREFIX)):
                continue
            if isinstance(value, Mapping) and "__ansible_vault" in value:
                raise InventoryError(
                    f"inventory {self.label}: host {name}: {var} is vault-encrypted and chaosgpu does not decrypt "
                    "vault values; give it in plain text (secrets belong in the experiment's secrets)"
                )
            if _needs_templating(value):
                values[var] = self.render(name, var, value)
        return values

    def render(self, name: str, var: str, value: Any) -> Any:
        if not _needs_templating(value):
            return value
        ansible = _ansible_templating()
        if ansible is None:
            raise InventoryError(
                f"inventory {self.label}: host {name}: {var} is a Jinja template ({_short(value)}) and rendering it "
                "needs ansible-core importable from chaosgpu's Python; install ansible-core there or set a plain value"
            )
        templar_cls, trust, errors = ansible
        templar = templar_cls(loader=_loader(), variables=self._variables(name, trust))
        try:
            return _plain(templar.template(_trusted(value, trust)))
        except errors as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InventoryError(
                f"inventory {self.label}: host {name}: cannot render {var} ({_short(value)}): {message}"
            ) from None

    def _variables(self, name: str, trust: Any) -> dict[str, Any]:
        if self._trusted_hostvars is None:
            self._trusted_hostvars = {h: _trusted(dict(v), trust) for h, v in self.hostvars.items()}
        variables = dict(self._trusted_hostvars[name])
        variables.update(
            inventory_hostname=name,
            inventory_hostname_short=name.split(".", maxsplit=1)[0],
            group_names=sorted(self.groups_of.get(name, ())),
            groups={g: list(members) for g, members in self.groups.items()},
            hostvars=self._trusted_hostvars,
            inventory_dir=self.inventory_dir,
            inventory_file=self.inventory_file,
        )
        return variables


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."  # noqa: PLR2004 - message length


def _trusted(value: Any, trust: Any) -> Any:
    """Mark inventory strings as templates Ansible may render (ansible-core 2.19 renders only trusted ones)."""
    if isinstance(value, str):
        return trust(value) if trust else value
    if isinstance(value, dict):
        return {k: _trusted(v, trust) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v, trust) for v in value]
    return value


def _plain(value: Any) -> Any:
    """Ansible's rendered value as plain Python data (no lazy containers or tagged strings)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_ANSIBLE: tuple[Any, Any, Any] | None = None
_LOADER: Any = None


def _ansible_templating() -> tuple[Any, Any, Any] | None:
    """Ansible's Templar, its trust marker (None before ansible-core 2.19) and its error type; None without ansible."""
    global _ANSIBLE  # noqa: PLW0603 - plugin loader initialisation is process-wide in Ansible too
    if _ANSIBLE is None:
        try:
            from ansible.errors import AnsibleError  # type: ignore[import-untyped]  # noqa: PLC0415
            from ansible.plugins.loader import init_plugin_loader  # type: ignore[import-untyped]  # noqa: PLC0415
            from ansible.template import Templar  # type: ignore[import-untyped]  # noqa: PLC0415
        except ImportError:
            return None
        try:
            from ansible.template import trust_as_template  # noqa: PLC0415
        except ImportError:  # pragma: no cover - ansible-core before 2.19 renders every string
            trust_as_template = None
        init_plugin_loader()
        _ANSIBLE = (Templar, trust_as_template, AnsibleError)
    return _ANSIBLE


def _loader() -> Any:
    global _LOADER  # noqa: PLW0603 - one DataLoader, as in an Ansible process
    if _LOADER is None:
        from ansible.parsing.dataloader import DataLoader  # type: ignore[import-untyped]  # noqa: PLC0415

        _LOADER = DataLoader()
    return _LOADER
