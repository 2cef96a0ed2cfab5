"""SIGTERM and SIGINT while ``pndm`` runs: raised where the program is, so every cleanup runs,
except during torch's first import, where the CLI's own process exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from pndm.cli.args import PROG

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (schedulers, ``docker stop``, torchrun stopping its other ranks), raised where
    the program is, like Ctrl-C, so every cleanup runs and no temporary file is left."""


# signal -> (the exception raised where the program is, the exit status, the word printed)
_STOPS: dict[int, tuple[type[BaseException], int, str]] = {
    signal.SIGTERM: (Terminated, EXIT_TERMINATED, "terminated"),
    signal.SIGINT: (KeyboardInterrupt, EXIT_INTERRUPTED, "interrupted"),
}


@contextlib.contextmanager
def signals_interrupt(process: bool) -> Iterator[None]:
    """SIGTERM raises `Terminated` and SIGINT (if not ignored) KeyboardInterrupt where the
    program is, except, when ``process`` (the CLI owns the process), during torch's first
    import: an exception raised inside its C++ import hooks aborts the process, so the CLI exits
    at once there (nothing is written before torch is loaded). Called in-process (`main`), it
    raises as everywhere else rather than end its host."""
    if threading.current_thread() is not threading.main_thread():  # signals need the main thread
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        error, status, word = _STOPS[signum]
        if process and _importing_torch():
            with contextlib.suppress(OSError):  # no print: stderr's lock may be held here
                os.write(2, f"{PROG}: {word}\n".encode())
            os._exit(status)
        raise error

    ours = [s for s in _STOPS if s != signal.SIGINT or
            signal.getsignal(s) is signal.default_int_handler]  # fmt: skip
    previous = {s: signal.signal(s, stop) for s in ours}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _importing_torch() -> bool:
    """Whether ``import torch`` itself is running (its C++ extension and hooks load then; torch's
    later lazy imports, e.g. torch._dynamo, are plain Python, where raising is safe)."""
    torch = sys.modules.get("torch")
    return bool(getattr(getattr(torch, "__spec__", None), "_initializing", False))
