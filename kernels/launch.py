"""Every Triton launch of qrt_kernels goes through `launch`, so a launch can be recorded
instead of run: `capture_launches(target)` makes the dispatcher plan for a GPU that is not
there (its name and SM count) and collects what it would launch.

The static sm_90 report (bench/gpu_static.py) calls the real dispatch entry points on meta
tensors under `capture_launches` and compiles exactly the launches they record, so the
report can never drift from what the dispatcher decides.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TargetDevice:
    """The GPU the dispatcher plans for while capturing: its name and SM count."""

    name: str
    n_sm: int

    def __post_init__(self):
        if not (isinstance(self.n_sm, int) and self.n_sm > 0):
            raise ValueError(f"TargetDevice.n_sm: expected a positive int, found {self.n_sm!r}")


@dataclass
class Launch:
    """One kernel launch: kernel[grid](*args, **meta). args are the positional kernel
    arguments (tensors, ints, None); meta the constexprs and options (num_warps, ...)."""

    kernel: object
    grid: tuple[int, ...]
    args: tuple
    meta: dict = field(default_factory=dict)


_capture: contextvars.ContextVar[tuple[TargetDevice, list] | None] = contextvars.ContextVar(
    "qrt_kernels_capture", default=None)


@contextlib.contextmanager
def capture_launches(target: TargetDevice):
    """Within the block, kernels are recorded (not run) and the dispatcher plans for
    `target`; meta tensors stand in for CUDA tensors. Yields the list of Launch."""
    launches: list[Launch] = []
    token = _capture.set((target, launches))
    try:
        yield launches
    finally:
        _capture.reset(token)


def capture_target() -> TargetDevice | None:
    """The device being planned for while capturing, else None."""
    state = _capture.get()
    return None if state is None else state[0]


def launch(kernel, grid: tuple[int, ...], args: tuple, **meta) -> None:
    """Run kernel[grid](*args, **meta), or record it while capturing."""
    state = _capture.get()
    if state is not None:
        state[1].append(Launch(kernel, tuple(grid), tuple(args), dict(meta)))
        return
    kernel[grid](*args, **meta)
