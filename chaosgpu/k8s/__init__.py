"""Kubernetes probes for GPU clusters: allocatable GPUs per node, GPU node readiness, ready pods of a selector.

``chaosgpu.k8s.probes`` reads the cluster through chaostoolkit-kubernetes's client helper
(``chaosk8s.create_k8s_api_client``), so a kubeconfig, an in-cluster service account or the ``KUBERNETES_*``
environment variables/secrets work exactly as they do for chaosk8s's own actions (drain, terminate pods), which
the experiments in ``experiments/kubernetes/`` use for the faults. The helpers behind the probes live in
``chaosgpu.k8s.cluster``.
"""
