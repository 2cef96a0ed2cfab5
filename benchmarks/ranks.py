"""Images/s of ``pndm sample`` on the shipped model: one process against torchrun ranks (CPU).

Each variant is the real command line, run as a subprocess into a fresh folder of per-seed PNGs
(the scalable output), timed by the wall clock of the whole command (start-up and model loading
included, as a user pays them) and by the sampling time pndm prints in its summary. Variants:

    1 process x T threads          pndm sample --threads T
    torchrun K ranks x T/K threads torchrun --standalone --nproc_per_node=K pndm sample
                                   (no --threads: each rank takes its share of the cores)

Every folder must hold byte-identical PNGs to the one-process run at the same threads per
process (the check is recorded; see README, "Several GPUs or nodes"). The variants alternate
within every repeat; the fastest repeat of each is the headline (other load only adds time).

    python benchmarks/ranks.py [--images 48] [--steps 10] [--repeats 2] [--ranks 2]
        [--out benchmarks/results/ranks_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib.machine import device_name

import pndm
from pndm.files.jsonfile import write_json

DEFAULT_OUT = Path(__file__).parent / "results" / "ranks_cpu.json"
SUMMARY = re.compile(r"wrote (\d+) images .* ([0-9.]+) s, ([0-9.]+) images/s")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def variants(ranks: int, cores: int) -> dict[str, list[str]]:
    pndm_cli = ["-m", "pndm.cli", "sample"]
    return {
        f"1 process x {cores} threads": [sys.executable, *pndm_cli, "--threads", str(cores)],
        f"1 process x {cores // ranks} threads": [
            sys.executable, *pndm_cli, "--threads", str(cores // ranks)
        ],
        f"torchrun {ranks} ranks x {cores // ranks} threads": [
            *TORCHRUN, f"--nproc_per_node={ranks}", *pndm_cli
        ],
    }  # fmt: skip


def run(cmd: list[str], out: Path, args: argparse.Namespace) -> dict[str, float]:
    flags = ["--seeds", f"0-{args.images - 1}", "--steps", str(args.steps), "--batch-size", "8"]
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, *flags, "--no-progress", "--out", str(out)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    match = SUMMARY.search(done.stderr)
    if done.returncode or not match:
        sys.exit(f"ranks.py: {' '.join(cmd)} failed:\n{done.stderr}")
    return {"wall_s": wall, "sampling_s": float(match[2]), "images_per_s": float(match[3])}


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("seed*.png"))}


def measure(args: argparse.Namespace) -> dict[str, dict]:
    cores = os.cpu_count() or 1
    table = variants(args.ranks, cores)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in table}
    last: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            names = list(table)
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                last[name] = Path(tmp) / f"{repeat}-{len(runs[name])}-{hash(name)}"
                runs[name].append(run(table[name], last[name], args))
        names = list(table)
        same = pngs(last[names[1]]) == pngs(last[names[2]])  # equal threads per process
    best = {name: min(r, key=lambda x: x["wall_s"]) for name, r in runs.items()}
    base = best[names[0]]["wall_s"]
    for result in best.values():
        result["speed_up_vs_1_process"] = base / result["wall_s"]
    return {"variants": best, "ranks_identical_to_1_process_at_equal_threads": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    result = {
        "command": "python benchmarks/ranks.py " + " ".join(sys.argv[1:]),
        "cpu": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "pndm": pndm.__version__,
        "model": "shipped digits model, f-pndm, batch size 8, PNG folder",
        "images": args.images,
        "steps": args.steps,
        **measure(args),
    }
    write_json(args.out, result)
    for name, r in result["variants"].items():
        print(f"{name:32s} {r['wall_s']:7.1f} s wall  {r['images_per_s']:6.2f} images/s sampling")


if __name__ == "__main__":
    main()
