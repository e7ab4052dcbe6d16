"""chaosgpu.inventory: the real lab and example inventories and small inventories written here, all read through
ansible-inventory (no hosts are contacted)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaosgpu import inventory as inventory_module
from chaosgpu.inventory import Inventory, InventoryError, load_inventory


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Inventory:
    root = Path(request.config.rootpath)
    return load_inventory(root / "inventories" / "lab")


@pytest.fixture(scope="module")
def example(request: pytest.FixtureRequest) -> Inventory:
    root = Path(request.config.rootpath)
    return load_inventory(root / "inventories" / "example")


def write_inventory(tmp_path: Path, hosts_yml: str, group_vars: dict[str, str] | None = None) -> Path:
    directory = tmp_path / "inv"
    directory.mkdir()
    (directory / "hosts.yml").write_text(textwrap.dedent(hosts_yml))
    for group, body in (group_vars or {}).items():
        (directory / "group_vars").mkdir(exist_ok=True)
        (directory / "group_vars" / f"{group}.yml").write_text(textwrap.dedent(body))
    return directory


def test_lab_hosts_resolve_their_connection_variables(lab, repo_root):
    node = lab.hosts["gpu-node-2"]
    assert (node.address, node.port, node.user) == ("127.0.0.1", 2222, "operator")
    # group_vars/lab/connection.yml templates the key path from inventory_dir: rendered, not left as Jinja.
    assert node.key_file == str(repo_root / ".cache" / "lab" / "ssh" / "id_ed25519")
    assert node.ssh_args == (
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    )


def test_lab_groups_include_parents_and_keep_inventory_order(lab):
    assert list(lab.hosts) == ["gpu-node-1", "gpu-node-2", "gpu-node-3", "ops-1"]
    assert lab.groups["gpu_nodes"] == ("gpu-node-1", "gpu-node-2", "gpu-node-3")
    assert lab.groups["lab"] == ("gpu-node-1", "gpu-node-2", "gpu-node-3", "ops-1")
    assert set(lab.hosts["ops-1"].groups) == {"lab", "ops", "slurm_controllers"}
    assert set(lab.hosts["gpu-node-1"].groups) == {"lab", "gpu_nodes", "slurm_nodes"}


def test_lab_is_not_production_and_powers_hosts_through_docker(lab):
    assert lab.production is False
    assert {lab.power_driver(name) for name in lab.hosts} == {"docker"}
    # chaosgpu_* variables are rendered: the container name comes from lab_container_name.
    assert lab.hosts["gpu-node-3"].vars["chaosgpu_docker_container"] == "gpuops-lab-gpu-node-3"


def test_other_variables_stay_raw_and_render_on_demand(lab):
    raw = lab.hosts["gpu-node-1"].vars["lab_standin_repo_base_url"]
    assert "{{" in raw
    assert lab.resolve("gpu-node-1", "lab_standin_repo_base_url") == "http://172.30.99.10:8765/"
    assert lab.resolve("gpu-node-1", "firewall_prometheus_cidrs") == ["172.30.99.10/32"]


def test_resolve_refuses_unknown_host_and_variable(lab):
    with pytest.raises(InventoryError, match="'nope' is not in inventory"):
        lab.resolve("nope", "lab_address")
    with pytest.raises(InventoryError, match="gpu-node-1 has no variable no_such_var"):
        lab.resolve("gpu-node-1", "no_such_var")


def test_example_inventory_is_marked_production(example):
    assert example.production is True
    assert example.production_hosts == ("gpu-a01", "gpu-a02", "prometheus-1", "slurmctl-1")
    assert example.power_driver("gpu-a01") == "systemd"
    assert example.hosts["gpu-a01"].address == "10.20.0.11"
    assert example.hosts["gpu-a01"].user == "ops-deploy"
    assert example.hosts["gpu-a01"].port == 22


def test_ssh_aliases_win_as_in_ansible_and_args_combine(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    source = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            n1:
              ansible_host: 10.0.0.1
              ansible_ssh_host: 10.0.0.2
              ansible_port: 2200
              ansible_ssh_port: "2201"
              ansible_user: a
              ansible_ssh_user: b
              ansible_private_key_file: ~/k1
              ansible_ssh_private_key_file: ~/k2
              ansible_ssh_common_args: -o ProxyJump=bastion -o "User Known=x y"
              ansible_ssh_extra_args: -4
            n2: {}
        """,
    )
    inventory = load_inventory(source)
    n1 = inventory.hosts["n1"]
    assert (n1.address, n1.port, n1.user) == ("10.0.0.2", 2201, "b")
    assert n1.key_file == str(tmp_path / "k2")
    assert n1.ssh_args == ("-o", "ProxyJump=bastion", "-o", "User Known=x y", "-4")
    n2 = inventory.hosts["n2"]
    assert (n2.address, n2.port, n2.user, n2.key_file, n2.ssh_args) == ("n2", 22, None, None, ())
    assert inventory.power_driver("n2") == "systemd"


