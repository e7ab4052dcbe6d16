"""The dcgm-exporter stand-in's own fields (DCGM_EXP_XID_ERRORS_COUNT, DCGM_EXP_CLOCK_EVENTS_COUNT), their window
flags, and the dcgm_exporter role's counters file, which the stand-in must accept as the real exporter does."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import jinja2.nativetypes
import pytest
import yaml
from gpusim import exporter as ex
from gpusim import state as st
from simhelpers import EXPORTER, ROOT, dcgmi, free_port, samples, scrape, start_exporter

ROLE = ROOT / "roles" / "dcgm_exporter"
BASE_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "hostname"]


def role_counters_csv() -> str:
    """The role's counters.csv as the role renders it with its defaults (template, vars and defaults as shipped)."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    native = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    counters = native.from_string(role_vars["_dcgm_exporter_all_counters"]).render(**defaults)
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)  # noqa: S701 - CSV, not HTML
    text = (ROLE / "templates" / "counters.csv.j2").read_text()
    return template.from_string(text).render(ansible_managed="Ansible managed", _dcgm_exporter_all_counters=counters)


def role_fields() -> list[str]:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return [c["field"] for c in defaults["dcgm_exporter_counters"] + defaults["dcgm_exporter_extra_counters"]]


@pytest.fixture
def views(sim, monkeypatch):
    """In-process access to the sim's GPUs: views(at) computes them from the saved state at time `at`."""
    for key, value in sim.env.items():
        if key.startswith("GPUSIM_"):
            monkeypatch.setenv(key, value)
    config = st.load_config()

    def compute(at: float) -> list[st.GpuView]:
        return st.compute_view(config, st.load_state(config), processes=[], at=at)

    return compute


def add_xids(sim, gpu: int, *events: tuple[int, float]) -> None:
    history = sim.state()["gpus"][gpu].get("xid_history", [])
    sim.edit(**{f"gpu{gpu}": {"xid_history": history + [{"xid": x, "ts": ts} for x, ts in events]}})


def options(*names: str, **kwargs) -> ex.Options:
    counters = [ex.Counter(name, "gauge", name.lower()) for name in names]
    return ex.Options(**{"counters": counters, "hostname": "gpu-node-1", "devices": None, "started": 0.0, **kwargs})


def exp_counters(tmp_path: Path) -> str:
    """A collectors file with the exporter's own fields only (upstream's default file has them commented out)."""
    path = tmp_path / "exp-counters.csv"
    path.write_text(
        "DCGM_EXP_XID_ERRORS_COUNT, gauge, Count of XID Errors within user-specified time window.\n"
        "DCGM_EXP_CLOCK_EVENTS_COUNT, gauge, Count of clock events within the user-specified time window.\n"
    )
    return str(path)


# --- the role's counters file ------------------------------------------------------------------------------------


def test_role_counters_file_is_accepted_field_for_field():
    text = role_counters_csv()
    parsed = ex.parse_collectors(text, "roles/dcgm_exporter counters.csv")
    assert [c.name for c in parsed] == role_fields()
    assert {"DCGM_EXP_XID_ERRORS_COUNT", "DCGM_EXP_CLOCK_EVENTS_COUNT"} <= {c.name for c in parsed}


def test_stand_in_serves_the_role_counters_file(sim, tmp_path):
    counters = tmp_path / "counters.csv"
    counters.write_text(role_counters_csv())
    text = scrape(start_exporter(sim, "-c", "100", "-f", str(counters)))
    exported = set(re.findall(r"^([A-Z][A-Z0-9_]+)\{", text, re.M))
    # Every DCGM field of the file has a series per GPU; the exporter's own fields only when events exist, and
    # idle GPUs give gpu_idle clock events at once.
    assert exported == set(role_fields()) - {"DCGM_EXP_XID_ERRORS_COUNT"}


def test_unknown_exporter_field_is_still_refused():
    with pytest.raises(ValueError, match="could not find DCGM field DCGM_EXP_NOT_A_FIELD"):
        ex.parse_collectors("DCGM_EXP_NOT_A_FIELD, gauge, nope\n")


