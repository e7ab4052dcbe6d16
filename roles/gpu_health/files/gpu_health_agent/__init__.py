"""gpu_health agent: watches a GPU node's GPUs and reacts to failures by policy (standard library only).

It runs on the GPU host as a systemd service (``python3 -m gpu_health_agent --config /etc/gpu_health/agent.json``):
sources (``nvidia-smi``, ``dcgmi health``, the kernel log's XID lines) produce findings; the policy engine, a pure
state machine, turns them into actions (drain, GPU reset, reboot, RMA, undrain) under guards; action plugins carry
them out through one injectable command runner; state, metrics (node_exporter textfile) and journal events record
what happened.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
