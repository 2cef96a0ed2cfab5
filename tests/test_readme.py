"""The README's Python examples run as written (issue 21: paths moved into packages), and every
``pndm`` command line it shows parses."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.S | re.M)


@pytest.mark.slow  # the example tunes a grid on the shipped model: about 50 s on two cores
def test_the_python_examples_run_as_written(tmp_path: Path) -> None:
    code = "\n".join(blocks("python"))
    assert "from pndm" in code
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


def test_every_pndm_command_shown_parses() -> None:
    """Each ``pndm ...`` line of the README's shell blocks is accepted by the parser (its files
    need not exist): a renamed flag or command fails here."""
    from pndm.cli.entry import build_parser

    lines = [line.split("#")[0].strip() for block in blocks("bash") for line in block.splitlines()]
    parts = [part.strip() for line in lines for part in line.split("&&")]
    commands = [part for part in parts if part.startswith("pndm ")]
    assert len(commands) >= 10
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])
