#!/usr/bin/python
"""nvidia_smi_info: read driver, CUDA and per-GPU facts from nvidia-smi (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_smi_info
short_description: Driver, CUDA and per-GPU facts from nvidia-smi
version_added: "0.1.0"
description:
  - Runs C(nvidia-smi) read-only and returns the driver and CUDA versions and, for each GPU, its index, UUID,
    name, PCI bus id, total memory, persistence, MIG, ECC and compute modes.
  - A host without a GPU or without a loaded driver is not an error; the module returns O(gpus=[]) with
    RV(driver_loaded=false) and a RV(reason).
  - Never changes anything; safe in check mode.
author: gpuops.fleet maintainers
options:
  nvidia_smi_path:
    description: Path of C(nvidia-smi). By default it is looked up on the PATH (and in C(/usr/bin)).
    type: path
  timeout:
    description: Seconds to wait for each C(nvidia-smi) call (a wedged GPU can hang it).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Values that nvidia-smi reports as C([N/A]) or C([Not Supported]) are returned as null.
"""

EXAMPLES = r"""
- name: Read GPU facts
  gpuops.fleet.nvidia_smi_info:
  register: gpu_info

- name: Require eight GPUs with persistence mode on
  ansible.builtin.assert:
    that:
      - gpu_info.gpu_count == 8
      - gpu_info.gpus | rejectattr('persistence_mode') | list | length == 0
"""

RETURN = r"""
driver_loaded:
  description: Whether the NVIDIA kernel driver answered (or is loaded while no GPU is visible).
  type: bool
  returned: always
driver_version:
  description: Loaded driver version, for example C(535.183.01); null when unknown.
  type: str
  returned: always
cuda_version:
  description: Highest CUDA version the driver supports, for example C(12.2); null when unknown.
  type: str
  returned: always
gpu_count:
  description: Number of GPUs nvidia-smi lists.
  type: int
  returned: always
gpus:
  description: One entry per GPU, in index order.
  type: list
  elements: dict
  returned: always
  contains:
    index: {description: GPU index., type: int}
    uuid: {description: GPU UUID (C(GPU-...))., type: str}
    name: {description: Product name., type: str}
    pci_bus_id: {description: PCI bus id (C(00000000:18:00.0))., type: str}
    memory_total_mib: {description: Framebuffer size in MiB., type: int}
    persistence_mode: {description: Persistence mode on., type: bool}
    mig_mode: {description: MIG mode on; null where MIG is not supported., type: bool}
    ecc_mode: {description: ECC on; null where not supported., type: bool}
    compute_mode: {description: C(Default), C(Exclusive_Process) or C(Prohibited)., type: str}
reason:
  description: Why no GPU is listed (no nvidia-smi, driver not loaded, no devices); empty otherwise.
  type: str
  returned: always
"""

import csv
import os
import re

from ansible.module_utils.basic import AnsibleModule

QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "memory.total",
    "persistence_mode",
    "mig.mode.current",
    "ecc.mode.current",
    "compute_mode",
    "driver_version",
)
QUERY_ARGS = ["--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits"]
HEADER_ARGS = ["-q", "-d", "COMPUTE"]
# nvidia-smi's exit codes (man nvidia-smi, RETURN VALUE); 124 is timeout(1)'s.
RC_NO_DRIVER = 9
RC_NO_DEVICE = 6
RC_TIMEOUT = 124
# Debian's nvidia-smi 535 on a host without the kernel driver prints this and exits 255 (captured in the lab).
_NVML_INIT_FAILED = "Failed to initialize NVML"
_UNAVAILABLE = {"[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", ""}
_HEADER_LINE = re.compile(r"^(Driver Version|CUDA Version)\s*:\s*(\S+)\s*$", re.MULTILINE)


def _value(text):
    text = text.strip()
    return None if text in _UNAVAILABLE else text


def _flag(text):
    value = _value(text)
    if value is None:
        return None
    if value in ("Enabled", "On"):
        return True
    if value in ("Disabled", "Off"):
        return False
    raise ValueError(f"unexpected mode value {text!r}")


