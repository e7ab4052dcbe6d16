"""Helpers of the gpu_health agent tests: a fake clock, a recording runner, engine drivers, stand-in runners."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_health_agent.config import Config, PolicyConfig, parse_config
from gpu_health_agent.engine import Engine, State, Step, Verdict
from gpu_health_agent.events import Action, ActionResult, Boot, Finding, GpuInfo, Poll
from gpu_health_agent.runner import RunResult

T0 = 1_800_000_000.0
PCI = [f"0000:{bus}:00" for bus in ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")]
GPUS = tuple(GpuInfo(i, f"GPU-{i:08x}-0000-0000-0000-000000000000", pci) for i, pci in enumerate(PCI))
IDLE = dict.fromkeys(range(8), 0)


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


Responder = Callable[[tuple[str, ...]], RunResult | None]


@dataclass
class RecordingRunner:
    """Records every argv; answers with the first responder that knows the command, else rc 0 and no output."""

    responders: list[Responder] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float) -> RunResult:  # noqa: ARG002 - the Runner signature
        args = tuple(argv)
        self.calls.append(args)
        for responder in self.responders:
            answer = responder(args)
            if answer is not None:
                return answer
        return RunResult(args, 0, "")


def policy(**overrides: Any) -> PolicyConfig:
    """The policy of a config with ``policy`` overrides (JSON shape), e.g. policy(undrain_after_s=300)."""
    return parse_config({"node_name": "gpu-node-1", "policy": overrides}).policy


def config(**data: Any) -> Config:
    return parse_config({"node_name": "gpu-node-1", **data})


def xid(number: int, gpu: int = 0, at: float | None = None) -> Finding:
    return Finding("xid", "kernel_log", pci=PCI[gpu], xid=number, detail="test", at=at)


def lost(gpu: int) -> Finding:
    return Finding("gpu_lost", "nvidia_smi", pci=PCI[gpu], detail="GPU is lost")


def healthy_poll(busy: Mapping[int, int] | None = None, *findings: Finding) -> Poll:
    return Poll(tuple(findings), GPUS, dict(IDLE if busy is None else busy))


def poll_without(gpu: int, *findings: Finding) -> Poll:
    """nvidia-smi lists every GPU but ``gpu``, which it reports lost (as after XID 79)."""
    return Poll((*findings, lost(gpu)), tuple(g for g in GPUS if g.index != gpu), {i: 0 for i in range(8) if i != gpu})


class Driver:
    """Runs the engine like the agent does, with a fake clock: each action's result is stepped in at once."""

    def __init__(
        self,
        engine: Engine,
        clock: FakeClock | None = None,
        outcomes: Mapping[str, str] | None = None,
        state: State | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock or FakeClock()
        self.outcomes = dict(outcomes or {})  # action -> outcome (default ok)
        self.state = state or State()
        self.actions: list[Action] = []
        self.notes: list[Any] = []

    def _take(self, step: Step) -> list[Action]:
        self.state = step.state
        self.notes += step.notes
        return list(step.actions)

    def send(self, event: Any) -> list[Action]:
        """Step ``event`` and carry out every action (results as configured); the actions carried out."""
        queue = self._take(self.engine.step(self.state, event, self.clock()))
        done: list[Action] = []
        while queue:
            action = queue.pop(0)
            done.append(action)
            outcome = self.outcomes.get(action.name, "ok")
            result = ActionResult(action.name, outcome, "", action.target)
            queue += self._take(self.engine.step(self.state, result, self.clock()))
        self.actions += done
        return done

    def boot(self, boot_id: str) -> list[Action]:
        return self.send(Boot(boot_id))

    def names(self, actions: Sequence[Action] | None = None) -> list[str]:
        return [a.name for a in (self.actions if actions is None else actions)]

    def events(self) -> list[str]:
        return [n.event for n in self.notes]


def allow(_action: str) -> Verdict:
    return Verdict(True, "test")


def engine(guard: Callable[[str], Verdict] | None = None, expected_gpus: int = 0, **policy_overrides: Any) -> Engine:
    return Engine(policy(**policy_overrides), guard, expected_gpus)


def started(eng: Engine, clock: FakeClock | None = None, **kwargs: Any) -> Driver:
    """A Driver after the agent's first start and one healthy poll (the inventory learnt)."""
    drv = Driver(eng, clock, **kwargs)
    drv.boot("boot-1")
    drv.send(healthy_poll())
    return drv


# --- the GPU simulator's stand-ins as the agent's commands ----------------------------------------------------------


def sim_runner(sim: Any, calls: list[tuple[str, ...]] | None = None, boot_marker: Any = None) -> RecordingRunner:
    """A runner that answers nvidia-smi and dcgmi with the simulator's stand-ins (real stand-in output) and
    `systemctl reboot` with what a boot does to the simulated GPUs (`gpusim boot`, and /run emptied: the
    ``boot_marker`` file removed). Everything else (scontrol, kubectl) is recorded and answers rc 0."""
    modules = {"nvidia-smi": "nvsmi", "dcgmi": "dcgmi"}

    def stand_in(argv: tuple[str, ...]) -> RunResult | None:
        if argv[0] in modules:
            done = sim.run(modules[argv[0]], *argv[1:])
        elif argv == ("systemctl", "reboot"):
            done = sim.run("admin", "boot")
            if boot_marker is not None:
                boot_marker.unlink(missing_ok=True)
        else:
            return None
        return RunResult(argv, done.returncode, done.stdout, done.stderr)

    runner = RecordingRunner([stand_in])
    if calls is not None:
        runner.calls = calls
    return runner


def hog(sim: Any, gpu: int) -> Any:
    """A process that holds simulated GPU ``gpu`` like a CUDA job, registered before this returns."""
    code = "import sys; from gpusim.admin import hog_main; sys.exit(hog_main())"
    child = sim.spawn([sys.executable, "-c", code, "--gpu", str(gpu), "--memory-mib", "512", "--util", "50"])
    registration = sim.state_path.parent / "procs" / f"{child.pid}.json"
    deadline = time.monotonic() + 10
    while not registration.exists():
        assert time.monotonic() < deadline, f"hog {child.pid} never registered"
        time.sleep(0.05)
    return child
