"""file_states (one read of many paths) and file_differs (does the task have work to do), together: what the
module reads of a path the filter must judge equal to what a task would write, and different after any drift."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from file_differs import file_differs
from unit_differs import unit_differs

ROOT = Path(__file__).resolve().parents[4]
MODULE_PATH = ROOT / "plugins" / "modules" / "file_states.py"
sys.path.insert(0, str(MODULE_PATH.parent))

import file_states  # noqa: E402

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def _run_module(tmp_path: Path, args: dict) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": True, **args}}))
    proc = subprocess.run([sys.executable, MODULE_PATH, args_file], capture_output=True, text=True, check=False)
    return json.loads(proc.stdout)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "conf").write_text("key = 1\n", encoding="utf-8")
    (tmp_path / "conf").chmod(0o640)
    (tmp_path / "dir").mkdir(mode=0o750)
    (tmp_path / "dir").chmod(0o750)
    (tmp_path / "link").symlink_to(tmp_path / "conf")
    return tmp_path


def test_the_module_reads_every_path_in_one_call_in_check_mode(tree: Path) -> None:
    paths = [str(tree / name) for name in ("conf", "dir", "link", "missing")]
    result = _run_module(tree, {"paths": paths})
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    states = result["states"]
    assert states[paths[0]] == {
        "state": "file",
        "sha1": hashlib.sha1(b"key = 1\n").hexdigest(),  # noqa: S324
        "mode": "0640",
        "owner": USER,
        "group": GROUP,
    }
    assert states[paths[1]]["state"] == "directory"
    assert states[paths[1]]["mode"] == "0750"
    assert states[paths[2]]["state"] == "link"  # not followed
    assert states[paths[3]] == {"state": "absent", "sha1": None, "mode": None, "owner": None, "group": None}


def test_the_module_refuses_a_relative_path(tmp_path: Path) -> None:
    result = _run_module(tmp_path, {"paths": ["/etc/hostname", "etc/passwd"]})
    assert result["failed"] is True
    assert "paths must be absolute: etc/passwd" in result["msg"]


def test_a_large_file_gets_no_checksum(tree: Path) -> None:
    state = file_states.read_state(str(tree / "conf"), max_checksum_bytes=4)
    assert state["state"] == "file"
    assert state["sha1"] is None
    # and so it always differs from content: its task runs and compares for itself
    assert file_differs({str(tree / "conf"): state}, str(tree / "conf"), "0640", "key = 1\n", USER, GROUP)


def test_what_the_module_read_is_equal_to_what_the_task_writes(tree: Path) -> None:
    states = {p: file_states.read_state(p, 1 << 20) for p in (str(tree / "conf"), str(tree / "dir"))}
    assert file_differs(states, str(tree / "conf"), "0640", "key = 1\n", USER, GROUP) is False
    assert file_differs(states, str(tree / "dir"), "0750", None, USER, GROUP) is False


@pytest.mark.parametrize(
    ("path", "mode", "content", "owner", "group"),
    [
        ("conf", "0640", "key = 2\n", USER, GROUP),  # content
        ("conf", "0640", "key = 1", USER, GROUP),  # the trailing newline
        ("conf", "0644", "key = 1\n", USER, GROUP),  # mode
        ("conf", "0640", "key = 1\n", "nobody-else", GROUP),  # owner
        ("conf", "0640", "key = 1\n", USER, "nogroup-else"),  # group
        ("conf", "0640", None, USER, GROUP),  # a file where a directory is wanted
        ("dir", "0750", "key = 1\n", USER, GROUP),  # a directory where a file is wanted
        ("dir", "0755", None, USER, GROUP),  # a directory's mode
        ("link", "0777", "key = 1\n", USER, GROUP),  # a link is never the file a task writes
        ("missing", "0640", "key = 1\n", USER, GROUP),  # absent
        ("not-read", "0640", "key = 1\n", USER, GROUP),  # not read: its task runs
    ],
)
def test_any_drift_differs(tree: Path, path: str, mode: str, content: str | None, owner: str, group: str) -> None:
    read = [str(tree / name) for name in ("conf", "dir", "link", "missing")]
    states = {p: file_states.read_state(p, 1 << 20) for p in read}
    assert file_differs(states, str(tree / path), mode, content, owner, group) is True


@pytest.mark.parametrize(
    ("states", "mode", "content", "message"),
    [
        ([], "0644", "x", "the input must be the states dict"),
        ({}, "rw-r--r--", "x", "mode must be an octal string such as '0644', got 'rw-r--r--'"),
        ({}, True, "x", "mode must be an octal string"),
        ({"/etc/x": {"state": "file"}}, "0644", b"bytes", "content for /etc/x must be text"),
    ],
)
def test_the_filter_refuses_bad_input_naming_it(states: object, mode: object, content: object, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        file_differs(states, "/etc/x", mode, content)  # type: ignore[arg-type]


def test_the_filter_takes_the_registered_result_and_a_skipped_one_read_nothing(tree: Path) -> None:
    path = str(tree / "conf")
    registered = {"changed": False, "states": {path: file_states.read_state(path, 1 << 20)}}
    assert file_differs(registered, path, "0640", "key = 1\n", USER, GROUP) is False
    assert file_differs({"changed": False, "skipped": True}, path, "0640", "key = 1\n", USER, GROUP) is True
    assert file_differs({}, path, "0640", "key = 1\n", USER, GROUP) is True  # default({}): not read


def test_the_module_lists_directories_and_reads_their_entries(tree: Path) -> None:
    listed, missing = str(tree / "dir"), str(tree / "no-such-dir")
    (tree / "dir" / "a.py").write_text("a\n", encoding="utf-8")
    (tree / "dir" / "b.txt").write_text("b\n", encoding="utf-8")
    result = _run_module(tree, {"paths": [], "list_directories": [listed, missing]})
    assert result.get("failed") is not True, result
    assert result["listings"] == {listed: ["a.py", "b.txt"], missing: []}
    assert result["states"][f"{listed}/a.py"]["sha1"] == hashlib.sha1(b"a\n").hexdigest()  # noqa: S324
    assert result["states"][f"{listed}/b.txt"]["state"] == "file"
    refused = _run_module(tree, {"paths": [], "list_directories": ["dir"]})
    assert refused["msg"] == "list_directories must be absolute: dir"


def test_present_compares_mode_and_ownership_of_a_file_or_a_directory_not_its_content(tree: Path) -> None:
    read = [str(tree / name) for name in ("conf", "dir", "link", "missing")]
    states = {p: file_states.read_state(p, 1 << 20) for p in read}
    conf, directory = str(tree / "conf"), str(tree / "dir")
    assert file_differs(states, conf, "0640", owner=USER, group=GROUP, state="present") is False
    assert file_differs(states, directory, "0750", owner=USER, group=GROUP, state="present") is False
    assert file_differs(states, conf, "0600", owner=USER, group=GROUP, state="present") is True
    assert file_differs(states, directory, "0750", owner=USER, group="nogroup-else", state="present") is True
    assert file_differs(states, str(tree / "missing"), "0640", owner=USER, group=GROUP, state="present") is True
    assert file_differs(states, str(tree / "link"), "0777", owner=USER, group=GROUP, state="present") is True
    # state "file" without content: a regular file of that mode, whatever it holds
    assert file_differs(states, conf, "0640", owner=USER, group=GROUP, state="file") is False
    assert file_differs(states, directory, "0750", owner=USER, group=GROUP, state="file") is True


@pytest.mark.parametrize(
    ("content", "state", "message"),
    [
        (None, "absent", "state must be one of file, directory, present, got 'absent'"),
        ("x", "present", "content for /etc/x needs state 'file', got 'present'"),
    ],
)
def test_the_filter_refuses_a_bad_state(content: str | None, state: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        file_differs({}, "/etc/x", "0644", content, state=state)


FAKE_SYSTEMCTL = """#!/usr/bin/env python3
import sys
known = {"node_exporter.service": ("loaded", "active", "enabled"), "munge.service": ("loaded", "failed", "disabled")}
assert sys.argv[1:3] == ["show", "--property=LoadState,ActiveState,UnitFileState"] and sys.argv[3] == "--", sys.argv
blocks = []
for unit in sys.argv[4:]:
    load, active, enabled = known.get(unit, ("not-found", "inactive", ""))
    blocks.append(f"LoadState={load}\\nActiveState={active}\\nUnitFileState={enabled}\\n")
