"""Kubernetes probes for GPU clusters: what the nodes offer of a GPU resource, whether the GPU nodes take pods, and
whether the pods of a selector (the device plugin's, dcgm-exporter's, a GPU workload's) are ready.

They read the cluster through ``chaosk8s.create_k8s_api_client``, so they connect as chaostoolkit-kubernetes's
actions do: ``$KUBECONFIG`` (or ~/.kube/config, context from ``KUBERNETES_CONTEXT``), in a pod with
``CHAOSTOOLKIT_IN_POD=true`` the service account, else the ``KUBERNETES_HOST``/``KUBERNETES_API_KEY``/... values
from the secrets or the environment. Read-only: they need ``get``/``list`` on nodes and on pods of the namespace.

The ``*_at_least``/``*_ready`` probes return true or false and take ``wait_s``: they poll every 5 seconds until the
condition holds or ``wait_s`` seconds have passed, so a steady-state hypothesis checked after a fault measures
recovery within that time (and returns at once when the cluster is healthy). A failing API request (forbidden,
unknown namespace, API server unreachable) raises ActivityFailed naming what was read, unless a later poll within
``wait_s`` succeeds.
"""

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosgpu.k8s.cluster import (
    REQUEST_TIMEOUT_S,
    api_call,
    check_count,
    check_flag,
    check_seconds,
    check_text,
    core_v1,
    node_name,
    node_reading,
    pod_name,
    pod_ready,
    poll,
)

__all__ = ["allocatable_gpus", "gpu_nodes_ready", "gpus_allocatable_at_least", "pods_ready"]

GPU_NODE_SELECTOR = "nvidia.com/gpu.present=true"
GPU_RESOURCE = "nvidia.com/gpu"


def _read_nodes(label_selector: str, resource: str, secrets: Secrets | None) -> dict[str, dict[str, Any]]:
    check_text("label_selector", label_selector)
    check_text("resource", resource, empty_ok=False)
    v1 = core_v1(secrets)
    nodes = api_call(
        f"listing the nodes labelled {label_selector!r}",
        lambda: v1.list_node(label_selector=label_selector or None, _request_timeout=REQUEST_TIMEOUT_S),
    )
    return {node_name(node): node_reading(node, resource) for node in nodes.items}


def _describe(nodes: dict[str, dict[str, Any]], resource: str) -> str:
    if not nodes:
        return "no node matches"
    return "; ".join(
        f"{name}: {r['allocatable']}/{r['capacity']} {resource} allocatable, "
        f"{'Ready' if r['ready'] else 'NotReady'}, {'schedulable' if r['schedulable'] else 'cordoned'}"
        for name, r in sorted(nodes.items())
    )


def allocatable_gpus(
    label_selector: str = GPU_NODE_SELECTOR,
    resource: str = GPU_RESOURCE,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,
) -> dict[str, dict[str, Any]]:
    """What each node matching ``label_selector`` (an empty selector: every node) offers of ``resource``: node name
    -> {"allocatable": int, "capacity": int, "ready": bool, "schedulable": bool}. ``allocatable`` drops below
    ``capacity`` when the device plugin stops advertising GPUs (plugin gone, GPUs unhealthy); ``schedulable`` is
    false on a cordoned node; a node without the resource reports 0/0. No matching node: an empty mapping."""
    return _read_nodes(label_selector, resource, secrets)


def gpus_allocatable_at_least(
    expected: int,
    label_selector: str = GPU_NODE_SELECTOR,
    resource: str = GPU_RESOURCE,
    count_unschedulable: bool = False,
    wait_s: float = 0.0,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,
) -> bool:
    """Whether the nodes matching ``label_selector`` that are Ready, and schedulable unless
    ``count_unschedulable``, together offer at least ``expected`` allocatable ``resource`` (GPUs new pods could
    get). Polls until it holds or ``wait_s`` seconds have passed."""
    want = check_count("expected", expected)
    wait = check_seconds("wait_s", wait_s)
    check_flag("count_unschedulable", count_unschedulable)

    def check() -> tuple[bool, str]:
        nodes = _read_nodes(label_selector, resource, secrets)
        usable = sum(
            r["allocatable"] for r in nodes.values() if r["ready"] and (r["schedulable"] or count_unschedulable)
        )
        return usable >= want, f"{usable} usable, {want} expected; {_describe(nodes, resource)}"

    return poll(check, wait, f"at least {want} allocatable {resource} on nodes labelled {label_selector!r}")


def gpu_nodes_ready(
    label_selector: str = GPU_NODE_SELECTOR,
    min_count: int = 1,
    require_schedulable: bool = True,
    wait_s: float = 0.0,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,
) -> bool:
    """Whether at least ``min_count`` nodes match ``label_selector`` and every one of them is Ready and, when
    ``require_schedulable``, not cordoned: one NotReady or cordoned GPU node makes it false, and so does a node
    gone from the cluster when ``min_count`` is the number of GPU nodes. Polls until it holds or ``wait_s`` seconds
    have passed."""
    want = check_count("min_count", min_count, minimum=1)
    wait = check_seconds("wait_s", wait_s)
    check_flag("require_schedulable", require_schedulable)

    def check() -> tuple[bool, str]:
        nodes = _read_nodes(label_selector, GPU_RESOURCE, secrets)
        good = [n for n, r in nodes.items() if r["ready"] and (r["schedulable"] or not require_schedulable)]
        holds = len(nodes) >= want and len(good) == len(nodes)
        return holds, f"{len(good)} of {len(nodes)} nodes ready, at least {want} wanted; {_describe(nodes, '')}"

    return poll(check, wait, f"all of at least {want} nodes labelled {label_selector!r} ready")


def pods_ready(
    namespace: str,
    label_selector: str,
    min_count: int = 1,
    wait_s: float = 0.0,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,
) -> bool:
    """Whether at least ``min_count`` pods matching ``label_selector`` in ``namespace`` are Running and Ready and
    not being deleted (for a DaemonSet such as the device plugin's: one per GPU node). Polls until it holds or
    ``wait_s`` seconds have passed."""
    ns = check_text("namespace", namespace, empty_ok=False)
    check_text("label_selector", label_selector)
    want = check_count("min_count", min_count, minimum=1)
    wait = check_seconds("wait_s", wait_s)

    def check() -> tuple[bool, str]:
        v1 = core_v1(secrets)
        pods = api_call(
            f"listing the pods labelled {label_selector!r} in namespace {ns}",
            lambda: v1.list_namespaced_pod(
                ns, label_selector=label_selector or None, _request_timeout=REQUEST_TIMEOUT_S
            ),
        )
        ready = sorted(pod_name(p) for p in pods.items if pod_ready(p))
        return len(ready) >= want, f"{len(ready)} of {len(pods.items)} ready ({', '.join(ready) or 'none'})"

    return poll(check, wait, f"{want} ready pods labelled {label_selector!r} in namespace {ns}")
