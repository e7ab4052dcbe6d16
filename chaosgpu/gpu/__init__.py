"""GPU faults and probes: XIDs (through DCGM and the kernel log), memory errors (ECC, retired pages, row remapping),
GPU memory pressure and compute burn, killed GPU processes, stopped GPU services and compute-mode changes; probes of
the GPUs (nvidia-smi), DCGM health, Prometheus and its alerts, and XIDs in the kernel log.

The host-side commands and the parsers live in ``chaosgpu.gpu.commands`` (standard library only, shared with
``scripts/gpu-check.py``); ``actions`` and ``probes`` are the Chaos Toolkit activities.

Host variables (inventory) that the GPU activities read, all optional:

``chaosgpu_kmsg_path``
    The node's kernel-log source, where XID lines are written and read (default ``/dev/kmsg``; the lab sets the
    simulator's file, ``gpu_simulator_kernel_log``).
``chaosgpu_xid_recovery_command``
    What reverting an XID fault runs (a shell command, with ``CHAOSGPU_GPUS`` and ``CHAOSGPU_XID`` set). Empty by
    default: an XID cannot be undone, and recovering a GPU is gpu_health's job, so the revert is a no-op recorded as
    such. The lab sets ``gpusim boot`` (what a reboot does to the simulated GPUs).
``chaosgpu_gpu_load_tool``
    ``auto`` (default: PyTorch, else CuPy in ``chaosgpu_gpu_load_python``, else the lab's ``gpusim-hog``), ``torch``,
    ``cupy`` or ``gpusim-hog``.
``chaosgpu_gpu_load_python``
    The Python that has the CUDA stack (default ``python3``), e.g. a virtual environment's.
"""