print("\\n".join(blocks), end="")
"""


def test_the_module_reads_units_in_the_same_call_and_the_filter_judges_them(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL, encoding="utf-8")
    (bin_dir / "systemctl").chmod(0o755)
    args_file = tmp_path / "args.json"
    units = ["node_exporter.service", "munge.service", "gone.service"]
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": True, "paths": [], "units": units}})
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, MODULE_PATH, args_file], capture_output=True, text=True, env=env, check=False
    )
    result = json.loads(proc.stdout)
    assert result.get("failed") is not True, result
    assert result["units"] == {
        "node_exporter.service": {"load": "loaded", "active": "active", "enabled": "enabled"},
        "munge.service": {"load": "loaded", "active": "failed", "enabled": "disabled"},
        "gone.service": {"load": "not-found", "active": "inactive", "enabled": ""},
    }
    assert unit_differs(result, "node_exporter.service") is False
    assert unit_differs(result, "munge.service") is True  # not running, not enabled
    assert unit_differs(result, "munge.service", enabled=False, started=False) is False  # disabled and stopped
    assert unit_differs(result, "munge.service", enabled=None, started=None) is False
    assert unit_differs(result, "node_exporter.service", enabled=False, started=None) is True  # to be disabled
    assert unit_differs(result, "node_exporter.service", enabled=None, started=False) is True  # to be stopped
    assert unit_differs(result, "gone.service", enabled=False, started=False) is True  # not loaded: its task runs
    assert unit_differs(result, "never-read.service") is True
    assert unit_differs({"changed": False, "skipped": True}, "node_exporter.service") is True


def test_the_module_refuses_a_bad_unit_name(tmp_path: Path) -> None:
    result = _run_module(tmp_path, {"paths": [], "units": ["ok.service", "a b; reboot"]})
    assert result["failed"] is True
    assert result["msg"] == "units: not a systemd unit name: a b; reboot"


def test_unit_differs_refuses_what_is_not_a_read() -> None:
    with pytest.raises(AnsibleFilterError, match=r"the input must be what gpuops\.fleet\.file_states registered"):
        unit_differs(["node_exporter.service"], "node_exporter.service")
