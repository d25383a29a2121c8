"""TensorBoard event files in the run directory: one event per step carrying every tag (its
bytes written directly: event_encoding), a custom-scalars layout that overlays
every layer of a signal in one chart, and the figures."""

import struct
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.summary import custom_scalars

from gradexp.recorder import StepRecord
from gradexp.sinks.base import Sink
from gradexp.sinks.event_encoding import SummaryEncoder, event_bytes
from gradexp.sinks.event_file import EventFile
from gradexp.sinks.hparams import columns, metric_values, session_records


class TensorBoardSink(Sink):
    """Writes each StepRecord as a single event holding all its values, rather than one event
    per tag: the file stays small and writing 30 layers costs one record, not 30."""

    def __init__(self, run_dir: Path, charts: dict[str, list[str]] | None = None, restart: bool = False):
        """`charts`: the Custom Scalars dashboard, a chart title -> the tag patterns it overlays
        (derived from the measurements). `restart`: the directory holds an earlier attempt's
        events (a sweep job run again); TensorBoard is told to drop them, so the new attempt's
        curves stand alone."""
        self._writer = EventFile(run_dir)
        self._encoder = SummaryEncoder()
        if restart:
            self.resume_at(0)
        if charts:
            layout = {"gradexp": {title: ["Multiline", patterns] for title, patterns in charts.items()}}
            self._add(0, custom_scalars(layout))

    def _add(self, step: int, summary: Summary) -> None:
        self._writer.add(Event(wall_time=time.time(), step=step, summary=summary))

    def write(self, records: list[StepRecord]) -> None:
        for record in records:
            summary = self._encoder.scalars(record.scalars) + self._encoder.histograms(record.histograms)
            self._writer.add(event_bytes(time.time(), record.step, summary))
        self._writer.flush()

    def write_images(self, step: int, images: dict[str, bytes]) -> None:
        values = [Summary.Value(tag=f"figures/{name}", image=_image(png)) for name, png in images.items()]
        self._add(step, Summary(value=values))
        self._writer.flush()

    def finish(self, summary: dict) -> None:
        """The run's row of TensorBoard's HParams dashboard, then the file is closed."""
        try:
            self.write_results(summary)
        finally:
            self.close()

    def write_results(self, summary: dict) -> None:
        """The run's row of TensorBoard's HParams dashboard: its values, status and final metrics."""
        step = summary["steps_completed"]
        for record in session_records(columns(summary), summary["status"]):
            self._add(step, record)
        metrics = metric_values(summary)
        if metrics:
            self._add(step, Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in metrics.items()]))
        self._writer.flush()

    def resume_at(self, step: int) -> None:
        """A restart marker: TensorBoard drops whatever an earlier file logged at `step` or later
        (for a resumed run, what was logged after its checkpoint), so each step is shown once."""
        self._writer.add(
            Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START))
        )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _image(png: bytes) -> Summary.Image:
    width, height = struct.unpack(">II", png[16:24])  # from the PNG's IHDR chunk
    return Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
