"""What the adaptive methods (pf, pec-adaptive) share: the error norm their step control uses."""

from __future__ import annotations

import torch


def error_norm(v: torch.Tensor, scale: torch.Tensor) -> float:
    """The largest per-sample RMS of v/scale: every sample meets the tolerance."""
    return float((v / scale).square().flatten(1).mean(1).sqrt().max())