# --- DCGM_EXP_XID_ERRORS_COUNT -----------------------------------------------------------------------------------


def test_xid_twice_inside_the_window_counts_two_for_that_xid(sim, views):
    t = 1_000_000.0
    add_xids(sim, 0, (31, t - 20), (31, t - 10), (48, t - 5))
    add_xids(sim, 3, (13, t - 1))
    text = ex.render(views(t), options("DCGM_EXP_XID_ERRORS_COUNT"), at=t)
    found = samples(text, "DCGM_EXP_XID_ERRORS_COUNT")
    assert [(labels["gpu"], labels["xid"], value) for labels, value in found] == [
        ("0", "31", "2"),
        ("0", "48", "1"),
        ("3", "13", "1"),
    ]
    labels = found[0][0]
    assert list(labels) == [*BASE_LABELS, "window_size_in_ms", "xid"]
    assert labels["window_size_in_ms"] == "300000"
    assert text.startswith(
        "# HELP DCGM_EXP_XID_ERRORS_COUNT dcgm_exp_xid_errors_count\n# TYPE DCGM_EXP_XID_ERRORS_COUNT gauge\n"
    )


def test_xid_outside_the_window_drops(sim, views):
    t = 1_000_000.0
    add_xids(sim, 0, (79, t - 400), (31, t - 100))
    opts = options("DCGM_EXP_XID_ERRORS_COUNT", xid_window_ms=120_000)
    found = samples(ex.render(views(t), opts, at=t), "DCGM_EXP_XID_ERRORS_COUNT")
    assert [(labels["xid"], labels["window_size_in_ms"], value) for labels, value in found] == [("31", "120000", "1")]
    # 30 s later XID 31 is out of the 2-minute window too: no series left, and no HELP/TYPE without series.
    assert ex.render(views(t + 30), opts, at=t + 30) == ""


def test_xid_before_the_exporter_started_is_not_counted(sim, views):
    t = 1_000_000.0
    add_xids(sim, 0, (31, t - 60), (31, t - 10))
    opts = options("DCGM_EXP_XID_ERRORS_COUNT")
    opts.started = t - 30
    found = samples(ex.render(views(t), opts, at=t), "DCGM_EXP_XID_ERRORS_COUNT")
    assert [(labels["xid"], value) for labels, value in found] == [("31", "1")]


def test_xid_count_outlives_a_gpu_reset_but_not_a_reboot(sim):
    sim.run("admin", "xid", "--gpu", "1", "--xid", "31")
    assert sim.run("nvsmi", "-r", "-i", "1").returncode == 0
    assert [e["xid"] for e in sim.state()["gpus"][1]["xid_history"]] == [31]
    assert sim.run("admin", "boot").returncode == 0
    assert sim.state()["gpus"][1]["xid_history"] == []


def test_injected_xids_counted_through_the_host_engine_with_the_window_flag(sim, tmp_path):
    port = sim.hostengine()
    exporter = start_exporter(sim, "-c", "100", "-f", exp_counters(tmp_path), "-r", f"127.0.0.1:{port}", "-x", "60000")
    for gpu, xid in ((0, 31), (0, 31), (1, 48)):
        result = dcgmi(sim, port, "test", "--inject", "--gpuid", str(gpu), "-f", "230", "-v", str(xid))
        assert result.returncode == 0, result.stdout
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = samples(scrape(exporter), "DCGM_EXP_XID_ERRORS_COUNT")
        if len(found) == 2 and found[0][1] == "2":
            break
        time.sleep(0.1)
    assert [(labels["gpu"], labels["xid"], labels["window_size_in_ms"], value) for labels, value in found] == [
        ("0", "31", "60000", "2"),
        ("1", "48", "60000", "1"),
    ]


