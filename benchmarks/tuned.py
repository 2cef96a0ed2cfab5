"""Tuned time grids against the best diffusers solver at NFE 5, 6, 8 and 10 (quality.py's rules).

For each problem of `quality.py` (the image-shaped Gaussian mixture, the shipped digits model), on
the same evaluation noise and reference as quality.py's peer table:

* every diffusers peer at every built-in grid option (DDIM's clip_sample on digits too), its best
  kept per NFE, run through quality.py's own loop;
* each pndm method in --methods tuned by `pndm.tuning.tune` (options searched) on *other* noise
  (seed --tune-seed, --tune-samples samples) against the tuner's own teacher, then judged on the
  evaluation noise against quality.py's reference (DOP853 for the mixture, vab 1000 steps for
  digits);
* the factor best tuned pndm error / best peer error (goal: <= 0.5 mixture, <= 0.8 digits);
* digits only: the digits Fréchet distance (`pndm fid ... digits`) of --metric-samples images of
  the best tuned method and of the best peer at each NFE, on the same fresh noise, to check that
  the metric agrees in direction with the RMS error.

    python benchmarks/tuned.py --problem mixture|digits [--methods pec-data,dpmpp-2m,...]

Writes benchmarks/results/tuned_<problem>.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import quality as q
import torch
from speed import device_name

import pndm
from pndm.grids import make_grid
from pndm.io import write_json
from pndm.samplers import SAMPLERS
from pndm.tuning import start_grid, teacher, tune

NFES = (5, 6, 8, 10)
GOALS = {"mixture": 0.5, "digits": 0.8}
METHODS = ("pec-data", "dpmpp-2m", "ipndm", "vab", "pec", "ddim")


def problem_of(name: str, args: argparse.Namespace) -> q.Problem:
    """quality.py's problem (its notes record how accurate a vab reference of --ref-steps steps
    is there) with fresh evaluation noise: --eval-samples from seed --eval-seed, and a vab
    reference of --ref-steps steps on the EDM grid. Many samples, because the mixture's error is
    heavy-tailed: a few percent of samples change mode at low NFE and dominate the RMS."""
    if name == "mixture":
        base = q.mixture_problem(16, 0, args.ref_steps)
    else:
        base = q.digits_problem(16, 0, args.ref_steps)
    noise = seeded_noise(base, args.eval_samples, args.eval_seed)
    grid = make_grid("edm", base.schedule, args.ref_steps)
    with torch.no_grad():
        reference = SAMPLERS["vab"](base.eps_fn, noise, grid, base.schedule)
    notes = {**base.notes, "evaluation": f"{args.eval_samples} samples, seed {args.eval_seed}, "
             f"reference vab {args.ref_steps} steps edm (accuracy: the notes of quality.py's "
             "16-sample problem above)"}  # fmt: skip
    return q.Problem(name, base.eps_fn, base.schedule, base.config, noise, reference, notes)


def seeded_noise(problem: q.Problem, samples: int, seed: int) -> torch.Tensor:
    """torch.randn noise of the problem's image shape and dtype from generator seed ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shape = (samples, *problem.noise.shape[1:])
    return torch.randn(shape, generator=g, dtype=problem.noise.dtype)


def peer_tries(problem: q.Problem) -> Callable[[q.Peer, int], list[dict[str, Any]]]:
    def tries(peer: q.Peer, target: int) -> list[dict[str, Any]]:
        options = q.peer_options(peer)
        if peer.scheduler == "DDIMScheduler" and problem.name == "digits":
            options = [{**o, "clip_sample": c} for o in options for c in (False, True)]
        return options

    return tries


