"""Node faults and probes: services, processes, CPU/memory load, disk space, power.

``chaosgpu.node.actions`` injects faults on the hosts of the inventory, each through the fault ledger (recorded
on the host with a deadline the host enforces) except the power actions, whose host is off: ``power_off`` is
guarded on the controller instead (chaosgpu.node.power_guard) and ``power_on`` is its rollback.
``chaosgpu.node.probes`` reads: service states, SSH reachability, HTTP checks.

The shell commands the faults run on the hosts are built in ``chaosgpu.node.commands``.
"""
