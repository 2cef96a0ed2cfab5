"""The parser pieces every ``pndm`` command shares: the one-line-error parser, the help
formatter, the count type and the arguments several commands declare alike."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

PROG = "pndm"

Subparsers = Any  # argparse._SubParsersAction has no public type
Arguments = Any  # a parser or an argument group (argparse._ActionsContainer is private)


class UsageError(Exception):
    """A mistake in what the user asked for; reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only where a default says something (not for flags or None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def count(text: str) -> int:
    """argparse type of counts (--num-images, --threads): an integer >= 1."""
    from pndm.checks import check_count

    try:
        return check_count("the value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None


def class_label(text: str) -> int | str:
    """argparse type of ``--class``: a class label (digits: an int, even where a class is named
    so), or "random", or else a class name (the model's checks it, `pndm.guidance.label_index`)."""
    return int(text) if text.isascii() and text.isdigit() else text


def add_conditioning(p: Arguments, what: str) -> None:
    """``--class`` and ``--guidance`` of a class-conditional model (`pndm.guidance`); ``what``
    names the thing each label is drawn for ("image", "tuning noise")."""
    p.add_argument("--class", dest="class_labels", type=class_label, default=None,
                   metavar="LABEL|NAME|random",
                   help=f"a class-conditional model's class for every {what}: its label (an "
                   "integer, even where a class's name is digits), a class name its folder records "
                   f"(pndm info shows them), or 'random': each {what}'s from its seed (the same "
                   "on resume, under torchrun)")  # fmt: skip
    p.add_argument("--guidance", type=float, default=1.0, metavar="W",
                   help="classifier-free guidance scale (1: none; needs --class)")  # fmt: skip


def nonempty(text: str) -> str:
    """argparse type of a path kept as typed (``pndm sample --out``: a trailing "/" marks a
    folder), refused when empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path")
    return text


def path(text: str) -> Path:
    """argparse type of every path argument: an empty one is refused (``Path("")`` is ".",
    which would make "--out ''" write into the current folder)."""
    return Path(nonempty(text))


def add_model(p: Arguments) -> None:
    """--model: the pipeline folder to load (sample, tune)."""
    p.add_argument(
        "--model",
        type=path,
        default=None,
        help="pipeline folder, or a shipped model: digits (the default) or digits-cond "
        "(class-conditional: --class, --guidance)",
    )


def add_device(p: Arguments, default: str = "auto") -> None:
    """--device (train, sample, tune, fid)."""
    p.add_argument("--device", default=default, help="auto, cpu, cuda or cuda:N")


def add_threads(p: Arguments, text: str = "torch CPU threads") -> None:
    """--threads (train, sample, tune); ``text``: its help, where a command says more."""
    p.add_argument("--threads", type=count, default=None, help=text)


def add_no_progress(p: Arguments) -> None:
    """--no-progress, stored as ``progress`` (train, sample, tune)."""
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
