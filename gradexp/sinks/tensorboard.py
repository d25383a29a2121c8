"""TensorBoard event files in the run directory: one event per step carrying every tag."""

import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from gradexp.recorder import StepRecord


class TensorBoardSink:
    """Writes each StepRecord as a single event holding all its scalars, rather than one event
    per tag: the file stays small and writing 30 layers costs one protobuf, not 30."""

    def __init__(self, run_dir: Path):
        self._writer = EventFileWriter(str(run_dir), flush_secs=30)

    def write(self, records: list[StepRecord]) -> None:
        for record in records:
            values = [Summary.Value(tag=t, simple_value=v) for t, v in record.scalars.items()]
            self._writer.add_event(
                Event(wall_time=time.time(), step=record.step, summary=Summary(value=values))
            )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
