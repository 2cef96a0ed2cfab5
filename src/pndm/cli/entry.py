"""The ``pndm`` entry point: the parser of all commands, and the exit status and one-line error
each outcome gets (user errors: ``pndm: error: ...`` on stderr, status 2).

Each command is a module here with ``add(subparsers)``, which registers its parser (and sets
``func=run``), and ``run(args) -> int``, which runs it; `SUBCOMMANDS` lists them in help order.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from pndm.checks import one_line
from pndm.cli import convert, fid, info, pack, sample, train, tune
from pndm.cli.args import PROG, Parser, Subparsers, UsageError
from pndm.cli.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, signals_interrupt

EXIT_USAGE = 2

USER_ERRORS = (UsageError, ValueError, FileNotFoundError, FileExistsError, ImportError)
# Library errors name the argument; the user typed the flag that sets it.
FLAGS = {"num_inference_steps": "--steps", "batch_size": "--batch-size",
         "guidance_scale": "--guidance", "class_labels": "--class"}  # fmt: skip
# an argument's name, not a file's field of that name ("tuning.guidance_scale" stays)
_ARGUMENT_NAMES = re.compile(r"(?<![.\w])(" + "|".join(FLAGS) + r")\b")

# Registration functions, in help order; add a command by writing its module and listing it.
SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    train.add,
    sample.add,
    tune.add,
    pack.add,
    fid.add,
    convert.add,
    info.add,
]


def build_parser() -> argparse.ArgumentParser:
    from pndm import __version__

    parser = Parser(
        prog=PROG,
        description="Pseudo numerical methods for diffusion models (PNDM, ICLR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pndm`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    return _main(argv, process=False)


def _main(argv: Sequence[str] | None, process: bool) -> int:
    """`main`; ``process``: this process is the CLI's own (`run`), so it may end it outright."""
    try:
        with signals_interrupt(process):
            args = build_parser().parse_args(argv)
            return int(args.func(args) or 0)
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except USER_ERRORS as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(err: BaseException) -> str:
    """The error as one line, in the CLI's words (flags instead of argument names)."""
    text = one_line(err) or type(err).__name__
    return _ARGUMENT_NAMES.sub(lambda m: FLAGS[m[1]], text)


def run() -> None:
    """Console-script entry point (and ``python -m pndm.cli``)."""
    sys.exit(_main(None, process=True))
