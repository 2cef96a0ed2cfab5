"""The progress bar every long job shows on stderr (sampling, tuning, features, training): one
place for tqdm's settings, imported lazily so that nothing loads tqdm before it is needed."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, unit: str, enabled: bool = True, **extra: Any) -> Any:
    """A tqdm bar of ``total`` ``unit``s on stderr, cleared when done; ``extra`` goes to tqdm."""
    from tqdm import tqdm

    options = {"file": sys.stderr, "disable": not enabled, "leave": False, **extra}
    return tqdm(total=total, unit=unit, **options)
