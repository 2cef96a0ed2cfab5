"""The PNDM paper's table on a trained network: the shipped digits model and the digits metric.

Cells: DDIM at 10, 20, 50, 100, 250 and 1000 steps; S-PNDM, F-PNDM, PLMS, iPNDM and FON at 10, 20,
50 and 100 steps; PF (adaptive RK45, the paper's rtol = atol = 1e-5) once. Every cell samples the
same seeds (set A: 0..n-1; set B: n..2n-1) on the pipeline's default grid (the shipped scheduler's
"leading" spacing), counts the model calls, and is scored by the Fréchet distance in the digits
feature space (`pndm fid samples.npz digits`); the claim's margin is a paired bootstrap over seeds
(a single cell's bootstrap would be biased: duplicated seeds raise a Fréchet distance) and set B.

Sampling is slow on a CPU (about 1 M image-evaluations for DDIM-1000 at 1000 samples), so cells run
in a priority order, each cell's images are cached as .npz under --cache the moment it finishes,
and so is each batch of a cell: stop it at any time, run it again to go on. A cell stopped part-way
is scored on the seeds it has and marked "n=..." in the table.

    python benchmarks/paper_table.py [--samples 1000] [--seed-sets 2] [--budget-min 90]
        [--cache .cache/paper_table] [--out benchmarks/results/paper_table.json] [--sample-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.machine import device_name

import pndm
from pndm import PNDMPipeline
from pndm.assets import shipped_model_path
from pndm.files.atomic import atomic_write
from pndm.files.jsonfile import write_json
from pndm.images import to_uint8
from pndm.metrics import Statistics, frechet_distance, load_statistics, statistics_of
from pndm.metrics import core as metric
from pndm.metrics.core import SHIPPED

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "paper_table.json"
DEFAULT_CACHE = ROOT / ".cache" / "paper_table"
DDIM_STEPS = (10, 20, 50, 100, 250, 1000)
PNDM_STEPS = (10, 20, 50, 100)
FAMILY = ("s-pndm", "f-pndm", "plms", "ipndm", "fon")
PF_OPTIONS = {"rtol": 1e-5, "atol": 1e-5}  # the paper's scipy RK45 tolerances
Cell = tuple[str, int, int]  # (method, steps, seed set); pf's steps are 0 (adaptive)


def cells(seed_sets: int) -> list[Cell]:
    """Every cell in priority order: set A's 10-step cells, the claim (F-PNDM 50, DDIM 50, DDIM
    1000), set A's 20-step cells, set B's claim neighbours, set A's other 50-step cells and DDIM
    250, then the rest."""
    short = [(m, n) for n in PNDM_STEPS if n <= 50 for m in ("ddim", *FAMILY)]
    claim = [("f-pndm", 50), ("ddim", 50), ("ddim", 1000)]
    rest = [("ddim", 250)] + [(m, 100) for m in ("ddim", *FAMILY)] + [("pf", 0)]
    order = [(m, n, 0) for m, n in [*short[:6], *claim, *short[6:12]]]
    order += [(m, n, s) for s in range(1, seed_sets) for m, n in claim[:2]]
    order += [(m, n, 0) for m, n in [*short[12:], *rest]]
    order += [(m, n, s) for s in range(1, seed_sets) for m, n in [*short, *claim, *rest]]
    return list(dict.fromkeys(order))


def cell_name(cell: Cell) -> str:
    """'method-steps-set', e.g. 'ddim-100-0' (pf: 'pf-0-0'), as --cells takes it."""
    return "-".join(map(str, cell))


def cache_path(cache: Path, cell: Cell, samples: int) -> Path:
    method, steps, seed_set = cell
    return cache / f"{method}-{steps}-set{seed_set}-n{samples}.npz"


def part_path(cache: Path, cell: Cell, samples: int, batch: int, k: int) -> Path:
    """Batch k of a cell: seeds seed_set * samples + k * batch onwards."""
    return cache_path(cache, cell, samples).with_suffix(f".b{batch}.part{k}.npz")


def sample_cell(
    pipe: PNDMPipeline, cell: Cell, samples: int, batch: int, cache: Path
) -> dict[str, Any]:
    """uint8 NHWC images of one cell, its model calls per batch (pf: the mean) and seconds. Each
    batch is cached as it finishes (``.bB.partK.npz``), so a stopped cell resumes where it was."""
    method, steps, seed_set = cell
    seeds = list(range(seed_set * samples, (seed_set + 1) * samples))
    parts = []
    for k, i in enumerate(range(0, samples, batch)):
        part = part_path(cache, cell, samples, batch, k)
        if not part.exists():
            save_cell(part, sample_batch(pipe, method, steps, seeds[i : i + batch]))
        parts.append(part)
    loaded = [dict(np.load(part)) for part in parts]
    return {
        "images": np.concatenate([p["arr_0"] for p in loaded]),
        "nfe": float(np.mean([p["nfe"] for p in loaded])),
        "seconds": float(np.sum([p["seconds"] for p in loaded])),
        "parts": parts,
    }


def sample_batch(pipe: PNDMPipeline, method: str, steps: int, seeds: list[int]) -> dict[str, Any]:
    calls, start = [0], time.perf_counter()
    out = pipe(
        len(seeds),
        num_inference_steps=steps or 1000,  # pf integrates t_0 = 999 -> final target
        output_type="np",
        method=method,
        seeds=seeds,
        callback=lambda *_: calls.__setitem__(0, calls[0] + 1),
        **(PF_OPTIONS if method == "pf" else {}),
    )
    seconds = time.perf_counter() - start
    return {"images": to_uint8(out.images), "nfe": calls[0], "seconds": seconds}


def save_cell(path: Path, result: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=result["images"], nfe=result["nfe"], seconds=result["seconds"])

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def run_cells(args: argparse.Namespace) -> Iterator[Cell]:
    """Sample every missing cell in order until the time budget is spent; yields finished cells."""
    pipe = PNDMPipeline.from_pretrained(shipped_model_path())
    pipe.set_progress_bar_config(disable=True)
    deadline = time.monotonic() + args.budget_min * 60
    for cell in cells(args.seed_sets):
        path = cache_path(args.cache, cell, args.samples)
        if path.exists() or (args.cells and cell_name(cell) not in args.cells):
            continue
        if time.monotonic() > deadline:
            print(f"time budget spent; not sampled: {cell}", flush=True)
            continue
        result = sample_cell(pipe, cell, args.samples, args.batch, args.cache)
        save_cell(path, result)
        for part in result["parts"]:
            part.unlink()
        print(f"{cell}: nfe {result['nfe']}, {result['seconds']:.0f} s", flush=True)
        yield cell


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed-sets", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250)  # larger: page-fault bound on CPU
    parser.add_argument("--budget-min", type=float, default=float("inf"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sample-only", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="score the cached cells only")
    parser.add_argument("--cells", nargs="+", metavar="METHOD-STEPS-SET", help="sample only these")
    args = parser.parse_args(argv)
    unknown = set(args.cells or ()) - {cell_name(c) for c in cells(args.seed_sets)}
    if unknown:
        parser.error(f"unknown cells {sorted(unknown)}; names look like ddim-100-0 or pf-0-0")
    if not args.report_only:
        for _ in run_cells(args):
            pass
    if not args.sample_only:
        previous = json.loads(args.out.read_text()) if args.out.exists() else None
        result = merged(previous, report(args))
        write_json(args.out, result)
        print(markdown(result))


# ----------------------------------------------------------------------------- scoring

BOOTSTRAP = 200  # paired resamples of the seeds; the margin is their 2.5-97.5 % range


def load_cell(cache: Path, cell: Cell, samples: int, batch: int) -> dict[str, Any] | None:
    """A finished cell, else its finished batches (a partial cell on the first seeds), else None."""
    path = cache_path(cache, cell, samples)
    batches = (part_path(cache, cell, samples, batch, k) for k in itertools.count())
    parts = [path] if path.exists() else list(itertools.takewhile(Path.exists, batches))
    if not parts:
        return None
    loaded = [dict(np.load(part)) for part in parts]
    images = np.concatenate([p["arr_0"] for p in loaded])
    return {
        "images": images,
        "nfe": float(np.mean([p["nfe"] for p in loaded])),
        "seconds": float(np.sum([p["seconds"] for p in loaded])),
    }


def features_of(images: np.ndarray) -> np.ndarray:
    """(n, 64) digits features in seed order, exactly as ``pndm fid ... digits`` computes them."""
    return metric.features(images, metric.extractor("digits", torch.device("cpu")), 250, False)


def score(features: np.ndarray, ref: Statistics, index: np.ndarray | None = None) -> float:
    return frechet_distance(statistics_of(features if index is None else features[index]), ref)


def resamples(n: int) -> np.ndarray:
    """The bootstrap's seed indices for n samples (the same for every cell of that size)."""
    return np.random.default_rng(0).integers(0, n, (BOOTSTRAP, n))


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Every cached cell scored; the claim's paired bootstrap (same resampled seeds in both)."""
    ref, size = load_statistics(SHIPPED["digits"]), args.samples
    rows, features = [], {}
    for cell in cells(args.seed_sets):
        found = load_cell(args.cache, cell, args.samples, args.batch)
        if found is None:
            continue
        features[cell] = f = features_of(found["images"])
        method, steps, seed_set = cell
        rows.append({"method": method, "steps": steps, "seed_set": seed_set, "samples": len(f),
                     "complete": len(f) == args.samples, "nfe": found["nfe"],
                     "seconds": found["seconds"], "metric": score(f, ref)})  # fmt: skip
    return {
        "benchmark": "paper_table",
        "model": "shipped digits (pndm.assets.shipped_model_path())",
        "metric": "Fréchet distance in the digits feature space vs the shipped digits statistics",
        "samples_per_cell": args.samples,
        "seed_sets": [[s * size, (s + 1) * size - 1] for s in range(args.seed_sets)],
        "grid": "the pipeline's default (scheduler timestep_spacing 'leading')",
        "pf_options": PF_OPTIONS,
        "cells": rows,
        "claims": claims(features, ref),
        "floor_training_digits": floor(ref, args.samples),
        "versions": {
            "pndm": pndm.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "device": device_name(torch.device("cpu")),
    }


def merged(previous: dict[str, Any] | None, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the rows and claims of an earlier report whose cells are no longer cached
    (the cache is local and may be gone; a cell is scored once from its images and kept)."""
    if previous is None:
        return result
    scored = {_row_cell(r) for r in result["cells"]}
    kept = [r for r in previous["cells"] if _row_cell(r) not in scored]
    claimed = {(tuple(c["a"]), tuple(c["b"])) for c in result["claims"]}
    old = [c for c in previous["claims"] if (tuple(c["a"]), tuple(c["b"])) not in claimed]
    rows = sorted(result["cells"] + kept, key=lambda r: (r["seed_set"], r["method"], r["steps"]))
    return {**result, "cells": rows, "claims": old + result["claims"]}


def _row_cell(row: dict[str, Any]) -> Cell:
    return row["method"], row["steps"], row["seed_set"]


def _interval(values: list[float]) -> list[float]:
    return [float(np.percentile(values, q)) for q in (2.5, 97.5)]


def claims(features: dict[Cell, np.ndarray], ref: Statistics) -> list:
    """metric(a) − metric(b) on the seeds both have, with a paired bootstrap interval."""
    pairs = [(("f-pndm", 50, s), ("ddim", 1000, s)) for s in range(2)]
    pairs += [(("f-pndm", 50, s), ("ddim", 50, s)) for s in range(2)]
    pairs += [(("f-pndm", 50, s), ("ddim", 250, s)) for s in range(2)]
    out = []
    for a, b in pairs:
        if a in features and b in features:
            n = min(len(features[a]), len(features[b]))
            fa, fb = features[a][:n], features[b][:n]
            diff = [score(fa, ref, i) - score(fb, ref, i) for i in resamples(n)]
            value = score(fa, ref) - score(fb, ref)
            out.append({"a": a, "b": b, "samples": n, "difference": value,
                        "bootstrap_95": _interval(diff)})  # fmt: skip
    return out


def floor(ref: Statistics, samples: int) -> float:
    """The metric of ``samples`` real digits (drawn from the reference's own 1797: optimistic)."""
    from pndm.metrics.digits_train import digits_images

    images = digits_images()[0]
    pick = np.random.default_rng(0).choice(len(images), min(samples, len(images)), replace=False)
    return score(features_of(images[pick]), ref)


def _cell_text(row: dict[str, Any]) -> str:
    partial = "" if row["complete"] else f", n={row['samples']}"
    return f"{row['metric']:.1f} ({row['nfe']:.0f}{partial})"


def markdown(result: dict[str, Any]) -> str:
    """The table: one row per method, one column per step count (pf's adaptive one last); cells
    'metric (NFE)'."""
    steps = sorted({r["steps"] for r in result["cells"]} | set(DDIM_STEPS), key=lambda n: n or 1e9)
    lines = ["| method | " + " | ".join(str(n) if n else "adaptive" for n in steps) + " |"]
    lines.append("|---" * (len(steps) + 1) + "|")
    for method in ("ddim", *FAMILY, "pf"):
        found = {
            r["steps"]: r for r in result["cells"] if r["method"] == method and r["seed_set"] == 0
        }
        if not found:
            continue
        row = [_cell_text(found[n]) if n in found else "–" for n in steps]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
