"""The README's Python examples run as written (issue 21: paths moved into packages), and every
``pndm`` command line it shows parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str, text: str | None = None) -> list[str]:
    text = README.read_text() if text is None else text
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def section(heading: str) -> str:
    """The README's text under ``## heading``, up to the next ``## `` heading."""
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end < 0 else end]


DIFFUSERS = "Stable Diffusion and other diffusers pipelines"
TINY_SD = """
import tempfile
from pathlib import Path
import diffusers
from benchlib.tiny_diffusers import tiny_sd
_tiny = tiny_sd(Path(tempfile.mkdtemp()))
diffusers.StableDiffusionPipeline.from_pretrained = classmethod(lambda cls, *a, **k: _tiny)
prompt = "a red cube on a table"
"""


def run_python(code: str, cwd: Path) -> None:
    """``code`` in a fresh interpreter in ``cwd``, benchlib importable (as pytest's pythonpath)."""
    path = os.pathsep.join(filter(None, [str(README.parent / "benchmarks"),
                                         os.environ.get("PYTHONPATH")]))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": path}
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=900, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow  # the example tunes a grid on the shipped model: about 50 s on two cores
def test_the_python_examples_run_as_written(tmp_path: Path) -> None:
    """Every example outside the diffusers section (which needs a hub download: below)."""
    outside = README.read_text().replace(section(DIFFUSERS), "")
    code = "\n".join(blocks("python", outside))
    assert "from pndm" in code
    run_python(code, tmp_path)


def test_the_stable_diffusion_examples_run_on_a_tiny_pipeline(tmp_path: Path) -> None:
    """The diffusers section's swap and AYS examples, as written, on the tiny random Stable
    Diffusion pipeline in place of the downloaded one (``from_pretrained`` returns it). Its
    tuning examples take minutes of UNet calls even there: they are compiled and their imports
    run; tests/tuning/test_tune_diffusers.py runs the same calls at small settings."""
    swap, ays, *tuning = blocks("python", section(DIFFUSERS))
    assert "SamplerScheduler.from_config" in swap and "AysSchedules" in ays and len(tuning) == 2
    run_python(TINY_SD + swap + "\n" + ays, tmp_path)
    for block in tuning:
        compile(block, "README.md", "exec")
        imports = [line for line in block.splitlines() if line.startswith(("import ", "from "))]
        run_python("\n".join(imports), tmp_path)


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