def best_peers(problem: q.Problem, nfes: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    """NFE -> the lowest-error peer run (every peer, every option)."""
    best: dict[int, dict[str, Any]] = {}
    for r in q.sweep_peers(problem, nfes, peer_tries(problem)):
        better = r["nfe"] not in best or r["error"] < best[r["nfe"]]["error"]
        if r["error"] is not None and better:
            best[r["nfe"]] = r
    return best


def tuned_run(
    problem: q.Problem, noise: torch.Tensor, ref: torch.Tensor, method: str, nfe: int,
    budget: int | None,
) -> dict[str, Any]:  # fmt: skip
    """Tune on ``noise`` (teacher ``ref``), judge on the problem's evaluation noise."""
    result = tune(
        problem.eps_fn, problem.schedule, noise, method=method, nfe=nfe, reference=ref,
        search_options=True, budget=budget,
    )  # fmt: skip
    counter = q.CountingEps(problem.eps_fn)
    x = SAMPLERS[method](counter, problem.noise, result.timesteps, problem.schedule,
                         **result.options)  # fmt: skip
    if counter.calls != nfe:
        raise RuntimeError(f"{method}: {counter.calls} calls on the tuned grid, expected {nfe}")
    start = start_grid(result.start_grid, problem.schedule, result.timesteps.numel() - 1)
    x_start = SAMPLERS[method](problem.eps_fn, problem.noise, start, problem.schedule,
                               **result.options)  # fmt: skip
    return {
        "start_grid_error": problem.error(x_start),
        "method": method, "nfe": nfe, "error": problem.error(x), "tuning_error": result.error,
        "start_error": result.start_error, "start_grid": result.start_grid,
        "options": result.options, "timesteps": result.timesteps.tolist(),
        "tuning_model_calls": result.model_calls, "tuning_seconds": result.seconds,
    }  # fmt: skip


def rescore(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Add ``start_grid_error`` (the starting grid, same options, on the evaluation noise) to the
    runs of a report written before it was measured."""
    import json

    report = json.loads(path.read_text())
    problem = problem_of(args.problem, args)
    for run in report["runs"]:
        start = start_grid(run["start_grid"], problem.schedule, len(run["timesteps"]) - 1)
        x = SAMPLERS[run["method"]](problem.eps_fn, problem.noise, start, problem.schedule,
                                    **run["options"])  # fmt: skip
        run["start_grid_error"] = problem.error(x)
    for row in report["rows"].values():
        match = [r for r in report["runs"] if r["timesteps"] == row["tuned"]["timesteps"]]
        row["tuned"]["start_grid_error"] = match[0]["start_grid_error"]
    return report


def metric_check(
    problem: q.Problem, best: dict[str, Any], peer: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Digits Fréchet distance of the tuned method and of the best peer on the same fresh noise."""
    from pndm.images import to_uint8
    from pndm.metrics import core as metric
    from pndm.metrics import frechet_distance, load_statistics, statistics_of

    noise = seeded_noise(problem, args.metric_samples, args.metric_seed)
    fresh = q.Problem("digits", problem.eps_fn, problem.schedule, problem.config, noise)
    times = torch.tensor(best["timesteps"], dtype=torch.float64)
    ours = SAMPLERS[best["method"]](problem.eps_fn, noise, times, problem.schedule,
                                    **best["options"])  # fmt: skip
    scheduler = q.peer_steps(q.PEERS[q.PEER_NAMES.index(peer["method"])], problem.config,
                             peer["option"], peer["nfe"])  # fmt: skip
    theirs, _ = q.run_peer(fresh, q.PEERS[q.PEER_NAMES.index(peer["method"])], scheduler)
    ref = load_statistics(metric.SHIPPED["digits"])
    extractor = metric.extractor("digits", torch.device("cpu"))

    def score(x: torch.Tensor) -> float:
        images = to_uint8(((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())
        return frechet_distance(statistics_of(metric.features(images, extractor, 250, False)), ref)

    return {"samples": args.metric_samples, "tuned": score(ours), "peer": score(theirs)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    nfes = tuple(int(v) for v in args.nfes.split(","))
    problem = problem_of(args.problem, args)
    peers = best_peers(problem, nfes)
    q.log(f"{args.problem}: peers done")
    noise = seeded_noise(problem, args.tune_samples, args.tune_seed)
    start = time.perf_counter()
    ref = teacher(problem.eps_fn, problem.schedule, noise)
    teacher_seconds = time.perf_counter() - start
    check = teacher(problem.eps_fn, problem.schedule, problem.noise)
    runs = []
    for nfe in nfes:
        for method in args.methods.split(","):
            runs.append(tuned_run(problem, noise, ref, method, nfe, args.budget))
            q.log(f"{method} {nfe}: {runs[-1]['error']:.3e} ({runs[-1]['tuning_seconds']:.0f} s)")
    rows = {nfe: summary(problem, nfe, runs, peers[nfe], args) for nfe in nfes}
    return {
        "problem": args.problem, "notes": problem.notes, "nfes": nfes, "goal": GOALS[args.problem],
        "teacher": {"steps": 200, "seconds": teacher_seconds,
                    "rms_vs_reference_on_eval_noise": problem.error(check)},
        "tuning_noise": {"samples": args.tune_samples, "seed": args.tune_seed},
        "rows": rows, "runs": runs, "setup": setup(args),
    }  # fmt: skip


def summary(
    problem: q.Problem, nfe: int, runs: list, peer: dict, args: argparse.Namespace
) -> dict[str, Any]:
    ours = min((r for r in runs if r["nfe"] == nfe), key=lambda r: r["error"])
    row = {"peer": {k: peer[k] for k in ("method", "option", "error")}, "tuned": ours,
           "factor": ours["error"] / peer["error"]}  # fmt: skip
    row["goal_met"] = row["factor"] <= GOALS[problem.name]
    if problem.name == "digits" and args.metric_samples:
        row["digits_metric"] = metric_check(problem, ours, peer, args)
    return row


def setup(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "device": device_name(torch.device("cpu")), "torch": torch.__version__,
        "diffusers": q.diffusers.__version__, "numpy": np.__version__,
        "pndm": pndm.__version__, "python": platform.python_version(),
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    goal = report["goal"]
    lines = [
        f"| NFE | best diffusers (option) | error | best tuned pndm (options) | error | its start "
        f"grid | factor (goal <= {goal}) | tuning cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nfe, row in sorted(report["rows"].items(), key=lambda kv: int(kv[0])):
        p, t = row["peer"], row["tuned"]
        start = t.get("start_grid_error")
        start_text = "–" if start is None else f"{start:.3g} ({t['start_grid']})"
        cost = f"{t['tuning_model_calls']} calls, {t['tuning_seconds']:.0f} s"
        lines.append(
            f"| {nfe} | {p['method']} ({q.label(p['option'])}) | {p['error']:.3g} | {t['method']} "
            f"({_options(t['options'])}) | {t['error']:.3g} | {start_text} | {row['factor']:.2f} "
            f"| {cost} |"
        )
    return "\n".join(lines)


def _options(options: dict[str, Any]) -> str:
    on = [k if v is True else f"{k}={v}" for k, v in options.items() if v is not False]
    return ", ".join(on) or "defaults"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=tuple(GOALS), required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--nfes", default=",".join(map(str, NFES)))
    parser.add_argument("--eval-samples", type=int, default=1024)
    parser.add_argument("--eval-seed", type=int, default=2)
    parser.add_argument("--ref-steps", type=int, default=1000)
    parser.add_argument("--tune-samples", type=int, default=256)
    parser.add_argument("--tune-seed", type=int, default=1)
    parser.add_argument("--metric-samples", type=int, default=1000)
    parser.add_argument("--metric-seed", type=int, default=3)
    parser.add_argument("--budget", type=int, default=None, help="tuner evaluations per option set")
    parser.add_argument("--tag", default="", help="suffix of the JSON name")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--rescore", action="store_true", help="add start-grid errors to the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = args.out / f"tuned_{args.problem}{args.tag}.json"
    report = rescore(path, args) if args.rescore else measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
