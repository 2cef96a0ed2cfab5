"""The ``pndm`` command line: ``train``, ``sample``, ``tune``, ``pack``, ``fid``, ``convert``,
``info``; `run` is the console script, `main` runs it in-process (see `pndm.cli.entry`)."""

from pndm.cli.entry import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
