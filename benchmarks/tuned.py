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
        [--pairs 5:dpmpp-2m,8:ipndm] [--calibrate] [--tag _name]
    python benchmarks/tuned.py --problem digits --tag _name --tails   # per-sample statistics
    python benchmarks/tuned.py --problem digits --tag _name --ode-metric   # the ODE's own score
    python benchmarks/tuned.py --problem digits-cond --guidance 5 --merge _vab   # best of both

With --calibrate each tuned grid also gets its calibration (`pndm.calibration`); the rows then
give the same grid's error without it too. --tails adds, to a written report, the per-sample
error statistics of each row's tuned method and peer (median, 90th percentile, worst, RMS without
the worst 2 %): at low NFE a few hard samples dominate the RMS. --ode-metric adds, to a written
digits report, the digits metric of the ODE's own solution on the metric noise (the teacher's
end points): the score a sampler tends to as it converges.

Writes benchmarks/results/tuned_<problem><tag>.json (after every NFE, so a long run keeps what it
finished) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from benchlib.digits_metric import class_accuracy, digits_score
from benchlib.machine import device_name
from benchlib.measure import CountingEps
from benchlib.peers import PEER_NAMES, PEERS, Peer, peer_options, peer_steps, run_peer, sweep_peers
from benchlib.problems import (
    Problem,
    digits_model,
    digits_problem,
    guided_digits,
    mixture_problem,
)
from benchlib.progress import log
from benchlib.results import label

import pndm
from pndm.calibration import Calibration
from pndm.files.jsonfile import write_json
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS
from pndm.tuning.api import tune
from pndm.tuning.objective import teacher
from pndm.tuning.spaces import start_grid

NFES = (5, 6, 8, 10)
GOALS = {"mixture": 0.5, "digits": 0.8, "digits-cond": 0.6}
ACCURACY_NFE = 6  # digits-cond: the conditional accuracy goal's NFE


def goal(name: str, nfe: int, scale: float) -> float | None:
    """The issue's goal factor (tuned / best peer) of a row; None: measured only. digits-cond
    (issue 24): 0.6 under guidance, 0.5 without, 0.8 at NFE 4, none at NFE 3."""
    if name != "digits-cond":
        return GOALS[name]
    return {3: None, 4: 0.8}.get(nfe, 0.5 if scale == 1 else 0.6)


METHODS = ("pec-data", "dpmpp-2m", "ipndm", "vab", "pec", "ddim")


def problem_of(name: str, args: argparse.Namespace) -> Problem:
    """quality.py's problem (its notes record how accurate a vab reference of --ref-steps steps
    is there) with fresh evaluation noise: --eval-samples from seed --eval-seed, and a vab
    reference of --ref-steps steps on the EDM grid. Many samples, because the mixture's error is
    heavy-tailed: a few percent of samples change mode at low NFE and dominate the RMS."""
    if name == "digits-cond":
        return guided_problem(args)
    if name == "mixture":
        base = mixture_problem(16, 0, args.ref_steps)
    else:
        base = digits_problem(16, 0, args.ref_steps)
    noise = seeded_noise(base, args.eval_samples, args.eval_seed)
    grid = make_grid("edm", base.schedule, args.ref_steps)
    with torch.no_grad():
        reference = SAMPLERS["vab"](base.eps_fn, noise, grid, base.schedule)
    notes = {**base.notes, "evaluation": f"{args.eval_samples} samples, seed {args.eval_seed}, "
             f"reference vab {args.ref_steps} steps edm (accuracy: the notes of quality.py's "
             "16-sample problem above)"}  # fmt: skip
    return Problem(name, base.eps_fn, base.schedule, base.config, noise, reference, notes)


