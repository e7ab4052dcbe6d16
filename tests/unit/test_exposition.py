"""Parsing the Prometheus text exposition format."""

from __future__ import annotations

import math

from chaosgpu.exporter.exposition import parse_exposition

SAMPLE = """\
# HELP node_exporter_build_info A metric with a constant '1' value.
# TYPE node_exporter_build_info gauge
node_exporter_build_info{branch="debian/sid",goversion="go1.19.8",version="1.5.0"} 1
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-1",Hostname="n1",modelName="NVIDIA H100 80GB HBM3"} 41
node_load1 0.25 1700000000000
escaped{path="a\\"b"} 2
weird_value +Inf
not a sample line
"""


def test_samples_with_labels_and_values():
    samples = parse_exposition(SAMPLE)
    names = [name for name, _, _ in samples]
    assert names == ["node_exporter_build_info", "DCGM_FI_DEV_GPU_TEMP", "node_load1", "escaped", "weird_value"]
    build = samples[0]
    assert build[1]["version"] == "1.5.0"
    assert build[2] == 1.0


def test_label_values_with_spaces_and_timestamps():
    samples = {name: (labels, value) for name, labels, value in parse_exposition(SAMPLE)}
    assert samples["DCGM_FI_DEV_GPU_TEMP"][0]["modelName"] == "NVIDIA H100 80GB HBM3"
    assert samples["node_load1"] == ({}, 0.25)


def test_escaped_quotes_and_infinities():
    samples = {name: (labels, value) for name, labels, value in parse_exposition(SAMPLE)}
    assert samples["escaped"][0]["path"] == 'a"b'
    assert math.isinf(samples["weird_value"][1])


def test_comments_and_garbage_are_skipped():
    assert parse_exposition("# only a comment\n\ngarbage here now\n") == []
