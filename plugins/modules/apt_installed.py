#!/usr/bin/python
"""apt_installed: documentation only; the work is done by the action plugin of the same name
(plugins/action/apt_installed.py), on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_installed
short_description: Install Debian packages with apt, asking dpkg first whether they already are
version_added: "0.2.0"
description:
  - M(ansible.builtin.apt) for packages that must be installed, for the re-runs that find them installed.
  - An action plugin. It first reads the packages' states and versions with one C(dpkg-query) command on the host
    (a raw command, no Python and no module upload). When every package is installed (dpkg status C(ii) or C(hi),
    no error flag) for the host's architecture or C(all), at the version asked for when one is, the task reports
    ok and apt is not run.
  - Otherwise, or for O(state=latest), or when a name is not a plain C(name[:arch][=version]), it runs
    M(ansible.builtin.apt) with the task's arguments unchanged, for all the packages.
  - So a re-run neither opens python-apt's cache (about 0.4 s of the host's CPU per task) nor refreshes the package
    lists; a run that installs something still honours O(update_cache) and O(cache_valid_time).
author: gpuops.fleet maintainers
options:
  name:
    description: Packages, as M(ansible.builtin.apt) takes them (C(name), C(name:arch), C(name=version),
      C(name=version*)).
    type: list
    elements: str
    required: true
  state:
    description: C(present) asks dpkg first; C(latest) always runs apt, which alone knows the newest candidate.
    type: str
    default: present
    choices: [present, latest]
  update_cache:
    description: Passed to M(ansible.builtin.apt) when it runs.
    type: bool
    default: false
  cache_valid_time:
    description: Passed to M(ansible.builtin.apt) when it runs.
    type: int
    default: 0
  install_recommends:
    description: Passed to M(ansible.builtin.apt) when it runs; unset leaves apt's configuration to decide.
    type: bool
  allow_downgrade:
    description: Passed to M(ansible.builtin.apt) when it runs.
    type: bool
    default: false
  allow_change_held_packages:
    description: Passed to M(ansible.builtin.apt) when it runs.
    type: bool
    default: false
attributes:
  action:
    support: full
  check_mode:
    support: full
    details: The dpkg read runs in check mode too (it changes nothing); apt then runs in check mode.
  diff_mode:
    support: full
    details: As M(ansible.builtin.apt), when it runs.
  async:
    support: none
notes:
  - A package that is installed but held at another version than the one asked for makes apt run, which refuses to
    move it unless O(allow_change_held_packages=true), as M(ansible.builtin.apt) does.
seealso:
  - module: ansible.builtin.apt
"""

EXAMPLES = r"""
- name: Install nftables
  gpuops.fleet.apt_installed:
    name: nftables
    update_cache: true
    cache_valid_time: 3600

- name: Install the toolkit at a pinned version
  gpuops.fleet.apt_installed:
    name: [nvidia-container-toolkit=1.17.8-1, nvidia-container-toolkit-base=1.17.8-1]
    allow_downgrade: true
"""

RETURN = r"""
apt_ran:
  description: Whether M(ansible.builtin.apt) ran (false when dpkg showed every package installed as asked).
  type: bool
  returned: always
missing:
  description: The packages dpkg did not show installed as asked (all of O(name) when dpkg was not asked).
  type: list
  elements: str
  returned: always
"""
