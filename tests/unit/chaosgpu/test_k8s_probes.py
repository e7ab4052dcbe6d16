"""chaosgpu.k8s.probes against a fake Kubernetes API server on 127.0.0.1 (real kubernetes client, real chaosk8s client
helper): allocatable GPUs per node, a node whose device plugin is gone, a cordoned node, the daemonset pods, API
errors, recovery within wait_s on a fake clock."""

from __future__ import annotations

import importlib.util
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed
from k8sfake import FakeClock, FakeCluster, gpu_node, install_clock, pod, serve

import chaosgpu
from chaosgpu.k8s.probes import allocatable_gpus, gpu_nodes_ready, gpus_allocatable_at_least, pods_ready


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeCluster]:
    yield from serve(monkeypatch, tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


PLUGIN = {"app": "nvidia-device-plugin-daemonset"}
PLUGIN_SELECTOR = "app=nvidia-device-plugin-daemonset"


def test_allocatable_gpus_reports_each_gpu_node(fake_cluster: FakeCluster) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", gpus=4), gpu_node("cpu-1", labels={"role": "cpu"})]
    assert allocatable_gpus() == {
        "gpu-a": {"allocatable": 8, "capacity": 8, "ready": True, "schedulable": True},
        "gpu-b": {"allocatable": 4, "capacity": 4, "ready": True, "schedulable": True},
    }
    sent = urllib.parse.parse_qs(urllib.parse.urlsplit(fake_cluster.requests[-1]).query)
    assert sent["labelSelector"] == ["nvidia.com/gpu.present=true"]


def test_allocatable_drops_below_capacity_when_the_device_plugin_is_gone(fake_cluster: FakeCluster) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", allocatable=0)]
    assert allocatable_gpus()["gpu-b"] == {"allocatable": 0, "capacity": 8, "ready": True, "schedulable": True}
    assert gpus_allocatable_at_least(16) is False
    assert gpus_allocatable_at_least(8) is True


def test_a_cordoned_node_is_reported_and_its_gpus_not_counted(fake_cluster: FakeCluster) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", cordoned=True)]
    assert allocatable_gpus()["gpu-b"]["schedulable"] is False
    assert gpus_allocatable_at_least(16) is False
    assert gpus_allocatable_at_least(16, count_unschedulable=True) is True
    assert gpu_nodes_ready(min_count=2) is False
    assert gpu_nodes_ready(min_count=1) is False, "every GPU node must be schedulable, not just min_count of them"
    assert gpu_nodes_ready(min_count=2, require_schedulable=False) is True
    assert gpu_nodes_ready(min_count=3, require_schedulable=False) is False, "a GPU node is missing"


def test_a_not_ready_node_counts_nowhere(fake_cluster: FakeCluster) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", ready=False)]
    assert allocatable_gpus()["gpu-b"]["ready"] is False
    assert gpus_allocatable_at_least(16, count_unschedulable=True) is False
    assert gpu_nodes_ready(min_count=1, require_schedulable=False) is False


def test_no_matching_node_is_an_empty_reading_and_not_enough(fake_cluster: FakeCluster) -> None:
    fake_cluster.nodes = [gpu_node("cpu-1", labels={"role": "cpu"})]
    assert allocatable_gpus() == {}
    assert gpus_allocatable_at_least(1) is False
    assert gpus_allocatable_at_least(0) is True
    assert gpu_nodes_ready() is False


def test_another_resource_and_selector(fake_cluster: FakeCluster) -> None:
    node = gpu_node("mig-a", labels={"pool": "mig"})
    node["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "7"
    fake_cluster.nodes = [node, gpu_node("gpu-a")]
    reading = allocatable_gpus(label_selector="pool=mig", resource="nvidia.com/mig-1g.10gb")
    assert reading == {"mig-a": {"allocatable": 7, "capacity": 0, "ready": True, "schedulable": True}}


def test_pods_ready_counts_running_ready_pods_not_being_deleted(fake_cluster: FakeCluster) -> None:
    fake_cluster.pods["gpu-operator"] = [
        pod("plugin-a", PLUGIN, node="gpu-a"),
        pod("plugin-b", PLUGIN, node="gpu-b", ready=False),
        pod("plugin-c", PLUGIN, node="gpu-c", deleting=True),
        pod("plugin-d", PLUGIN, node="gpu-d", phase="Pending", ready=False),
        pod("dcgm-a", {"app": "nvidia-dcgm-exporter"}, node="gpu-a"),
    ]
    assert pods_ready("gpu-operator", PLUGIN_SELECTOR, min_count=1) is True
    assert pods_ready("gpu-operator", PLUGIN_SELECTOR, min_count=2) is False
    assert pods_ready("gpu-operator", "app=nvidia-dcgm-exporter", min_count=1) is True
    assert "/api/v1/namespaces/gpu-operator/pods?" in fake_cluster.requests[-1]


def test_an_api_error_on_pods_names_the_namespace_and_says_why(fake_cluster: FakeCluster) -> None:
    fake_cluster.errors["/api/v1/namespaces/gpu-operator/"] = (
        403,
        'pods is forbidden: User "chaos" cannot list resource "pods" in the namespace "gpu-operator"',
    )
    with pytest.raises(ActivityFailed, match=r"namespace gpu-operator failed: HTTP 403 .*cannot list resource"):
        pods_ready("gpu-operator", PLUGIN_SELECTOR)


@pytest.mark.usefixtures("fake_cluster")
def test_an_unknown_namespace_is_named() -> None:
    with pytest.raises(ActivityFailed, match=r"in namespace gpu-opertor failed: HTTP 404 .*not found"):
        pods_ready("gpu-opertor", PLUGIN_SELECTOR)


def test_an_api_error_on_nodes_names_the_selector(fake_cluster: FakeCluster) -> None:
    fake_cluster.errors["/api/v1/nodes"] = (403, 'nodes is forbidden: User "chaos" cannot list resource "nodes"')
    with pytest.raises(ActivityFailed, match=r"nodes labelled 'nvidia.com/gpu.present=true' failed: HTTP 403"):
        allocatable_gpus()
    with pytest.raises(ActivityFailed, match=r"HTTP 403"):
        gpus_allocatable_at_least(8)


def test_a_malformed_quantity_names_the_node(fake_cluster: FakeCluster) -> None:
    node = gpu_node("gpu-a")
    node["status"]["allocatable"]["nvidia.com/gpu"] = "eight"
    fake_cluster.nodes = [node]
    with pytest.raises(ActivityFailed, match=r"node gpu-a: allocatable nvidia.com/gpu='eight'"):
        allocatable_gpus()


@pytest.mark.usefixtures("fake_cluster")
def test_an_api_server_that_does_not_answer_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_HOST", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ActivityFailed, match=r"listing the nodes .* the API server did not answer"):
        allocatable_gpus()


def test_allocatable_coming_back_within_wait_s_holds(fake_cluster: FakeCluster, clock: FakeClock) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", allocatable=0)]
    restored = [gpu_node("gpu-a"), gpu_node("gpu-b")]
    clock.on_sleep = [lambda: None, lambda: setattr(fake_cluster, "nodes", restored)]
    assert gpus_allocatable_at_least(16, wait_s=60) is True
    assert clock.slept == [5.0, 5.0]


def test_allocatable_not_back_within_wait_s_fails_after_polling_until_the_deadline(
    fake_cluster: FakeCluster, clock: FakeClock
) -> None:
    fake_cluster.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b", allocatable=0)]
    assert gpus_allocatable_at_least(16, wait_s=12) is False
    assert clock.slept == [5.0, 5.0, 2.0]


def test_wait_s_zero_reads_once(fake_cluster: FakeCluster, clock: FakeClock) -> None:
    fake_cluster.pods["gpu-operator"] = [pod("plugin-a", PLUGIN, ready=False)]
    assert pods_ready("gpu-operator", PLUGIN_SELECTOR) is False
    assert clock.slept == []
    assert len(fake_cluster.requests) == 1


def test_an_api_error_while_waiting_is_retried_then_raised_if_it_lasts(
    fake_cluster: FakeCluster, clock: FakeClock
) -> None:
    fake_cluster.pods["gpu-operator"] = [pod("plugin-a", PLUGIN)]
    fake_cluster.errors["/api/v1/namespaces/gpu-operator/"] = (503, "etcdserver: leader changed")
    clock.on_sleep = [fake_cluster.errors.clear]
    assert pods_ready("gpu-operator", PLUGIN_SELECTOR, wait_s=30) is True

    fake_cluster.errors["/api/v1/namespaces/gpu-operator/"] = (503, "etcdserver: leader changed")
    with pytest.raises(ActivityFailed, match=r"namespace gpu-operator failed: HTTP 503 .*leader changed"):
        pods_ready("gpu-operator", PLUGIN_SELECTOR, wait_s=10)


def test_the_secrets_reach_chaosk8s_client(fake_cluster: FakeCluster, monkeypatch) -> None:
    """KUBERNETES_HOST from the experiment's secrets (chaosk8s's lookup) wins over the environment."""
    fake_cluster.nodes = [gpu_node("gpu-a")]
    monkeypatch.setenv("KUBERNETES_HOST", "http://127.0.0.1:9")
    assert allocatable_gpus(secrets={"KUBERNETES_HOST": fake_cluster.url}) == {
        "gpu-a": {"allocatable": 8, "capacity": 8, "ready": True, "schedulable": True}
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gpus_allocatable_at_least(-1), "expected must be an integer >= 0, got -1"),
        (lambda: gpus_allocatable_at_least("8"), "expected must be an integer >= 0, got '8'"),
        (lambda: gpus_allocatable_at_least(8, wait_s=-5), "wait_s must be a number of seconds >= 0, got -5"),
        (lambda: gpus_allocatable_at_least(8, count_unschedulable="no"), "count_unschedulable must be true or false"),
        (lambda: gpu_nodes_ready(min_count=0), "min_count must be an integer >= 1, got 0"),
        (lambda: gpu_nodes_ready(require_schedulable="false"), "require_schedulable must be true or false"),
        (lambda: pods_ready("", PLUGIN_SELECTOR), "namespace must be a non-empty string, got ''"),
        (lambda: pods_ready("gpu-operator", PLUGIN_SELECTOR, wait_s=float("nan")), "wait_s must be a number"),
        (lambda: allocatable_gpus(resource=""), "resource must be a non-empty string"),
    ],
)
def test_bad_input_is_refused_by_name_before_the_cluster_is_read(fake_cluster: FakeCluster, call, message) -> None:
    with pytest.raises(ActivityFailed, match=message.replace("(", r"\(")):
        call()
    assert fake_cluster.requests == []


def test_discovery_lists_the_k8s_probes_and_leaves_them_out_without_chaostoolkit_kubernetes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def listed() -> set[tuple[str, str]]:
        return {(a["mod"], a["name"]) for a in chaosgpu.load_exported_activities()}

    assert ("chaosgpu.k8s.probes", "gpus_allocatable_at_least") in listed()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "chaosk8s" else real_find_spec(name, *a)
    )
    without = listed()
    assert not {mod for mod, _ in without if mod.startswith("chaosgpu.k8s.")}
    assert ("chaosgpu.gpu.probes", "gpu_count") in without
