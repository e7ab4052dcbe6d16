#!/usr/bin/env python3
# A fake training job for the lab's Slurm (experiments/lab/15-training-job-power-loss.yaml): each step "trains" by
# sleeping STEP_S seconds; every CHECKPOINT_INTERVAL_S seconds it writes a checkpoint to the storage all nodes share
# (TRAINING_DIR, /srv/shared/...); on start it resumes from the last checkpoint there. Every start, step and
# checkpoint is a JSON line in TRAINING_DIR/records.jsonl:
#   {"event": "start", "time", "host", "job_id", "restart", "resumed_from", "checkpoint_time"}
#   {"event": "step", "time", "host", "job_id", "step"}
#   {"event": "checkpoint", "time", "host", "job_id", "step"}
#   {"event": "done", "time", "host", "job_id", "step"}
# Submitted with `sbatch --requeue --nodes=1 --ntasks=1 --gres=gpu:1` (chaosgpu.training.actions.submit_training_job;
# the options are on its command line, not #SBATCH lines, which formatters rewrite), so Slurm requeues it when its
# node fails; the records are what the experiment's objectives are computed from (chaosgpu.training.records).
# Standard library only; the checkpoint is written atomically (temporary file, fsync, rename).
import json
import os
import socket
import sys
import time

DIRECTORY = os.environ.get("TRAINING_DIR", "")
STEP_S = float(os.environ.get("STEP_S", "1"))
CHECKPOINT_INTERVAL_S = float(os.environ.get("CHECKPOINT_INTERVAL_S", "30"))
TOTAL_STEPS = int(os.environ.get("TOTAL_STEPS", "1800"))


def record(event, **fields):
    line = {
        "event": event,
        "time": round(time.time(), 3),
        "host": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        **fields,
    }
    with open(os.path.join(DIRECTORY, "records.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


def load_checkpoint():
    try:
        with open(os.path.join(DIRECTORY, "checkpoint.json"), encoding="utf-8") as src:
            data = json.load(src)
        return int(data["step"]), float(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, None


def save_checkpoint(step):
    path = os.path.join(DIRECTORY, "checkpoint.json")
    temporary = f"{path}.{socket.gethostname()}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump({"step": step, "time": time.time(), "host": socket.gethostname()}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    record("checkpoint", step=step)


def main():
    if not DIRECTORY or not os.path.isdir(DIRECTORY):
        print(f"TRAINING_DIR must be an existing directory on shared storage, got {DIRECTORY!r}", file=sys.stderr)
        return 2
    step, checkpoint_time = load_checkpoint()
    record(
        "start",
        restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        resumed_from=step,
        checkpoint_time=checkpoint_time,
    )
    last_checkpoint = time.monotonic()
    while step < TOTAL_STEPS:
        time.sleep(STEP_S)
        step += 1
        record("step", step=step)
        if time.monotonic() - last_checkpoint >= CHECKPOINT_INTERVAL_S:
            save_checkpoint(step)
            last_checkpoint = time.monotonic()
    save_checkpoint(step)
    record("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
