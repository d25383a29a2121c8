"""What a measurement is: one small unit that declares where it applies, when it is due and the
signals it writes, and measures them at a diagnostic step (after Cockpit's quantities).

Everything a run shows is derived from these declarations: the TensorBoard charts, the summary's
`<signal>_first` / `_last` keys, the terminal's columns. A measurement keeps its values on the
device; the recorder copies them to the host at its next flush.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from gradexp.config.schema import DiagnosticsConfig
from gradexp.measurements.capture import Capture
from gradexp.network import Network


@dataclass(frozen=True)
class Signal:
    """One per-name quantity a measurement writes as `<prefix>/<name>`."""

    prefix: str
    chart: str  # the TensorBoard chart that overlays every name
    per: str = "layer"  # what <name> is: layer, activation, block, recurrent, sequence
    columns: tuple[str, ...] = ()  # terminal columns of the per-layer table: "first", "last"
    heading: str = ""  # their heading, with {step}
    summary: bool = True  # <prefix>_first / _last in summary.json
    of_gradient: bool = False  # read off the backward pass: not written at a step the loss scale skipped


@dataclass
class Context:
    """What a measurement may read about the run it measures."""

    network: Network
    config: DiagnosticsConfig
    grad_scale: float | Tensor = 1.0  # what undoes grad_accum's 1 / n and the loss scale in the hooks
    precision: str = "32"  # trainer.precision: 32, bf16 or fp16 (autocast)
    hooks: bool = True  # module hooks may be installed (not in a torch.compile'd model's graph)
    batch: bool = True  # the step's batch and loss function are at hand (gradexp's own loop)


@dataclass
class Output:
    """A measurement's values for one step, as device tensors."""

    scalars: list[tuple[list[str], Tensor]] = field(default_factory=list)
    vectors: list[tuple[list[str], Tensor]] = field(default_factory=list)
    activations: dict[str, Tensor] = field(default_factory=dict)  # for the histograms


class Measurement:
    signals: ClassVar[tuple[Signal, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()  # hooks from the Capture: layers, activations, blocks
    due_with_histograms: ClassVar[bool] = False  # also runs when only histograms are due
    order: ClassVar[int] = 50  # place among the measurements (columns, charts)

    @staticmethod
    def applies(context: Context) -> str | None:
        """None where it applies; else the reason it does not, which the summary keeps."""
        return None

    def __init__(self, context: Context):
        self.context = context

    def measure(self, capture: Capture, batch: tuple[Tensor, Tensor], loss_fn: Callable) -> Output:
        """Before the optimizer's update, from the step's hooks and batch."""
        return Output()

    def inputs_read(self) -> set[int]:
        """The activation sites whose inputs `measure` reads from the Capture (it keeps no other:
        an input kept past its forward pass adds to the step's peak memory)."""
        return set()

    def after_update(self) -> Output | None:
        """After the update (what the update did); None when there is nothing to add."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


MEASUREMENTS: list[type[Measurement]] = []


def measurement(cls: type[Measurement]) -> type[Measurement]:
    """Register a measurement (one decorator line, in its own module)."""
    MEASUREMENTS.append(cls)
    MEASUREMENTS.sort(key=lambda m: m.order)
    return cls