def guided_problem(args: argparse.Namespace) -> Problem:
    """digits-cond under guidance --guidance: --eval-samples noises from --eval-seed toward labels
    0, 1, ..., 9, 0, ... (every class alike); reference vab, --ref-steps steps on the EDM grid
    (its accuracy: the report's teacher, 200 steps, against it)."""
    g = torch.Generator().manual_seed(args.eval_seed)
    noise = torch.randn((args.eval_samples, 1, 16, 16), generator=g, dtype=torch.float64)
    problem = guided_digits(args.guidance, noise, torch.arange(args.eval_samples) % 10)
    start = time.perf_counter()
    grid = make_grid("edm", problem.schedule, args.ref_steps)
    with torch.no_grad():
        problem.reference = SAMPLERS["vab"](problem.eps_fn, noise, grid, problem.schedule)
    problem.notes = {
        "reference": f"vab (order 4), {args.ref_steps} steps, edm grid, float64 state, "
        "float32 UNet", "reference_seconds": time.perf_counter() - start,
        "evaluation": f"{args.eval_samples} samples, seed {args.eval_seed}, labels i % 10",
        "guidance_scale": args.guidance,
    }  # fmt: skip
    return problem


def fresh_problem(problem: Problem, samples: int, seed: int, random_labels: bool) -> Problem:
    """The problem from ``samples`` noises of seed ``seed`` (a guided one toward random labels of
    generator seed ``seed`` + 1 or toward 0, 1, ..., 9, 0, ...), no reference."""
    noise = seeded_noise(problem, samples, seed)
    if problem.labels is None:
        return problem.with_noise(noise)
    g = torch.Generator().manual_seed(seed + 1)
    labels = (
        torch.randint(10, (samples,), generator=g) if random_labels else torch.arange(samples) % 10
    )
    return problem.with_noise(noise, labels)


def seeded_noise(problem: Problem, samples: int, seed: int) -> torch.Tensor:
    """torch.randn noise of the problem's image shape and dtype from generator seed ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shape = (samples, *problem.noise.shape[1:])
    return torch.randn(shape, generator=g, dtype=problem.noise.dtype)


def peer_tries(problem: Problem) -> Callable[[Peer, int], list[dict[str, Any]]]:
    def tries(peer: Peer, target: int) -> list[dict[str, Any]]:
        options = peer_options(peer)
        if peer.scheduler == "DDIMScheduler" and problem.name.startswith("digits"):
            options = [{**o, "clip_sample": c} for o in options for c in (False, True)]
        return options

    return tries


def best_peers(problem: Problem, nfes: tuple[int, ...], select: int) -> dict[int, dict[str, Any]]:
    """NFE -> the lowest-error peer run (every peer, every option). With ``select`` > 0 each
    peer's options are swept on the first ``select`` noises only and its best one is judged on
    them all (the cost of a guided problem); the row then lists every peer's."""
    best: dict[tuple[int, str], dict[str, Any]] = {}
    sweep_on = problem.head(select) if select else problem
    for r in sweep_peers(sweep_on, nfes, peer_tries(problem)):
        key = (r["nfe"], r["method"])
        if r["error"] is not None and (key not in best or r["error"] < best[key]["error"]):
            best[key] = r
    if select:
        best = {
            k: {**r, "error": problem.error(run_best_peer(problem, r))} for k, r in best.items()
        }
    rows = {}
    for nfe in nfes:
        mine = [r for (n, _), r in best.items() if n == nfe]
        rows[nfe] = {**min(mine, key=lambda r: r["error"])}
        if select:
            rows[nfe]["each"] = {r["method"]: [r["option"], r["error"]] for r in mine}
    return rows


