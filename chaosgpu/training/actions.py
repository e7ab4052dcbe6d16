"""Actions for the training-job experiment: submit the fake training job to Slurm (``sbatch --requeue``, the
script on stdin), power off the node Slurm runs it on, cancel it. Slurm is reached on the first host matching
``controller``; the job runs as the user chaosgpu logs in as there."""

import math
import shlex
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_transport
from chaosgpu.node import actions as node_actions
from chaosgpu.training import probes
from chaosgpu.training.probes import check_directory, check_job_name, first_host

__all__ = ["cancel_training_job", "power_off_training_node", "submit_training_job"]

_TIMEOUT_S = 60


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ActivityFailed(f"{name} must be a positive number, got {value!r}")
    return float(value)


def submit_training_job(  # noqa: PLR0913, PLR0917 - Chaos Toolkit passes arguments by keyword
    job_name: str,
    script: str,
    directory: str,
    checkpoint_interval_s: float = 30.0,
    step_s: float = 1.0,
    total_steps: int = 1800,
    controller: str = "slurm_controllers",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """Submit ``script`` (a path on this machine, relative to the working directory: the lab's
    experiments/lab/files/fake_training.py) as the Slurm batch job ``job_name`` with ``sbatch --requeue``, its
    records and checkpoints in ``directory`` on the nodes' shared storage, emptied first. The job gets
    TRAINING_DIR, CHECKPOINT_INTERVAL_S, STEP_S and TOTAL_STEPS in its environment. Refused while a job of that
    name is still pending or running. Returns ``{"job_id", "directory", "controller"}``."""
    try:
        name, where = check_job_name(job_name), check_directory(directory)
    except ValueError as err:
        raise ActivityFailed(f"submit_training_job: {err}") from None
    interval, step = _positive("checkpoint_interval_s", checkpoint_interval_s), _positive("step_s", step_s)
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ActivityFailed(f"total_steps must be a positive whole number, got {total_steps!r}")
    try:
        text = Path(script).read_text(encoding="utf-8")
    except OSError as err:
        raise ActivityFailed(f"submit_training_job: script {script!r} cannot be read: {err}") from None
    current = probes.training_job(name, controller, configuration)
    if current["state"] in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED"):
        raise ActivityFailed(f"submit_training_job: job {name} ({current['job_id']}) is still {current['state']}")
    host = first_host(configuration, controller, "submit_training_job")
    env = f"ALL,TRAINING_DIR={where},CHECKPOINT_INTERVAL_S={interval:g},STEP_S={step:g},TOTAL_STEPS={total_steps}"
    quoted = shlex.quote(where)
    command = (
        f"mkdir -p {quoted} && rm -f {quoted}/records.jsonl {quoted}/checkpoint.json && "
        f"sbatch --parsable --requeue --nodes=1 --ntasks=1 --gres=gpu:1 -J {name} -D {quoted} "
        f"-o {shlex.quote(where + '/slurm-%j.out')} "
        f"--export={shlex.quote(env)}"
    )
    result = get_transport().run(host, command, timeout=_TIMEOUT_S, stdin=text)
    job_id = result.stdout.strip().split(";")[0]
    if result.rc != 0 or not job_id.isdigit():
        detail = (result.stdout + result.stderr).strip()[-300:]
        raise ActivityFailed(f"submit_training_job: {host.name}: sbatch exited {result.rc}: {detail}")
    return {"job_id": job_id, "directory": where, "controller": host.name}


def power_off_training_node(
    job_name: str,
    controller: str = "slurm_controllers",
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Cut the power (``chaosgpu.node.actions.power_off`` with ``force``: a power loss, not a shutdown) of the node
    Slurm runs the job ``job_name`` on, found with ``training_job``; it comes back at ``duration_s`` or by
    ``chaosgpu.node.actions.power_on``. Fails when the job is not running. Returns power_off's answer plus
    ``node`` and ``job_id``."""
    job = probes.training_job(job_name, controller, configuration, secrets)
    if job["state"] != "RUNNING" or not job["node"]:
        raise ActivityFailed(f"power_off_training_node: job {job_name} is not running (state {job['state']!r})")
    done = node_actions.power_off(
        job["node"], force=True, duration_s=duration_s, configuration=configuration, secrets=secrets
    )
    return done | {"node": job["node"], "job_id": job["job_id"]}


def cancel_training_job(
    job_name: str,
    controller: str = "slurm_controllers",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """Cancel every job named ``job_name`` of the user chaosgpu logs in as (``scancel -n``; nothing to cancel is
    fine): the rollback of ``submit_training_job``. Returns ``{"controller", "cancelled": job_name}``."""
    try:
        name = check_job_name(job_name)
    except ValueError as err:
        raise ActivityFailed(f"cancel_training_job: {err}") from None
    host = first_host(configuration, controller, "cancel_training_job")
    result = get_transport().run(host, f"scancel -n {name}", timeout=_TIMEOUT_S)
    if result.rc != 0:
        detail = (result.stdout + result.stderr).strip()[-300:]
        raise ActivityFailed(f"cancel_training_job: {host.name}: scancel exited {result.rc}: {detail}")
    return {"controller": host.name, "cancelled": name}
