"""Mixed precision: the forward pass under `torch.autocast` in bfloat16 or float16, the parameters
and their gradients kept in float32, and for float16 a loss scale (Micikevicius et al. 2018).

float16 has 5 exponent bits: a gradient entry below about 6e-8 becomes exactly zero in the
backward pass, and vanishing-by-number-format is what gradexp's grad_zero signal shows. Scaling
the loss by S before backward moves the gradients up by S, into the range float16 can hold;
dividing by S afterwards (`unscale`) gives back the true gradient, which is what every norm is
measured on. When S is so large that the backward overflows, the scaler skips the step and, if
dynamic (`torch.amp.GradScaler`), halves S; every 2000 steps without an overflow, it doubles S.
A fixed scale skips the step the same way and keeps S. bfloat16 has float32's exponent range,
so it needs no scale.
"""

import warnings
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

AUTOCAST_DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_SCALE_MODES = ("dynamic", "none")
DYNAMIC_INITIAL_SCALE = 2.0**16  # GradScaler's default
COLLAPSED_BELOW = 1.0  # a scale below 1 shrinks the gradient: it no longer guards against underflow


def autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The forward pass's context for `trainer.precision` on a device type."""
    dtype = AUTOCAST_DTYPES[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def resolved_loss_scale(precision: str, loss_scale) -> str | float:
    """`dynamic`, `none` or a fixed number; null means dynamic for fp16 and none otherwise."""
    if loss_scale is None:
        return "dynamic" if precision == "fp16" else "none"
    return loss_scale if loss_scale in LOSS_SCALE_MODES else float(loss_scale)


def precision_problem(precision: str, loss_scale, device: torch.device) -> tuple[str, str, str] | None:
    """(key, why, allowed) when this torch on this device cannot train as asked; None when it can.
    Asks the installed torch itself: autocast warns and turns itself off for a dtype the device
    lacks, and a loss scale needs the unscale kernel on the device. Checked with the command
    line, so it never touches CUDA (a sweep's parent process must not initialize it before its
    workers fork): CUDA has float16 and the unscale kernel everywhere, and a GPU's bfloat16 is
    asked by `run_problem`, in the run."""
    if device.type == "cuda":
        return None
    if not _can_autocast(precision, device):
        allowed = ", ".join(p for p in AUTOCAST_DTYPES if _can_autocast(p, device))
        why = f"torch {torch.__version__} cannot autocast to it on {device.type}"
        return "trainer.precision", why, allowed
    if resolved_loss_scale(precision, loss_scale) != "none" and not _can_unscale(device):
        return (
            "trainer.loss_scale",
            f"torch {torch.__version__} cannot scale the loss on {device.type}",
            "none",
        )
    return None


def run_problem(precision: "Precision", model: torch.nn.Module, device: torch.device) -> tuple | None:
    """(key, value, why, allowed) for what only the built run can tell: whether its GPU has
    bfloat16 (compute capability 8.0 on), and whether a loss scale meets float16 parameters,
    whose gradients GradScaler refuses to unscale."""
    if precision.name == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return (
            "trainer.precision",
            "bf16",
            f"{torch.cuda.get_device_name(device)} has no bfloat16",
            "32, fp16",
        )
    if precision.scaling and any(p.dtype == torch.float16 for p in model.parameters()):
        why = "the model's parameters are float16, and GradScaler unscales float32 gradients only"
        return "trainer.loss_scale", precision.loss_scale, why, "none"
    return None


def _can_autocast(precision: str, device: torch.device) -> bool:
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.autocast(device.type, dtype=dtype)
        except RuntimeError:  # a device type autocast does not know
            return False
    return not caught


def _can_unscale(device: torch.device) -> bool:
    """Whether GradScaler's unscale kernel exists for the device (on the CPU since torch 2.3).
    Tried on a one-element tensor on the CPU; CUDA has had it since autocast came."""
    if device.type == "cuda":
        return True
    try:
        one = torch.ones(1, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_([one], torch.zeros(1, device=device), one)
    except (NotImplementedError, RuntimeError):
        return False
    return True


class Precision:
    """What the training step asks about precision: the autocast context of the forward pass,
    the scaled loss to call backward on, and the unscale and step of the optimizer."""

    def __init__(self, precision: str, loss_scale, device: torch.device):
        self.name = precision
        self.dtype = AUTOCAST_DTYPES[precision]
        self.device_type = device.type
        self.loss_scale = resolved_loss_scale(precision, loss_scale)
        self.fixed = self.loss_scale if isinstance(self.loss_scale, float) else None
        self.scaler = None
        if self.loss_scale != "none":
            self.scaler = torch.amp.GradScaler(device.type, init_scale=self.fixed or DYNAMIC_INITIAL_SCALE)

    @property
    def scaling(self) -> bool:
        return self.scaler is not None

    def autocast(self) -> AbstractContextManager:
        return autocast(self.name, self.device_type)

    def scale(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler else loss

    def current_scale(self) -> Tensor | None:
        """The scale this step's backward used, as a device tensor (a copy: the scaler updates
        its own in place)."""
        return self.scaler._get_scale_async().detach().clone() if self.scaler else None

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale, so that what is measured and clipped is the true
        gradient (an overflowed entry stays infinite; the step is then skipped)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's update, skipped by the scaler when the gradient overflowed (which it
        reads on the host: with a loss scale, one sync per step, as in every GradScaler loop)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update(self.fixed)  # a fixed scale is set back to itself

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
