"""The per-step events' bytes, written from a template, are the Event protobuf would build."""

import math

import pytest
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

from gradexp.diagnostics.histograms import BINS
from gradexp.sinks.event_encoding import SummaryEncoder, event_bytes, varint

VALUES = {
    "loss/train": 1.5,
    "grad_norm/001_hidden": 3e-12,
    "grad_norm/002_hidden": 0.0,
    "update_ratio/010_output": -2.5e-3,
    "past/float32": 1e300,  # infinity in a float32 field, as protobuf stores it
    "below/float32": -1e300,
    "underflow/float32": 1e-50,
    "act_mean/ünïcode tag": 3.0e38,
    "x" * 200: 7.0,  # a tag longer than 127 bytes: a two-byte length
}


def reference(step: int, scalars: dict[str, float], extra=()) -> Event:
    values = [Summary.Value(tag=t, simple_value=v) for t, v in scalars.items()]
    return Event(wall_time=12.5, step=step, summary=Summary(value=values + list(extra)))


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300_000, 2**40])
def test_the_bytes_parse_to_the_event_protobuf_builds(step):
    encoder = SummaryEncoder()
    for scalars in (VALUES, {"lr": 0.1}, VALUES):  # a second set of tags, then the first template again
        parsed = Event.FromString(event_bytes(12.5, step, encoder.scalars(scalars)))
        assert parsed == reference(step, scalars)
        assert [v.tag for v in parsed.summary.value] == list(scalars)


def test_nan_and_infinities_come_back_as_they_went():
    scalars = {"a": math.nan, "b": math.inf, "c": -math.inf}
    values = Event.FromString(event_bytes(0.0, 5, SummaryEncoder().scalars(scalars))).summary.value
    assert math.isnan(values[0].simple_value)
    assert values[1].simple_value == math.inf and values[2].simple_value == -math.inf


def histogram(low: float, high: float, counts: list[float]) -> tuple[list[float], HistogramProto]:
    """A row of Histograms.stats and the HistogramProto it stands for."""
    width = (high - low) / BINS
    limits = [low + width * (i + 1) for i in range(BINS)]
    proto = HistogramProto(
        min=low, max=high, num=sum(counts), sum=10.5, sum_squares=40.25, bucket_limit=limits, bucket=counts
    )
    return [low, high, sum(counts), 10.5, 40.25, *counts], proto


def test_histograms_follow_the_scalars_as_more_values_and_a_diverged_one_is_left_out():
    first, first_proto = histogram(-1.25, 3.5, [float(i % 7) for i in range(BINS)])
    second, second_proto = histogram(0.0, 1e-30, [0.0] * (BINS - 1) + [4096.0])
    diverged = [math.nan, 1.0, 3.0, 0.0, 0.0, *[1.0] * BINS]
    encoder = SummaryEncoder()
    rows = {"weights/001_hidden": first, "gradients/001_hidden": diverged, "activations/001_hidden": second}
    for _ in range(2):  # the tags' heads made, then reused
        summary = encoder.scalars({"lr": 0.1}) + encoder.histograms(rows)
        expected = [
            Summary.Value(tag="weights/001_hidden", histo=first_proto),
            Summary.Value(tag="activations/001_hidden", histo=second_proto),
        ]
        assert Event.FromString(event_bytes(12.5, 3, summary)) == reference(3, {"lr": 0.1}, expected)
    assert encoder.histograms({}) == b""


def test_varint_matches_the_protobuf_encoding():
    for n in (0, 1, 127, 128, 255, 300, 2**21, 2**63 - 1):
        assert Event.FromString(b"\x10" + varint(n)).step == n
