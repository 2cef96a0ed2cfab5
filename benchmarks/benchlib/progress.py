"""Progress lines on stderr, stamped with the seconds since the harness started."""

from __future__ import annotations

import sys
import time

LOADED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the module was loaded."""
    print(f"[{time.perf_counter() - LOADED:6.0f} s] {message}", file=sys.stderr, flush=True)
