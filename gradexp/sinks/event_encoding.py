"""An Event's bytes written directly, for the per-step events that carry every value of a step.

A step that logs every signal of a depth-20 MLP carries about 150 scalars, and every tenth
step 62 histograms. Built as protobuf `Summary.Value` objects and serialized, the scalars cost
about 0.3 ms per step, 2 to 3% of the step, paid at each flush. Their wire format is simple and
the same at every step: for each scalar, a length-delimited `Summary.value` entry holding the
tag (field 1) and `simple_value` (field 2, a little-endian float32). So each set of tags gets
its bytes once, with four empty bytes per value, and a step's values go into those slots in one
numpy assignment: about 10 us per step. A histogram is a few doubles and two packed arrays.
The reader sees the same messages: `Event.FromString` of these bytes equals the Event protobuf
would have built (tests/test_event_encoding.py).

Field numbers, from tensorboard/compat/proto: Event.wall_time = 1 (double), Event.step = 2
(int64), Event.summary = 5; Summary.value = 1; Summary.Value.tag = 1, .simple_value = 2,
.histo = 5; HistogramProto.min, max, num, sum, sum_squares = 1 to 5, bucket_limit = 6,
bucket = 7.
"""

import struct

import numpy as np

from gradexp.diagnostics.histograms import BINS


def varint(n: int) -> bytes:
    """A non-negative integer in protobuf's base-128 varint encoding."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key_and_length(field_byte: int, length: int) -> bytes:
    """What comes before a length-delimited field's payload of `length` bytes."""
    return bytes((field_byte,)) + varint(length)


def length_delimited(field_byte: int, payload: bytes) -> bytes:
    return key_and_length(field_byte, len(payload)) + payload


def event_bytes(wall_time: float, step: int, summary: bytes) -> bytes:
    """An Event with a wall time, a step (>= 0) and a serialized Summary."""
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + varint(step) + length_delimited(0x2A, summary)


class _Template:
    """A Summary of these tags with every float32 slot zero, and the byte positions of the slots."""

    def __init__(self, tags: tuple[str, ...]):
        parts, slots, offset = [], [], 0
        for tag in tags:
            entry = length_delimited(0x0A, tag.encode()) + b"\x15"  # tag, then simple_value's key
            head = key_and_length(0x0A, len(entry) + 4) + entry
            slots.extend(range(offset + len(head), offset + len(head) + 4))
            parts.append(head + bytes(4))
            offset += len(head) + 4
        self.zeros = np.frombuffer(b"".join(parts), dtype=np.uint8)
        self.slots = np.array(slots, dtype=np.intp)


# A serialized HistogramProto of BINS buckets, as a packed numpy record: each field's key byte
# (field number << 3 | wire type), the five doubles, then bucket_limit and bucket as packed
# doubles after their key and length. Every histogram has these bytes (529 for 30 buckets).
_FIXED = ("min", "max", "num", "sum", "sum_squares")  # fields 1 to 5, as the row's first five values
_PACKED = np.frombuffer(varint(8 * BINS), dtype=np.uint8)  # the length of BINS packed doubles
_HISTOGRAM = np.dtype(
    [field for name in _FIXED for field in ((f"{name}_key", "u1"), (name, "<f8"))]
    + [("limits_key", "u1"), ("limits_length", "u1", len(_PACKED)), ("limits", "<f8", BINS)]
    + [("counts_key", "u1"), ("counts_length", "u1", len(_PACKED)), ("counts", "<f8", BINS)]
)


def _keys() -> np.ndarray:
    """One histogram record holding only its key and length bytes, the same in every histogram."""
    keys = np.zeros(1, dtype=_HISTOGRAM)
    for i, name in enumerate(_FIXED):
        keys[f"{name}_key"] = (i + 1) << 3 | 1  # a double: wire type 1
    keys["limits_key"], keys["counts_key"] = 6 << 3 | 2, 7 << 3 | 2  # packed: wire type 2
    keys["limits_length"] = keys["counts_length"] = _PACKED
    return keys


_KEYS = _keys()


class SummaryEncoder:
    """Serialized Summary entries: the scalars from a byte template made once per set of tags,
    the histograms in one numpy pass over a step's rows."""

    def __init__(self):
        self._templates: dict[tuple[str, ...], _Template] = {}
        self._histogram_heads: dict[str, bytes] = {}

    def scalars(self, scalars: dict[str, float]) -> bytes:
        tags = tuple(scalars)
        template = self._templates.get(tags)
        if template is None:
            template = self._templates[tags] = _Template(tags)
        values = np.fromiter(scalars.values(), dtype=np.float64, count=len(tags))
        with np.errstate(over="ignore"):  # past float32's range: infinity, as protobuf stores it
            singles = values.astype("<f4")
        encoded = template.zeros.copy()
        encoded[template.slots] = singles.view(np.uint8)
        return encoded.tobytes()

    def histograms(self, histograms: dict[str, list[float]]) -> bytes:
        """Rows of `Histograms.stats` ([min, max, count, sum, sum of squares, *BINS counts]) by
        tag; a row with a non-finite value (a diverged tensor) has no histogram."""
        if not histograms:
            return b""
        rows = np.array(list(histograms.values()), dtype=np.float64)
        kept = np.isfinite(rows).all(axis=1)
        rows = rows[kept]
        records = np.repeat(_KEYS, len(rows))
        for i, name in enumerate(_FIXED):
            records[name] = rows[:, i]
        low, high = rows[:, :1], rows[:, 1:2]
        records["limits"] = low + (high - low) / BINS * np.arange(1, BINS + 1)  # low + width * (i + 1)
        records["counts"] = rows[:, 5:]
        encoded = records.tobytes()
        size = _HISTOGRAM.itemsize
        tags = [tag for tag, keep in zip(histograms, kept.tolist()) if keep]
        return b"".join(self._head(tag) + encoded[i * size : (i + 1) * size] for i, tag in enumerate(tags))

    def _head(self, tag: str) -> bytes:
        """A histogram's Summary.value entry up to its HistogramProto's bytes."""
        head = self._histogram_heads.get(tag)
        if head is None:
            size = _HISTOGRAM.itemsize
            entry = length_delimited(0x0A, tag.encode()) + key_and_length(0x2A, size)
            head = self._histogram_heads[tag] = key_and_length(0x0A, len(entry) + size) + entry
        return head
