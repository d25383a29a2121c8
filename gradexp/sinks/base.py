"""The one interface every sink has. The engine holds a list of sinks and hands each the same
records; a sink writes what it is given and never decides what is measured."""

from gradexp.recorder import StepRecord


class Sink:
    def start(self, header: str) -> None:
        """The run begins: `header` says what is trained."""

    def write(self, records: list[StepRecord]) -> None:
        """Logged steps, at each flush, in step order."""

    def write_images(self, step: int, images: dict[str, bytes]) -> None:
        """The end-of-run figures (PNG bytes by name)."""

    def resume_at(self, step: int) -> None:
        """A resumed run goes on from `step`: what was written later is void."""

    def finish(self, summary: dict) -> None:
        """The run is over, whatever its status; `summary` is what summary.json holds."""
