"""The agent's config: defaults, overrides per XID, and errors that name the key."""

from __future__ import annotations

import json

import pytest
from gpu_health_agent.cli import main, policy_table
from gpu_health_agent.config import ConfigError, load_config, parse_config
from gpu_health_agent.policy import CONDITION_RULES, DECISIONS, XID_RULES, rank


def _errors(data):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.errors


def test_an_empty_config_is_the_documented_default():
    config = parse_config({"node_name": "gpu-node-1"})
    assert (config.state_dir, config.runtime_dir) == ("/var/lib/gpu_health", "/run/gpu_health")
    assert config.textfile_dir == "/var/lib/node_exporter/textfile"  # node_exporter_textfile_dir's default
    assert config.kernel_log.path == "/dev/kmsg"
    assert (config.slurm.enabled, config.kubernetes.enabled, config.drain_file.enabled) == (False, False, True)
    assert config.slurm.node == config.kubernetes.node == "gpu-node-1"
    assert config.reboot.command == ("systemctl", "reboot")
    assert config.policy.rulebook.xid == XID_RULES
    assert config.policy.cooldown("reboot") == 600
    assert config.fleet_guard.type == "none"
    assert parse_config({}).node_name  # the host's short name


def test_the_xid_table_follows_design():
    drains = {x for x, rule in XID_RULES.items() if rank(rule.decision) >= rank("drain")}
    assert drains == {48, 64, 74, 79, 95, 119, 120, 140}
    assert {x for x, r in XID_RULES.items() if r.decision == "none"} == {13, 31, 32, 43, 94}
    assert XID_RULES[79].decision == "drain_reboot"
    assert (XID_RULES[79].rma_after, XID_RULES[64].rma_after) == (2, 2)
    assert XID_RULES[63].decision == "reset_when_idle"
    assert XID_RULES[92].decision == "watch"
    assert CONDITION_RULES["remap_failure"].decision == "drain_rma"
    assert all(rule.decision in DECISIONS for rule in [*XID_RULES.values(), *CONDITION_RULES.values()])


def test_per_xid_override_merges_into_the_default_rule():
    config = parse_config(
        {
            "policy": {
                "xid": {"79": {"rma_after": 3}, "13": {"decision": "drain_reset"}, "999": {"decision": "drain"}},
                "conditions": {"dcgm_fail:Thermal": {"decision": "drain"}, "temperature_high": {"severity": "fail"}},
            }
        }
    )
    rules = config.policy.rulebook
    assert (rules.xid[79].decision, rules.xid[79].rma_after) == ("drain_reboot", 3)
    assert (rules.xid[13].decision, rules.xid[13].severity) == ("drain_reset", "fail")  # a drain implies fail
    assert (rules.xid[999].decision, rules.xid[999].on_reset_failure) == ("drain", "reboot")
    assert rules.conditions["dcgm_fail:Thermal"].decision == "drain"
    assert (rules.conditions["temperature_high"].decision, rules.conditions["temperature_high"].severity) == (
        "watch",
        "fail",
    )
    assert XID_RULES[13].decision == "none"  # the defaults themselves are untouched


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"poll_interval_s": "10"}, "poll_interval_s: must be a number, got a string"),
        ({"poll_interval_s": 0}, "poll_interval_s: must be between 1 and 3600, got 0"),
        ({"dry_run": 1}, "dry_run: must be true or false"),
        ({"state_dir": "var/lib"}, "state_dir: must be an absolute path"),
        ({"sources": {"kernel_log": {"pth": "/dev/kmsg"}}}, "sources.kernel_log.pth: unknown key"),
        ({"sources": {"nvidia_smi": {"command": "nvidia-smi --x"}}}, None),  # one program name, not split
        ({"sources": {"nvidia_smi": {"command": []}}}, "sources.nvidia_smi.command: must name a program"),
        ({"sources": {"dcgm": []}}, "sources.dcgm: must be an object, got a list"),
        ({"policy": {"xid": {"79": {"decision": "reboot"}}}}, "policy.xid.79.decision: must be one of none, watch"),
        ({"policy": {"xid": {"abc": {}}}}, "policy.xid.abc: must be an XID number 1-1023"),
        ({"policy": {"xid": {"500": {"rma_after": 2}}}}, "policy.xid.500.decision: is required"),
        ({"policy": {"xid": {"79": {"rma_afer": 2}}}}, "policy.xid.79.rma_afer: unknown key"),
        ({"policy": {"conditions": {"gpu_gone": {}}}}, "policy.conditions.gpu_gone: must be a finding kind"),
        ({"policy": {"cooldown_s": {"reset": -1}}}, "policy.cooldown_s.reset: must be at least 0"),
        ({"policy": {"max_reboots_per_hour": 1.5}}, "policy.max_reboots_per_hour: must be a whole number"),
        ({"actions": {"slurm": {"node": "bad name"}}}, "actions.slurm.node: must be a node name"),
        ({"actions": {"reboot": {"command": ["systemctl", ""]}}}, "actions.reboot.command: must be a program"),
        ({"actions": {"drain": {}}}, "actions.drain: unknown key"),
        ({"fleet_guard": {"type": "prometheus", "max": 2}}, "fleet_guard.url: must be an http(s) URL"),
        ({"fleet_guard": {"type": "prometheus", "url": "http://p:9090"}}, "fleet_guard.query: must be a PromQL"),
        ({"fleet_guard": {"type": "command"}}, "fleet_guard.command: must name the program"),
        ({"fleet_guard": {"type": "consul"}}, "fleet_guard.type: must be one of none, prometheus, command"),
        ({"node_name": "gpu node"}, "node_name: must be a host name"),
        ({"_comment": ["Ansible managed"]}, "_comment: must be a string"),
        ([], "(top level): must be an object, got a list"),
    ],
)
def test_errors_name_the_key(data, message):
    if message is None:
        assert parse_config(data).nvidia_smi.command == ("nvidia-smi --x",)
        return
    errors = _errors(data)
    assert any(e.startswith(message) for e in errors), errors


def test_a_comment_key_is_accepted_and_ignored():
    """The role's template names who manages the file in ``_comment`` (JSON has no comments)."""
    config = parse_config({"_comment": "Ansible managed: do not edit", "node_name": "gpu-node-1"})
    assert config == parse_config({"node_name": "gpu-node-1"})


def test_every_error_is_reported_at_once():
    errors = _errors({"poll_interval_s": -1, "policy": {"undrain_after_s": "x"}, "extra": 1})
    assert [e.split(":")[0] for e in errors] == ["poll_interval_s", "policy.undrain_after_s", "extra"]


def test_unreadable_or_non_json_file_names_the_file(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text("{'node_name': 1}")
    with pytest.raises(ConfigError, match=r"agent\.json: not JSON: .* line 1 column 2"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_check_config_prints_the_policy_and_fails_with_status_2(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"node_name": "gpu-node-1", "policy": {"xid": {"79": {"rma_after": 3}}}}))
    assert main(["--config", str(good), "--check-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["policy"]["xid"]["79"]["rma_after"] == 3
    assert printed["policy"]["xid"]["94"]["decision"] == "none"
    assert printed["policy"] == policy_table(load_config(good))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sources": {"dcgm": {"enabled": "yes"}}}))
    assert main(["--config", str(bad), "--check-config"]) == 2
    assert "sources.dcgm.enabled: must be true or false" in capsys.readouterr().err
