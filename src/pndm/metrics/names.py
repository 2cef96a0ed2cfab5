"""The metrics' names and defaults, torch-free so that ``pndm --help`` stays fast."""

from __future__ import annotations

FEATURES = ("inception", "digits")  # feature networks; the first is the default
SHIPPED = ("digits",)  # statistics shipped with pndm, by name
DEFAULT_BATCH_SIZE = 50  # pytorch-fid's