def test_nested_groups_give_hosts_every_ancestor(tmp_path):
    source = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            loose: {}
          children:
            site:
              children:
                rack_a:
                  hosts: {a1: {}, a2: {}}
                rack_b:
                  children:
                    rack_b_top:
                      hosts: {b1: {}}
        """,
    )
    inventory = load_inventory(source)
    assert set(inventory.hosts["b1"].groups) == {"site", "rack_b", "rack_b_top"}
    assert inventory.groups["site"] == ("a1", "a2", "b1")
    assert "all" not in inventory.hosts["a1"].groups
    assert set(inventory.groups["all"]) == {"loose", "a1", "a2", "b1"}


def test_templated_chaosgpu_and_connection_variables_are_rendered(tmp_path):
    source = write_inventory(
        tmp_path,
        """
        all:
          vars:
            base_port: 2000
            driver_choice: redfish
            unrelated: "{{ undefined_elsewhere }}"
          hosts:
            n1:
              ansible_port: "{{ base_port + 1 }}"
              ansible_host: "{{ inventory_hostname }}.mgmt"
              chaosgpu_power_driver: "{{ driver_choice }}"
              chaosgpu_redfish_address: "https://{{ inventory_hostname }}-bmc"
        """,
    )
    inventory = load_inventory(source)
    n1 = inventory.hosts["n1"]
    assert (n1.address, n1.port) == ("n1.mgmt", 2001)
    assert inventory.power_driver(n1) == "redfish"
    assert n1.vars["chaosgpu_redfish_address"] == "https://n1-bmc"
    # A variable chaosgpu does not need is left alone, even when it could not be rendered.
    assert n1.vars["unrelated"] == "{{ undefined_elsewhere }}"


def test_unrenderable_needed_variable_is_refused_naming_host_and_variable(tmp_path):
    source = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            n1:
              ansible_ssh_private_key_file: "{{ missing_dir }}/id_ed25519"
        """,
    )
    with pytest.raises(InventoryError) as refused:
        load_inventory(source)
    message = str(refused.value)
    assert "host n1" in message
    assert "ansible_ssh_private_key_file" in message
    assert "missing_dir" in message
    assert str(source) in message


def test_vault_encrypted_connection_variable_is_refused(tmp_path):
    # ansible-inventory --list prints an inline-encrypted string as {"__ansible_vault": ...}, password or not.
    encrypted = (
        "!vault |\n"
        "          $ANSIBLE_VAULT;1.1;AES256\n"
        "          62376636626638396564373534323834343230353562373939613538626339363832373764306366\n"
        "          3664306464633161333430323362303337306331376538320a656134393833326535383934386531\n"
        "          66646266366261366635656432323134623765616134303863656134666431646164356235623863\n"
        "          6639303636333766620a636261393365356234373037353831643830366635323634376630343639\n"
        "          3566\n"
    )
    source = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {}\n", {"all": f"ansible_user: {encrypted}"})
    with pytest.raises(InventoryError, match=r"host n1: ansible_user is vault-encrypted"):
        load_inventory(source)


def test_templates_are_refused_when_ansible_cannot_be_imported(tmp_path, monkeypatch):
    monkeypatch.setattr(inventory_module, "_ansible_templating", lambda: None)
    source = write_inventory(tmp_path, "all:\n  hosts:\n    n1:\n      ansible_host: '{{ x }}'\n")
    with pytest.raises(InventoryError, match=r"host n1: ansible_host is a Jinja template .*ansible-core"):
        load_inventory(source)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("chaosgpu_power_driver", "ipmi", r"chaosgpu_power_driver is 'ipmi', expected one of docker, systemd, redfish"),
        ("chaosgpu_environment", "prod", r"chaosgpu_environment is 'prod', expected one of production"),
        ("ansible_port", "ssh", r"ansible_port 'ssh' is not a number"),
        ("ansible_port", "70000", r"ansible_port 70000 is out of range"),
    ],
)
def test_bad_values_are_refused_naming_host_and_variable(tmp_path, variable, value, expected):
    source = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {}\n", {"all": f"{variable}: '{value}'\n"})
    with pytest.raises(InventoryError, match=rf"inventory {source}: host n1: {expected}"):
        load_inventory(source)


def test_any_production_host_marks_the_inventory(tmp_path):
    source = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            staging-1: {chaosgpu_environment: staging}
            prod-1: {chaosgpu_environment: production}
            plain: {}
        """,
    )
    inventory = load_inventory(source)
    assert inventory.production is True
    assert inventory.production_hosts == ("prod-1",)


def test_missing_inventory_names_the_path_and_ansible_stderr(tmp_path):
    missing = tmp_path / "no-such-inventory"
    with pytest.raises(InventoryError) as refused:
        load_inventory(missing)
    message = str(refused.value)
    assert f"inventory {missing}: ansible-inventory exited" in message
    assert "failed to parse inventory source" in message  # ansible-inventory's own stderr


def test_broken_yaml_is_refused_with_ansible_stderr(tmp_path):
    source = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {ansible_port: [\n")
    with pytest.raises(InventoryError, match=r"YAML parsing failed|Completely failed to parse"):
        load_inventory(source)


def test_missing_ansible_inventory_is_named(tmp_path):
    source = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {}\n")
    with pytest.raises(InventoryError, match="no-such-ansible-inventory not found"):
        load_inventory(source, ansible_inventory=str(tmp_path / "no-such-ansible-inventory"))


def test_inventory_without_hosts_is_refused(tmp_path):
    source = write_inventory(tmp_path, "all:\n  children:\n    empty: {}\n")
    with pytest.raises(InventoryError, match="has no hosts"):
        load_inventory(source)