def tuned_run(
    problem: Problem, tuning: Problem, ref: torch.Tensor, method: str, nfe: int,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Tune on ``tuning`` (teacher ``ref``), judge on the problem's evaluation noise."""
    result = tune(
        tuning.eps_fn, problem.schedule, tuning.noise, method=method, nfe=nfe, reference=ref,
        search_options=True, budget=args.budget, calibrate=args.calibrate,
    )  # fmt: skip
    calibration = result.calibration
    counter = CountingEps(problem.eps_fn if calibration is None else
                          calibration.apply(problem.eps_fn))  # fmt: skip
    x = SAMPLERS[method](counter, problem.noise, result.timesteps, problem.schedule,
                         **result.options)  # fmt: skip
    if counter.calls != nfe:
        raise RuntimeError(f"{method}: {counter.calls} calls on the tuned grid, expected {nfe}")
    start = start_grid(result.start_grid, problem.schedule, result.timesteps.numel() - 1)
    run = {
        "start_grid_error": error_on(problem, method, start, result.options),
        "method": method, "nfe": nfe, "error": problem.error(x), "tuning_error": result.error,
        "start_error": result.start_error, "start_grid": result.start_grid,
        "options": result.options, "timesteps": result.timesteps.tolist(),
        "tuning_model_calls": result.model_calls, "tuning_seconds": result.seconds,
    }  # fmt: skip
    if args.calibrate:  # the same grid without its calibration, on the evaluation noise
        run["grid_error"] = error_on(problem, method, result.timesteps, result.options)
        run["tuning_grid_error"] = result.grid_error
        run["calibration"] = None if calibration is None else calibration.to_json()
    return run


def error_on(problem: Problem, method: str, grid: torch.Tensor, options: dict[str, Any]) -> float:
    """The error of ``method`` on ``grid`` (uncalibrated) on the problem's evaluation noise."""
    x = SAMPLERS[method](problem.eps_fn, problem.noise, grid, problem.schedule, **options)
    return problem.error(x)


def rescore(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Add ``start_grid_error`` (the starting grid, same options, on the evaluation noise) to the
    runs of a report written before it was measured."""
    import json

    report = json.loads(path.read_text())
    problem = report_problem(report, args)
    for run in report["runs"]:
        start = start_grid(run["start_grid"], problem.schedule, len(run["timesteps"]) - 1)
        x = SAMPLERS[run["method"]](problem.eps_fn, problem.noise, start, problem.schedule,
                                    **run["options"])  # fmt: skip
        run["start_grid_error"] = problem.error(x)
    for row in report["rows"].values():
        match = [r for r in report["runs"] if r["timesteps"] == row["tuned"]["timesteps"]]
        row["tuned"]["start_grid_error"] = match[0]["start_grid_error"]
    return report


def report_problem(report: dict[str, Any], args: argparse.Namespace) -> Problem:
    """The evaluation problem a written report was judged on (its own sample count, seed and
    reference steps, whatever the command line says)."""
    saved = report["setup"]["args"]
    keys = ("eval_samples", "eval_seed", "ref_steps")
    return problem_of(
        args.problem, argparse.Namespace(**{**vars(args), **{k: saved[k] for k in keys}})
    )


def tails(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Add each row's per-sample error statistics (tuned method and best peer, evaluation noise):
    the RMS is dominated by a few hard samples at low NFE, which these show."""
    import json

    report = json.loads(path.read_text())
    problem = report_problem(report, args)
    for nfe, row in report["rows"].items():
        ours = run_tuned(problem, row["tuned"])
        theirs = run_best_peer(problem, {**row["peer"], "nfe": int(nfe)})
        row["tails"] = {
            "tuned": sample_errors(problem, ours),
            "peer": sample_errors(problem, theirs),
        }
    return report


def run_tuned(problem: Problem, best: dict[str, Any]) -> torch.Tensor:
    """A report's tuned method on its grid (and calibration, if any) from the problem's noise."""
    eps_fn = problem.eps_fn
    if best.get("calibration"):
        eps_fn = Calibration.from_json(best["calibration"]).apply(eps_fn)
    times = torch.tensor(best["timesteps"], dtype=torch.float64)
    return SAMPLERS[best["method"]](eps_fn, problem.noise, times, problem.schedule,
                                    **best["options"])  # fmt: skip


def run_best_peer(problem: Problem, peer: dict[str, Any]) -> torch.Tensor:
    """A report's peer (method, option, nfe) through diffusers' loop from the problem's noise."""
    solver = PEERS[PEER_NAMES.index(peer["method"])]
    scheduler = peer_steps(solver, problem.config, peer["option"], peer["nfe"])
    return run_peer(problem, solver, scheduler)[0]


def sample_errors(problem: Problem, x: torch.Tensor) -> dict[str, Any]:
    """Per-sample RMS errors: their RMS (the table's), median, 90th percentile, worst, and the RMS
    without the worst 2 % (the hard samples), with the indices of those."""
    e = (x.double() - problem.reference.double()).flatten(1).pow(2).mean(1).sqrt().numpy()
    order = np.argsort(e)[::-1]
    cut = max(1, len(e) // 50)
    return {
        "rms": float(np.sqrt((e**2).mean())), "median": float(np.median(e)),
        "p90": float(np.quantile(e, 0.9)), "max": float(e.max()),
        "rms_without_worst_2pct": float(np.sqrt((e[order[cut:]] ** 2).mean())),
        "worst": order[:cut].tolist(),
    }  # fmt: skip


def metric_check(
    problem: Problem, best: dict[str, Any], peer: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Digits Fréchet distance of the tuned method and of the best peer on the same fresh noise."""
    fresh = fresh_problem(problem, args.metric_samples, args.metric_seed, random_labels=False)
    ours, theirs = run_tuned(fresh, best), run_best_peer(fresh, peer)
    return {"samples": args.metric_samples, "tuned": digits_score(ours),
            "peer": digits_score(theirs)}  # fmt: skip


def ode_metric(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Add the digits metric of the ODE's own solution (the teacher, 200 steps) on the report's
    metric noise: what a sampler's score tends to as it converges. A score below it is a solver
    error the metric happens to reward, not accuracy."""
    import json

    report = json.loads(path.read_text())
    saved = report["setup"]["args"]
    if report["problem"] != "digits" or not saved["metric_samples"]:
        raise SystemExit(f"{path}: --ode-metric needs a digits report with --metric-samples > 0")
    problem = digits_model(saved["metric_samples"], saved["metric_seed"])  # metric_check's noise
    x = teacher(problem.eps_fn, problem.schedule, problem.noise)
    report["digits_metric_ode"] = {
        "samples": saved["metric_samples"], "seed": saved["metric_seed"], "score": digits_score(x),
    }  # fmt: skip
    return report


JUDGED_ALIKE = ("problem", "guidance", "eval_samples", "eval_seed", "ref_steps", "peer_select",
                "tune_samples", "tune_seed", "metric_samples", "metric_seed")  # fmt: skip


def merge(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fold into the report at ``path`` the reports tagged --merge (other methods or NFEs of the
    same problem, run as processes of their own): per NFE, the row whose tuned method has the
    lower evaluation error. They must have been judged alike: the same settings (`JUDGED_ALIKE`)
    and, at every NFE both have, the same best peer error (to 1e-9: the same noise, labels and
    reference give the same numbers)."""
    import json

    report = json.loads(path.read_text())
    saved = report["setup"]["args"]
    for tag in args.merge:
        other_path = report_path(args, tag)
        other = json.loads(other_path.read_text())
        theirs = other["setup"]["args"]
        if other_path.name in {m["file"] for m in report.get("merged", [])}:
            raise SystemExit(f"{other_path} is merged into {path} already")
        differ = [k for k in JUDGED_ALIKE if saved.get(k) != theirs.get(k)]
        if differ:
            raise SystemExit(f"{other_path}: judged otherwise than {path} ({', '.join(differ)})")
        for nfe, row in other["rows"].items():
            mine = report["rows"].get(nfe)
            if mine is not None and abs(mine["peer"]["error"] - row["peer"]["error"]) > 1e-9:
                raise SystemExit(f"{other_path}: NFE {nfe}'s best peer differs from {path}'s")
            if mine is None or row["tuned"]["error"] < mine["tuned"]["error"]:
                report["rows"][nfe] = row
        report["runs"] += other["runs"]
        report.setdefault("merged", []).append({"file": other_path.name, "setup": other["setup"]})
    report["rows"] = dict(sorted(report["rows"].items(), key=lambda kv: int(kv[0])))
    report["nfes"] = [int(nfe) for nfe in report["rows"]]
    return report


def report_path(args: argparse.Namespace, tag: str) -> Path:
    scale = f"_w{args.guidance:g}" if args.problem == "digits-cond" else ""
    return args.out / f"tuned_{args.problem}{scale}{tag}.json"


def pairs(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(NFE, method) to tune: --pairs (e.g. 5:dpmpp-2m,8:ipndm), else every --nfes x --methods."""
    if args.pairs:
        return [(int(nfe), method) for nfe, method in
                (item.split(":") for item in args.pairs.split(","))]  # fmt: skip
    nfes = [int(v) for v in args.nfes.split(",")]
    return [(nfe, method) for nfe in nfes for method in args.methods.split(",")]


def measure(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """The report; written to ``path`` after every NFE's row, so a long run keeps what it did."""
    todo = pairs(args)
    nfes = tuple(sorted({nfe for nfe, _ in todo}))
    problem = problem_of(args.problem, args)
    log(f"{args.problem}: reference done")
    peers = best_peers(problem, nfes, args.peer_select)
    log(f"{args.problem}: peers done")
    tuning = fresh_problem(problem, args.tune_samples, args.tune_seed, random_labels=True)
    start = time.perf_counter()
    ref = teacher(tuning.eps_fn, problem.schedule, tuning.noise)
    teacher_seconds = time.perf_counter() - start
    check = teacher(problem.eps_fn, problem.schedule, problem.noise)
    report = {
        "problem": args.problem, "notes": problem.notes, "nfes": nfes, "goal": GOALS[args.problem],
        "teacher": {"steps": 200, "seconds": teacher_seconds,
                    "rms_vs_reference_on_eval_noise": problem.error(check)},
        "tuning_noise": {"samples": args.tune_samples, "seed": args.tune_seed,
                         "labels": None if tuning.labels is None else "random, seed + 1"},
        "rows": {}, "runs": [], "setup": setup(args),
    }  # fmt: skip
    for nfe in nfes:
        for method in (m for n, m in todo if n == nfe):
            report["runs"].append(tuned_run(problem, tuning, ref, method, nfe, args))
            run = report["runs"][-1]
            log(f"{method} {nfe}: {run['error']:.3e} ({run['tuning_seconds']:.0f} s)")
        report["rows"][nfe] = summary(problem, nfe, report["runs"], peers[nfe], args)
        write_json(path, report)
    return report


def summary(
    problem: Problem, nfe: int, runs: list, peer: dict, args: argparse.Namespace
) -> dict[str, Any]:
    ours = min((r for r in runs if r["nfe"] == nfe), key=lambda r: r["error"])
    keys = ("method", "option", "error", "each")
    row = {"peer": {k: peer[k] for k in keys if k in peer}, "tuned": ours,
           "factor": ours["error"] / peer["error"]}  # fmt: skip
    row["goal"] = goal(args.problem, nfe, args.guidance)
    row["goal_met"] = None if row["goal"] is None else row["factor"] <= row["goal"]
    if problem.name.startswith("digits") and args.metric_samples:
        row["digits_metric"] = metric_check(problem, ours, peer, args)
    if problem.labels is not None:
        row["accuracy"] = accuracies(problem, ours, peer)
    return row


def accuracies(problem: Problem, tuned: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """The digits classifier's agreement with the requested labels on the evaluation noise: the
    reference's, the tuned method's and the best peer's."""
    runs = {"reference": problem.reference, "tuned": run_tuned(problem, tuned),
            "peer": run_best_peer(problem, peer)}  # fmt: skip
    return {name: class_accuracy(x, problem.labels) for name, x in runs.items()}


def setup(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "device": device_name(torch.device("cpu")), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "numpy": np.__version__,
        "pndm": pndm.__version__, "python": platform.python_version(),
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| NFE | best diffusers (option) | error | best tuned pndm (options) | error | its start "
        "grid | factor (goal) | tuning cost | accuracy ref / tuned / peer | digits metric tuned"
        " / peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for nfe, row in sorted(report["rows"].items(), key=lambda kv: int(kv[0])):
        p, t = row["peer"], row["tuned"]
        start = t.get("start_grid_error")
        start_text = "–" if start is None else f"{start:.3g} ({t['start_grid']})"
        cost = f"{t['tuning_model_calls']} calls, {t['tuning_seconds']:.0f} s"
        goal_text = (
            "–" if row.get("goal", report["goal"]) is None else f"{row.get('goal', report['goal'])}"
        )
        calibrated = ""
        if t.get("calibration"):  # the same grid uncalibrated, on the evaluation noise
            calibrated = f"; calibrated, {t['grid_error']:.3g} without"
        lines.append(
            f"| {nfe} | {p['method']} ({label(p['option'])}) | {p['error']:.3g} | {t['method']} "
            f"({_options(t['options'])}{calibrated}) | {t['error']:.3g} | {start_text} | "
            f"{row['factor']:.2f} (<= {goal_text}) | {cost} | {_accuracy(row)} | {_metric(row)} |"
        )
    return "\n".join(lines + tails_table(report))


def tails_table(report: dict[str, Any]) -> list[str]:
    """Per-sample error statistics (tuned / peer) of the rows that have them (--tails)."""
    rows = sorted((int(k), r["tails"]) for k, r in report["rows"].items() if "tails" in r)
    if not rows:
        return []
    keys = ("rms", "median", "p90", "max", "rms_without_worst_2pct")
    lines = ["", "| NFE | per-sample error, tuned / peer: " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]  # fmt: skip
    for nfe, tail in rows:
        cells = [f"{tail['tuned'][k]:.3g} / {tail['peer'][k]:.3g}" for k in keys]
        lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
    return lines


def _accuracy(row: dict[str, Any]) -> str:
    acc = row.get("accuracy")
    return (
        "–" if acc is None else " / ".join(f"{acc[k]:.3f}" for k in ("reference", "tuned", "peer"))
    )


def _metric(row: dict[str, Any]) -> str:
    m = row.get("digits_metric")
    return "–" if m is None else f"{m['tuned']:.1f} / {m['peer']:.1f}"


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
    parser.add_argument("--pairs", default="", help="NFE:method items instead of the cross product")
    parser.add_argument("--guidance", type=float, default=1.0, help="digits-cond: the scale w")
    parser.add_argument(
        "--peer-select",
        type=int,
        default=0,
        help="sweep the peers' options on this many evaluation noises only",
    )
    parser.add_argument("--budget", type=int, default=None, help="tuner evaluations per option set")
    parser.add_argument("--calibrate", action="store_true", help="tune with calibrate=True")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--tag", default="", help="suffix of the JSON name")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--rescore", action="store_true", help="add start-grid errors to the JSON")
    parser.add_argument("--tails", action="store_true", help="add per-sample error statistics")
    parser.add_argument("--ode-metric", action="store_true",
                        help="add the digits metric of the ODE solution")  # fmt: skip
    parser.add_argument("--merge", nargs="+", metavar="TAG",
                        help="fold the reports of these tags into this one")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = report_path(args, args.tag)
    args.out.mkdir(parents=True, exist_ok=True)
    amend = {"rescore": rescore, "tails": tails, "ode_metric": ode_metric, "merge": merge}
    chosen = [f for name, f in amend.items() if getattr(args, name)]
    if len(chosen) > 1:
        parser.error("give at most one of --rescore, --tails, --ode-metric, --merge")
    report = chosen[0](path, args) if chosen else measure(args, path)
    write_json(path, report)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
