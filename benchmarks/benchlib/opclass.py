"""Where a pipeline call's time goes: torch.profiler's operators grouped into classes.

Each operator's self time (its own, not its children's) is put in one class by its name; the
operators run inside a UNet forward are marked by a profiler range around the forward, and every
operator outside one (noise, the solver's arithmetic, post-processing) is "solver". The self time
of the range itself (Python and dispatch between the operators) and views and allocations are
"other".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile, record_function

UNET_RANGE = "roofline::unet_forward"
# Checked in order: the first class whose any name part occurs in the operator's name wins.
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolutions", ("conv",)),
    ("attention", ("scaled_dot_product", "softmax", "attention")),
    ("matmul/linear", ("addmm", "::mm", "bmm", "matmul", "linear", "einsum")),
    ("norms", ("group_norm", "layer_norm", "batch_norm")),
    ("activations", ("silu", "gelu", "mish", "relu", "sigmoid", "tanh")),
    ("conversions", ("copy_", "::to", "_to_copy", "contiguous", "clone")),
    ("elementwise", ("add", "sub", "mul", "div", "cat", "pad", "where", "exp", "sqrt", "pow")),
)
CLASS_NAMES = (*(name for name, _ in CLASSES), "solver", "other")


def op_class(name: str) -> str:
    """The class of an operator run inside the UNet ("other" for any it does not know)."""
    for cls, parts in CLASSES:
        if any(part in name for part in parts):
            return cls
    return "other"


def in_unet(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == UNET_RANGE:
            return True
        parent = parent.cpu_parent
    return False


def marked(unet: Any) -> Callable[[], None]:
    """A profiler range around every forward of ``unet``; returns the function that removes it."""
    ranges: list[Any] = []

    def enter(*_: Any) -> None:
        ranges.append(record_function(UNET_RANGE))
        ranges[-1].__enter__()

    def leave(*_: Any) -> None:
        ranges.pop().__exit__(None, None, None)

    handles = [unet.register_forward_pre_hook(enter), unet.register_forward_hook(leave)]

    def unmark() -> None:
        for handle in handles:
            handle.remove()

    return unmark


def class_times(events: Any) -> dict[str, float]:
    """Seconds of self time per class over the profiled events."""
    seconds = dict.fromkeys(CLASS_NAMES, 0.0)
    for event in events:
        if event.name == UNET_RANGE:
            cls = "other"
        elif not in_unet(event):
            cls = "solver"
        else:
            cls = op_class(event.name)
        seconds[cls] += event.self_cpu_time_total / 1e6
    return seconds


def profile_call(run: Callable[[], Any], unet: Any, repeats: int = 2, top: int = 8) -> dict:
    """The class shares of the fastest of ``repeats`` profiled calls of ``run`` (on a shared
    machine other load only ever adds time): its traced seconds, each class's seconds and share,
    and its ``top`` operators by self time."""
    best: dict[str, Any] | None = None
    unmark = marked(unet)
    try:
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            seconds = class_times(prof.events())
            total = sum(seconds.values())
            if best is None or total < best["traced_s"]:
                ops = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
                ops = sorted(ops, key=lambda r: -r[1])[:top]
                best = {"traced_s": total, "seconds": seconds, "top_ops": ops}
    finally:
        unmark()
    assert best is not None
    best["shares"] = {k: v / best["traced_s"] for k, v in best["seconds"].items()}
    return best
