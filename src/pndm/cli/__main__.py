"""``python -m pndm.cli``: the command line (torchrun launches it this way)."""

from pndm.cli import run

run()
