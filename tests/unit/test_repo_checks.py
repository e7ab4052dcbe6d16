"""The repository's own checks: argument specs vs defaults, generated role docs, collection contents."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import check_argument_specs
import role_docs


def _role(tmp_path: Path, defaults: str, spec: str, task: str = "") -> Path:
    role = tmp_path / "roles" / "demo"
    for sub in ("defaults", "meta", "tasks"):
        (role / sub).mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text(textwrap.dedent(defaults))
    (role / "meta" / "argument_specs.yml").write_text(textwrap.dedent(spec))
    (role / "tasks" / "main.yml").write_text(textwrap.dedent(task) or "---\n[]\n")
    return role


SPEC = """\
    argument_specs:
      main:
        options:
          demo_port:
            type: int
            default: 9100
            description: Port.
          demo_mode:
            type: str
            default: fast
            description: Mode.
"""


def test_every_role_in_the_repo_is_consistent(repo_root):
    roles = check_argument_specs.find_roles(repo_root / "roles")  # the roles `make lint` checks
    assert {"node_exporter", "nvidia_driver", "gpu_simulator"} <= {role.name for role in roles}
    problems = [p for role in roles for p in check_argument_specs.check_role(role)]
    assert problems == []


def test_consistent_role_passes(tmp_path):
    role = _role(tmp_path, "demo_port: 9100\ndemo_mode: fast\n", SPEC)
    assert check_argument_specs.check_role(role) == []


def test_differing_default_value_is_reported(tmp_path):
    role = _role(tmp_path, "demo_port: 9200\ndemo_mode: fast\n", SPEC)
    assert check_argument_specs.check_role(role) == [
        "demo: demo_port defaults differ: defaults/main.yml has 9200, meta/argument_specs.yml has 9100"
    ]


def test_missing_and_extra_keys_are_reported(tmp_path):
    role = _role(tmp_path, "demo_port: 9100\ndemo_extra: 1\n", SPEC)
    problems = check_argument_specs.check_role(role)
    assert "demo: demo_extra is in defaults/main.yml but not in meta/argument_specs.yml" in problems
    assert any("demo_mode has a default in the spec but is missing" in p for p in problems)


def test_undeclared_variable_used_by_a_task_is_reported(tmp_path):
    task = """\
        - name: Use an undeclared option
          ansible.builtin.debug:
            msg: "{{ demo_secret_flag }} {{ _demo_internal }} {{ __demo_registered }}"
    """
    role = _role(tmp_path, "demo_port: 9100\ndemo_mode: fast\n", SPEC, task)
    assert check_argument_specs.check_role(role) == [
        "demo: demo_secret_flag is used by the role but not declared in meta/argument_specs.yml"
    ]


def test_role_readmes_are_generated_from_specs(repo_root):
    for spec in repo_root.glob("roles/*/meta/argument_specs.yml"):
        readme = (spec.parent.parent / "README.md").read_text()
        assert role_docs.update(spec.parent.parent / "README.md", role_docs.render(spec)) == readme


def test_rendered_table_shows_code_markup_and_choices(tmp_path):
    spec = tmp_path / "argument_specs.yml"
    spec.write_text(
        "argument_specs:\n  main:\n    options:\n      demo_mode:\n        type: str\n        default: fast\n"
        "        choices: [fast, safe]\n        description: Like C(fast) or O(demo_port=1).\n"
    )
    table = role_docs.render(spec)
    assert "| `demo_mode` | str | `fast` | Like `fast` or `demo_port=1`. Choices: `fast`, `safe`. |" in table


def test_collection_tarball_has_roles_but_no_tests(repo_root, tmp_path):
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run(
        [galaxy, "collection", "build", "--output-path", tmp_path, repo_root],
        check=True,
        capture_output=True,
        cwd=repo_root,
    )
    (tarball,) = tmp_path.glob("gpuops-fleet-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "roles/node_exporter/tasks/main.yml" in names
    assert "roles/node_exporter/meta/argument_specs.yml" in names
    assert "plugins/filter/bcrypt_hash.py" in names
    assert "plugins/modules/nvidia_smi_info.py" in names
    assert "meta/runtime.yml" in names
    top_level = {name.split("/", 1)[0] for name in names}
    excluded = {"tests", "molecule", "bench", "reports", "chaosgpu", "experiments", "lab", ".venv", ".collections"}
    assert top_level.isdisjoint(excluded), top_level & excluded
