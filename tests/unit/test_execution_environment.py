"""execution-environment.yml: `ansible-builder create` accepts it and lays out a build context that installs the
collection tarball and the chaosgpu wheel (issue #10's scale-out point). No image is built: that needs a registry.

The definition is copied with ee/ into a temporary directory, with a real collection tarball (ansible-galaxy
collection build of this checkout) and a placeholder wheel file (only copied by `create`, never installed here).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _builder() -> Path:
    builder = BIN / "ansible-builder"
    if not builder.exists():
        pytest.fail(f"ansible-builder is not in the virtualenv ({builder}); run `make setup`")
    return builder


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", out, ROOT],
        check=True,
        capture_output=True,
        text=True,
    )
    (tarball,) = out.glob("gpuops-fleet-*.tar.gz")
    return tarball


def _project(tmp_path: Path, tarball: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "execution-environment.yml", project)
    shutil.copytree(ROOT / "ee", project / "ee")
    dist = project / "build" / "ee-dist"
    dist.mkdir(parents=True)
    shutil.copy(tarball, dist)
    (dist / "chaosgpu-0.1.0-py3-none-any.whl").write_bytes(b"placeholder: copied by create, never installed")
    return project


def _create(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _builder(),
            "create",
            "--file",
            "execution-environment.yml",
            "--context",
            "ctx",
            "--output-filename",
            "Containerfile",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


def test_create_lays_out_a_context_that_installs_the_collection_and_chaosgpu(
    tmp_path: Path, collection_tarball: Path
) -> None:
    project = _project(tmp_path, collection_tarball)
    result = _create(project)
    assert result.returncode == 0, result.stdout + result.stderr
    context = project / "ctx"
    containerfile = (context / "Containerfile").read_text()
    assert "quay.io/centos/centos:stream9" in containerfile
    assert "ansible-core==2.19.14" in containerfile
    assert "ansible-galaxy collection install --offline /tmp/gpuops-dist/gpuops-fleet-*.tar.gz" in containerfile
    assert "pip install --no-cache-dir /tmp/gpuops-dist/chaosgpu-*.whl" in containerfile
    assert (context / "_build" / "dist" / collection_tarball.name).is_file()
    assert (context / "_build" / "dist" / "chaosgpu-0.1.0-py3-none-any.whl").is_file()
    # The dependency files are the ones in ee/, copied as they are.
    assert "chaostoolkit-lib==1.44.0" in (context / "_build" / "requirements.txt").read_text()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {c["name"] for c in galaxy["collections"]} == {"ansible.posix", "community.general", "community.docker"}
    assert "openssh-clients [platform:rpm]" in (context / "_build" / "bindep.txt").read_text()


def test_the_collection_tarball_carries_the_playbooks_and_no_development_files(collection_tarball: Path) -> None:
    with tarfile.open(collection_tarball) as tar:
        names = tar.getnames()
    assert "playbooks/site.yml" in names
    assert "playbooks/gameday.yml" in names
    for dev in ("ee/", "execution-environment.yml", "build/", "chaosgpu/", "molecule/", "tests/"):
        assert not any(n == dev.rstrip("/") or n.startswith(dev) for n in names), dev


def test_the_collection_dependencies_agree_everywhere() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    for path in (ROOT / "requirements.yml", ROOT / "ee" / "requirements.yml"):
        listed = {c["name"]: c["version"] for c in yaml.safe_load(path.read_text())["collections"]}
        assert listed == galaxy, path