def test_xid_drops_out_of_a_short_window_on_the_stand_in(sim, tmp_path):
    exporter = start_exporter(sim, "-c", "100", "-f", exp_counters(tmp_path), "--xid-count-window-size=800")
    assert sim.run("admin", "xid", "--gpu", "2", "--xid", "13").returncode == 0
    deadline = time.monotonic() + 5
    while not (found := samples(scrape(exporter), "DCGM_EXP_XID_ERRORS_COUNT")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(labels["gpu"], labels["xid"], labels["window_size_in_ms"]) for labels, _ in found] == [("2", "13", "800")]
    time.sleep(1.2)
    assert "DCGM_EXP_XID_ERRORS_COUNT" not in scrape(exporter)


# --- DCGM_EXP_CLOCK_EVENTS_COUNT ---------------------------------------------------------------------------------


def test_clock_events_are_counted_per_reason_over_the_samples_in_the_window(sim, views):
    t = 1_000_000.0
    opts = options("DCGM_EXP_CLOCK_EVENTS_COUNT", clock_events_window_ms=1500, devices={0, 2})
    sim.edit(gpu2={"overrides": {"temperature": 95}})  # above the H100's 92 C slowdown
    for step in range(3):  # one sample per collection, as DCGM's watch takes them
        text = ex.render(views(t + step), opts, at=t + step)
    found = samples(text, "DCGM_EXP_CLOCK_EVENTS_COUNT")
    # The 1.5 s window at t+2 holds the samples of t+1 and t+2.
    assert [(labels["gpu"], labels["clock_event"], value) for labels, value in found] == [
        ("0", "gpu_idle", "2"),
        ("2", "gpu_idle", "2"),
        ("2", "sw_thermal", "2"),
    ]
    assert list(found[0][0]) == [*BASE_LABELS, "clock_event", "window_size_in_ms"]
    assert found[0][0]["window_size_in_ms"] == "1500"


def test_clock_event_window_flag_is_honoured_on_the_stand_in(sim, tmp_path):
    counters = exp_counters(tmp_path)
    exporter = start_exporter(sim, "-c", "100", "-f", counters, "-d", "g:0", "--clock-events-count-window-size", "400")
    time.sleep(1.0)
    found = samples(scrape(exporter), "DCGM_EXP_CLOCK_EVENTS_COUNT")
    assert [(labels["clock_event"], labels["window_size_in_ms"]) for labels, _ in found] == [("gpu_idle", "400")]
    # 100 ms collections in a 400 ms window: about 4 samples, never the ~10 taken since the start.
    assert 2 <= int(found[0][1]) <= 6


def test_nvidia_smi_reports_the_same_clock_event_reasons(sim):
    sim.edit(gpu0={"overrides": {"temperature": 95}})
    result = sim.run("nvsmi", "--query-gpu=clocks_event_reasons.active", "--format=csv,noheader", "-i", "0")
    assert result.stdout == "0x0000000000000021\n"


# --- flags -------------------------------------------------------------------------------------------------------


def test_window_flags_and_environment_defaults():
    assert ex.parse_args([], {})["xid_window"] == "300000"
    assert ex.parse_args([], {})["clock_events_window"] == "300000"
    env = {"DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE": "1000", "DCGM_EXPORTER_CLOCK_EVENTS_COUNT_WINDOW_SIZE": "2000"}
    assert ex.parse_args([], env)["xid_window"] == "1000"
    assert ex.parse_args([], env)["clock_events_window"] == "2000"
    assert ex.parse_args(["-x", "5000"], env)["xid_window"] == "5000"


def test_window_flag_that_is_not_a_number_is_a_usage_error(sim):
    result = subprocess.run(
        [sys.executable, str(EXPORTER), "-a", f"127.0.0.1:{free_port()}", "--clock-events-count-window-size", "5m"],
        env=sim.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert 'invalid value "5m" for flag -clock-events-count-window-size' in result.stderr


def test_role_template_is_where_the_test_reads_it():
    # The test above renders these files; if the role moves them, fail loudly here rather than test nothing.
    assert Path(ROLE / "templates" / "counters.csv.j2").is_file()
    assert "_dcgm_exporter_all_counters" in (ROLE / "templates" / "counters.csv.j2").read_text()
