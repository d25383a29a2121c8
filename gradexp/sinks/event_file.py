"""A TensorBoard event file written in the training thread, with a C checksum.

TensorBoard's own `EventFileWriter` (which `torch.utils.tensorboard` also uses) checksums every
record with a pure-Python CRC-32C: about 0.1 ms per kilobyte, paid on a background thread that
holds the GIL the training loop needs. An event carrying every layer's signals is several
kilobytes, so at every step that checksum alone cost about a tenth of a training step.
google-crc32c does it in microseconds, which makes a background thread unnecessary.

The format is TFRecord: for each serialized `Event`, its length (uint64, little-endian), the
masked CRC-32C of those 8 bytes, the bytes themselves, and their masked CRC-32C.
"""

import itertools
import os
import socket
import struct
import time
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event

_file_numbers = itertools.count()  # two sinks opened in one second by one process get two files


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(event: Event | bytes) -> bytes:
    """One event (or its serialized bytes) as a TFRecord."""
    data = event if isinstance(event, bytes) else event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


def file_version() -> Event:
    """The event every event file starts with."""
    return Event(wall_time=time.time(), file_version="brain.Event:2")


class EventFile:
    """Appends events to `events.out.tfevents.<time>.<host>.<pid>.<n>` in `folder`; what is flushed
    is readable at once, and a process killed mid-write leaves at most one truncated record at
    the end, which TensorBoard's reader skips."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}"
        self.path = folder / f"events.out.tfevents.{stamp}"
        self._file = open(self.path, "wb")
        self.add(file_version())
        self.flush()

    def add(self, event: Event | bytes) -> None:
        self._file.write(record(event))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
