"""The UNet's input layout on the CPU, chosen by measuring on the run's own batch.

Which layout is fastest depends on the machine, the batch, the dtype, the thread count and what
else runs there: on a shared 2-core AVX2 CPU (CIFAR-10 UNet, batch 8, `benchmarks/contention.py`)
channels-last measured 1.07-1.12x NCHW's images/s in one run and 0.78-0.84x in another while
other tenants loaded the machine, and Winograd F(4x4, 3x3) was 1.2-2.3x oneDNN's direct kernel
per layer on two threads (`benchmarks/winograd.py`) but is off there by rule, because it loses
when a thread is descheduled. So, as ``torch.backends.cudnn.benchmark`` picks a convolution
algorithm, the default times the candidates on the first model call with a new signature (UNet
architecture, batch shape, dtype, device, thread count) and keeps the fastest for every later
call with it:

    nchw            NCHW inputs: oneDNN's direct convolutions
    channels_last   channels-last inputs; on one thread the wide 3x3 convolutions run as
                    Winograd there already (`pndm.models.inference.use_winograd`), so on one
                    thread this is the Winograd candidate
    winograd        channels-last with Winograd on more threads too (float32 only)

The probe runs each candidate twice on that first call's own input: all untimed (warm-up:
oneDNN's primitives, derived weights such as the Winograd kernels), then all timed, and returns
the fastest's output as the call's output. So it costs 2C - 1 extra model calls (3 on one
thread, 5 with Winograd on more), once per signature and process; every later call runs the
chosen layout alone. One timed call each keeps the probe short; under a load that changes, the
choice can be wrong later, and it is not revisited (that would change the bits mid-process).
Winograd's kernels are derived once, in its warm-up, which is not timed, and kept for later runs
while the weights stay the same (`pndm.models.inference.DerivedWeights`); so the probe measures
what every later call costs, and a run of a single call (or the first of a fresh pipeline) pays
that transform untimed (about 0.3-0.5 s for the CIFAR-10 UNet on 2 cores).

Reproducibility. The layouts' outputs differ by float32 round-off (about 1e-6 on unit-scale
outputs: the kernels sum in other orders), so the images depend on the chosen layout within that
round-off. Because the probe returns the winner's own output for the call it ran on, every run is
exactly a run in the chosen layout; and one store serves the process, so within a process the
same call gives the same bits, whichever pipeline makes it. Another process may measure another
winner: for bit-exact images across processes fix the layout (``channels_last=True`` or
``False``, ``--channels-last`` or ``--no-channels-last``) and the thread count, as torch asks
``cudnn.benchmark = False`` for deterministic algorithms. Returning the probe's outputs from
different layouts as successive steps' outputs would save the extra calls but make the probing
run mix layouts: then the same call could give other bits the second time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pndm.models.inference import winograd_on_any_threads

Forward = Callable[[torch.Tensor], torch.Tensor]  # inputs in some layout -> the UNet's output
Clock = Callable[[], float]


@dataclass(frozen=True)
class Layout:
    """An input layout: the memory format of x, and whether Winograd runs on any thread count."""

    name: str
    memory_format: torch.memory_format
    winograd: bool = False

    def __call__(self, forward: Forward, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        if not self.winograd:
            return forward(x)
        with winograd_on_any_threads():
            return forward(x)


NCHW = Layout("nchw", torch.contiguous_format)
CHANNELS_LAST = Layout("channels_last", torch.channels_last)
WINOGRAD = Layout("winograd", torch.channels_last, winograd=True)


def candidates(dtype: torch.dtype, threads: int) -> tuple[Layout, ...]:
    """The layouts worth timing; NCHW first, so it wins ties."""
    more = threads > 1 and dtype == torch.float32  # else Winograd is channels_last's or never
    return (NCHW, CHANNELS_LAST, WINOGRAD) if more else (NCHW, CHANNELS_LAST)


def probe(
    forward: Forward, x: torch.Tensor, layouts: tuple[Layout, ...], clock: Clock
) -> tuple[Layout, torch.Tensor, dict[str, float]]:
    """(the fastest layout, its output on x, seconds of each): each candidate on x twice, first
    all warm-ups (oneDNN's primitives, derived weights such as the Winograd kernels), then the
    timed calls back to back, so a change in the machine's load falls on them alike. Ties go
    to the earlier candidate."""
    seconds: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for layout in layouts:
        layout(forward, x)
    for layout in layouts:
        start = clock()
        outputs[layout.name] = layout(forward, x)
        seconds[layout.name] = clock() - start
    fastest = min(layouts, key=lambda c: seconds[c.name])
    return fastest, outputs[fastest.name], seconds


class MeasuredLayouts:
    """The layout chosen for each (UNet architecture, batch shape, dtype, device, thread count),
    with the seconds its probe measured. One store serves the whole process (`MEASURED`), so two
    pipelines of one model, or a reloaded one, give the same bits."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.chosen: dict[tuple[Any, ...], Layout] = {}
        self.seconds: dict[tuple[Any, ...], dict[str, float]] = {}

    def for_model(self, unet: Any) -> Callable[[Forward, torch.Tensor], torch.Tensor]:
        """``layout(forward, x)`` for ``unet``'s calls, its architecture keyed once (not at every
        call): its config as JSON, or the object itself without one; and its dtype (x may be
        float32 into a bfloat16 UNet, `pndm.models.unet_2d.UNet2DModel.input_conv`)."""
        config = getattr(unet, "config", None)
        model = unet if config is None else json.dumps(dict(config), sort_keys=True, default=str)
        dtype = getattr(unet, "dtype", None)
        return lambda forward, x: self(model, forward, x, dtype)

    def __call__(
        self, model: Any, forward: Forward, x: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``forward`` on x in the layout chosen for its signature (``model``: the architecture's
        key, `for_model`; ``dtype``: the UNet's, default x's; probed on its first call), on the
        CPU; NCHW elsewhere (see `pndm.runtime.fast`)."""
        if x.device.type != "cpu":
            return NCHW(forward, x)
        dtype = x.dtype if dtype is None else dtype
        key = (model, tuple(x.shape), dtype, x.device, torch.get_num_threads())
        if key in self.chosen:
            return self.chosen[key](forward, x)
        layouts = candidates(dtype, key[-1])
        self.chosen[key], out, self.seconds[key] = probe(forward, x, layouts, self.clock)
        return out


MEASURED = MeasuredLayouts()
