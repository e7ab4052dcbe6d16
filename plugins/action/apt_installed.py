"""apt_installed: ansible.builtin.apt for packages that must be installed, asking dpkg first.

The apt module opens python-apt's cache on every call (~0.4 s of the host's CPU) even when every package is already
there, which is what an idempotent re-run finds. This action asks dpkg with one raw command (``dpkg-query``; no
Python, no module upload) and calls ``ansible.builtin.apt`` with the task's own arguments only when a package is
missing, not fully installed, or at another version than the one asked for. The documentation is in
plugins/modules/apt_installed.py.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "list", "elements": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "latest"]},
    "update_cache": {"type": "bool", "default": False},
    "cache_valid_time": {"type": "int", "default": 0},
    "install_recommends": {"type": "bool"},
    "allow_downgrade": {"type": "bool", "default": False},
    "allow_change_held_packages": {"type": "bool", "default": False},
}

# name[:arch][=version], as apt takes them; a version may end in * (apt matches it as a glob).
_SPEC = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<arch>[a-z0-9-]+))?(?:=(?P<version>[A-Za-z0-9.+~:_-]+\*?))?$"
)
_FIELDS = "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n"
_FIELD_COUNT = 4


@dataclass(frozen=True)
class Spec:
    """One package the task asks for."""

    text: str
    name: str
    arch: str | None
    version: str | None


def parse_specs(names: list[str]) -> list[Spec] | None:
    """The task's packages, or None when one is not a plain name[:arch][=version] (a path to a .deb, a
    version comparison...): those are left to apt."""
    specs = []
    for text in names:
        match = _SPEC.match(text)
        if not match:
            return None
        specs.append(Spec(text, match["name"], match["arch"], match["version"]))
    return specs


def query_command(specs: list[Spec]) -> str:
    """The one shell command that reads the native architecture, then each package's state, version and arch.
    ``dpkg-query`` exits 1 when it knows some package of the list not at all; the output still holds the others."""
    names = " ".join(shlex.quote(name) for name in dict.fromkeys(spec.name for spec in specs))
    return f"dpkg --print-architecture && {{ dpkg-query -W -f={shlex.quote(_FIELDS)} -- {names} || true; }}"


def unsatisfied(specs: list[Spec], output: str) -> list[str] | None:
    """The packages dpkg does not show installed as asked (in the task's spelling); None when the output is not
    dpkg's (the answer is then left to apt).

    Installed means dpkg's status is installed with no error flag (``ii`` or ``hi``, not ``iU``, ``rc``,
    ``iHR``...), for the host's own architecture or ``all`` unless the spec names one, at exactly the version asked
    for (or matching it, for a version ending in ``*``)."""
    lines = output.splitlines()
    if not lines or not re.fullmatch(r"[a-z0-9-]+", lines[0].strip()):
        return None
    native = lines[0].strip()
    installed: dict[tuple[str, str], str] = {}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != _FIELD_COUNT:
            return None
        name, arch, version, status = fields
        # db:Status-Abbrev: the selection, the state (i: installed) and the error flag (blank: none).
        if status[1:2] == "i" and status[2:].strip() == "":
            installed[(name, arch)] = version
    missing = []
    for spec in specs:
        arches = [spec.arch] if spec.arch else [native, "all"]
        versions = [installed[(spec.name, arch)] for arch in arches if (spec.name, arch) in installed]
        if not versions or (spec.version and not any(_version_matches(v, spec.version) for v in versions)):
            missing.append(spec.text)
    return missing


def _version_matches(installed: str, wanted: str) -> bool:
    return fnmatch.fnmatchcase(installed, wanted) if wanted.endswith("*") else installed == wanted


class ActionModule(ActionBase):
    """See plugins/modules/apt_installed.py."""

    TRANSFERS_FILES = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        self._supports_check_mode = True
        self._supports_async = False
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        apt_args = {key: value for key, value in args.items() if value is not None}
        names: list[str] = args["name"]
        if not names:
            raise AnsibleActionFail("name: the list of packages is empty")

        # None: dpkg was not asked (state latest, or a spec only apt understands) or its answer was not dpkg's.
        missing: list[str] | None = None
        specs = parse_specs(names) if args["state"] == "present" else None
        if specs is not None:
            answer = self._low_level_execute_command(query_command(specs))
            missing = unsatisfied(specs, answer.get("stdout", "")) if answer.get("rc") == 0 else None
            if missing == []:
                result.update(
                    changed=False,
                    apt_ran=False,
                    missing=[],
                    msg=f"dpkg shows every package installed as asked: {', '.join(names)}",
                )
                return result

        outcome = self._execute_module(module_name="ansible.builtin.apt", module_args=apt_args, task_vars=task_vars)
        outcome["apt_ran"] = True
        outcome["missing"] = names if missing is None else missing
        result.update(outcome)
        return result
