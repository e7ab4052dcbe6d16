"""Probes of a training job on Slurm: where Slurm runs it, and what its own records (on storage the nodes share)
say about its interruptions. The records are read with one SSH call on the first host matching ``pattern`` (any
host that mounts the shared storage: the lab's ops-1 does); Slurm is asked on the first host matching
``controller`` (``scontrol -o show job``). See chaosgpu.training.records for the record format and the summary.
"""

import math
import re
import shlex
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import run_on, targets
from chaosgpu.polling import until
from chaosgpu.training.records import RecordsError, summarize
from chaosgpu.types import Host

__all__ = ["training_checkpointed", "training_job", "training_progress", "training_resumed"]

RECORDS_FILE = "records.jsonl"
_TIMEOUT_S = 30
_FIELD = re.compile(r"(?:^|\s)(\w+)=(.*?)(?=\s\w+=|$)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_job_name(job_name: str) -> str:
    """The job name, refused (ValueError naming it) unless it is a plain name."""
    if not isinstance(job_name, str) or not _NAME.fullmatch(job_name):
        raise ValueError(f"job_name must be a plain name (letters, digits, . _ -), got {job_name!r}")
    return job_name


def check_directory(directory: str) -> str:
    """The shared directory, refused (ValueError naming it) unless absolute and free of '..'."""
    if not isinstance(directory, str) or not directory.startswith("/") or ".." in directory.split("/"):
        raise ValueError(f"directory must be an absolute path on the shared storage, got {directory!r}")
    return directory.rstrip("/") or "/"


def first_host(configuration: Configuration | None, pattern: str, what: str) -> Host:
    """The first host matching ``pattern``; ActivityFailed naming ``what`` when none does."""
    hosts = list(targets(configuration, pattern, guard=False).hosts)
    if not hosts:
        raise ActivityFailed(f"{what}: no host matches {pattern!r}")
    return hosts[0]


def parse_jobs(text: str, job_name: str) -> list[dict[str, Any]]:
    """``scontrol -o show job`` -> the jobs named ``job_name``, newest (highest id) first:
    ``{"job_id", "state", "node", "restarts", "reason"}``."""
    jobs = []
    for line in text.splitlines():
        fields = {k: v.strip() for k, v in _FIELD.findall(line)}
        if fields.get("JobName") != job_name or "JobId" not in fields:
            continue
        node = fields.get("BatchHost") or fields.get("NodeList") or ""
        jobs.append(
            {
                "job_id": fields["JobId"],
                "state": fields.get("JobState", ""),
                "node": "" if node == "(null)" else node,
                "restarts": int(fields.get("Restarts", "0") or 0),
                "reason": fields.get("Reason", ""),
            }
        )
    return sorted(jobs, key=lambda j: int(j["job_id"]) if j["job_id"].isdigit() else 0, reverse=True)


def training_job(
    job_name: str,
    controller: str = "slurm_controllers",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """The newest Slurm job named ``job_name`` as slurmctld (on the first host matching ``controller``) has it:
    ``{"job_id", "state": "RUNNING"|"PENDING"|..., "node": the batch host ("" while pending), "restarts": how often
    Slurm requeued it, "reason"}``; ``{"job_id": "", "state": "", ...}`` when there is none. Fails when scontrol
    does not answer."""
    try:
        name = check_job_name(job_name)
    except ValueError as err:
        raise ActivityFailed(f"training_job: {err}") from None
    host = first_host(configuration, controller, "training_job")
    result = run_on([host], "scontrol -o show job", timeout=_TIMEOUT_S)[host.name]
    if result.rc != 0 and "No jobs in the system" not in result.stdout + result.stderr:
        detail = (result.stdout + result.stderr).strip()[-300:]
        raise ActivityFailed(f"training_job: {host.name}: scontrol -o show job exited {result.rc}: {detail}")
    jobs = parse_jobs(result.stdout, name)
    return jobs[0] if jobs else {"job_id": "", "state": "", "node": "", "restarts": 0, "reason": ""}


def _records(configuration: Configuration | None, pattern: str, directory: str) -> dict[str, Any]:
    try:
        path = f"{check_directory(directory)}/{RECORDS_FILE}"
    except ValueError as err:
        raise ActivityFailed(f"training_progress: {err}") from None
    host = first_host(configuration, pattern, "training_progress")
    command = f"date +%s; cat {shlex.quote(path)}"
    result = run_on([host], command, timeout=_TIMEOUT_S)[host.name]
    if result.rc != 0:
        detail = (result.stdout + result.stderr).strip()[-300:]
        raise ActivityFailed(f"training_progress: {host.name}: reading {path} exited {result.rc}: {detail}")
    clock, _, text = result.stdout.partition("\n")
    try:
        summary = summarize(text)
    except RecordsError as err:
        raise ActivityFailed(f"training_progress: {host.name}:{path}: {err}") from None
    return summary | {"host_time": float(clock)}


def training_progress(
    directory: str,
    pattern: str = "slurm_controllers",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """The summary of the training job's records in ``directory``/records.jsonl (chaosgpu.training.records:
    runs, interruptions with ``resume_s`` and ``work_lost_s``, done, last step), read on the first host matching
    ``pattern``, plus ``host_time`` (that host's clock). Fails when the records cannot be read or are not a
    training job's, naming the line."""
    return _records(configuration, pattern, directory)


def training_checkpointed(
    directory: str,
    past_checkpoint_s: float = 0.0,
    pattern: str = "slurm_controllers",
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True once the job's current run has written a checkpoint and made at least ``past_checkpoint_s`` of
    progress after it (its last record that much later), waiting up to ``wait_s``: the moment to interrupt it so
    that some work is lost. Polls the records (one read a second) instead of sleeping a fixed time; records that
    cannot be read yet (the job has not started) count as not yet, until the wait ends."""
    past = _bound("past_checkpoint_s", past_checkpoint_s)
    seconds = _bound("wait_s", wait_s)

    def checkpointed() -> bool:
        runs = _records(configuration, pattern, directory)["runs"]
        checkpoint = runs[-1]["last_checkpoint_time"] if runs else None
        return checkpoint is not None and runs[-1]["last_time"] - checkpoint >= past

    return until(checkpointed, seconds)


def _bound(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ActivityFailed(f"{name} must be a number of seconds >= 0 (0: no bound), got {value!r}")
    return float(value)


def training_resumed(
    directory: str,
    pattern: str = "slurm_controllers",
    max_resume_s: float = 0.0,
    max_work_lost_s: float = 0.0,
    other_host: bool = True,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when the job's records show an interruption after which training resumed (a step after the restart),
    on another host unless ``other_host`` is false, within ``max_resume_s`` of its last record before the
    interruption and with at most ``max_work_lost_s`` of progress lost since the checkpoint it resumed from (0: no
    bound), waiting up to ``wait_s`` for it. The latest interruption is the one judged."""
    max_resume = _bound("max_resume_s", max_resume_s)
    max_lost = _bound("max_work_lost_s", max_work_lost_s)
    seconds = _bound("wait_s", wait_s)

    def resumed() -> bool:
        interruptions = _records(configuration, pattern, directory)["interruptions"]
        if not interruptions:
            return False
        last = interruptions[-1]
        return (
            last["resume_s"] is not None
            and (last["moved"] or not other_host)
            and (not max_resume or last["resume_s"] <= max_resume)
            and (not max_lost or last["work_lost_s"] <= max_lost)
        )

    return until(resumed, seconds)