def parse_query(stdout):
    """Parse `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits` output."""
    gpus = []
    driver_version = None
    for row in csv.reader(stdout.strip().splitlines(), skipinitialspace=True):
        if not row:
            continue
        if len(row) != len(QUERY_FIELDS):
            raise ValueError(f"expected {len(QUERY_FIELDS)} fields, got {len(row)}: {row!r}")
        raw = dict(zip(QUERY_FIELDS, row))  # noqa: B905 - length checked above; modules also run on Python 3.9
        memory = _value(raw["memory.total"])
        gpus.append(
            {
                "index": int(raw["index"]),
                "uuid": _value(raw["uuid"]),
                "name": _value(raw["name"]),
                "pci_bus_id": _value(raw["pci.bus_id"]),
                "memory_total_mib": int(memory) if memory is not None else None,
                "persistence_mode": _flag(raw["persistence_mode"]),
                "mig_mode": _flag(raw["mig.mode.current"]),
                "ecc_mode": _flag(raw["ecc.mode.current"]),
                "compute_mode": _value(raw["compute_mode"]),
            }
        )
        driver_version = driver_version or _value(raw["driver_version"])
    gpus.sort(key=lambda gpu: gpu["index"])
    return gpus, driver_version


def parse_header(stdout):
    """Driver and CUDA versions from the header of `nvidia-smi -q`."""
    found = {key: _value(value) for key, value in _HEADER_LINE.findall(stdout)}
    return found.get("Driver Version"), found.get("CUDA Version")


def loaded_module_version(sys_root="/sys"):
    """Version of the loaded nvidia kernel module, or None when it is not loaded."""
    try:
        with open(os.path.join(sys_root, "module", "nvidia", "version"), encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def empty_result(reason, driver_version=None):
    return {
        "changed": False,
        "driver_loaded": driver_version is not None,
        "driver_version": driver_version,
        "cuda_version": None,
        "gpu_count": 0,
        "gpus": [],
        "reason": reason,
    }


def gather(run, nvidia_smi, sys_root="/sys"):
    """Collect the facts. `run(argv)` returns (rc, stdout, stderr)."""
    if nvidia_smi is None:
        return empty_result("nvidia-smi is not installed", loaded_module_version(sys_root))
    rc, stdout, stderr = run([nvidia_smi, *QUERY_ARGS])
    message = (stdout + stderr).strip().splitlines()
    first_line = message[0] if message else f"exit code {rc}"
    if rc == RC_NO_DRIVER or (rc != 0 and _NVML_INIT_FAILED in first_line):
        module_version = loaded_module_version(sys_root)
        if module_version is None:
            return empty_result(f"driver not loaded: {first_line}")
        # The kernel module is loaded but NVML refuses it (e.g. driver/library mismatch after an upgrade).
        return empty_result(f"driver {module_version} loaded but NVML failed: {first_line}", module_version)
    if rc == RC_NO_DEVICE or (rc == 0 and not stdout.strip()):
        return empty_result(f"no GPU found: {first_line}", loaded_module_version(sys_root))
    if rc == RC_TIMEOUT:
        raise RuntimeError(f"{nvidia_smi} did not answer within the timeout (a hung GPU or driver?)")
    if rc != 0:
        raise RuntimeError(f"{nvidia_smi} {' '.join(QUERY_ARGS)} failed with exit code {rc}: {first_line}")
    gpus, driver_version = parse_query(stdout)
    header_rc, header_out, _ = run([nvidia_smi, *HEADER_ARGS])
    header_driver, cuda_version = parse_header(header_out) if header_rc == 0 else (None, None)
    return {
        "changed": False,
        "driver_loaded": True,
        "driver_version": driver_version or header_driver,
        "cuda_version": cuda_version,
        "gpu_count": len(gpus),
        "gpus": gpus,
        "reason": "",
    }


def main():
    module = AnsibleModule(
        argument_spec={"nvidia_smi_path": {"type": "path"}, "timeout": {"type": "int", "default": 30}},
        supports_check_mode=True,
    )
    nvidia_smi = module.params["nvidia_smi_path"] or module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin"])
    if module.params["nvidia_smi_path"] and not os.access(nvidia_smi, os.X_OK):
        module.fail_json(msg=f"nvidia_smi_path={nvidia_smi} is not an executable file")

    def run(argv):
        # nvidia-smi has no timeout of its own; a GPU that fell off the bus can make it hang.
        return module.run_command(["timeout", str(module.params["timeout"]), *argv], environ_update={"LC_ALL": "C"})

    try:
        result = gather(run, nvidia_smi)
    except (RuntimeError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
