"""From runs to results: the best run of a method at an NFE, the table of them, a cell's tag."""

from __future__ import annotations

from typing import Any

from benchlib.methods import GRID_LABELS, METHODS
from benchlib.peers import PEER_NAMES


def best(rows: list[dict], method: str, target: int, k: int = 1) -> list[dict]:
    """The k lowest-error runs of `method` at `target` NFE with distinct errors (options that
    change nothing, e.g. euler_at_final below 15 steps, give the same error); no failed runs."""
    sel = [r for r in rows if (r["method"], r["nfe"]) == (method, target)]
    sel = [r for r in sel if r["error"] is not None]
    distinct: dict[float, dict] = {}
    for r in sorted(sel, key=lambda r: r["error"]):
        distinct.setdefault(r["error"], r)  # the first option listed of equal ones
    return list(distinct.values())[:k]


def table(rows: list[dict], nfes: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """method -> str(NFE) -> the best run (error, option, steps, options tried), unreachable, or
    failed (every run non-finite)."""
    out: dict[str, dict[str, Any]] = {}
    for method in (*METHODS, "pf", *PEER_NAMES):
        out[method] = {}
        for target in nfes:
            tried = [r for r in rows if r["method"] == method and r["nfe"] == target]
            top = best(rows, method, target)
            cell = {**top[0], "tried": len(tried)} if top else {"reachable": False}
            cell = {"failed": len(tried)} if tried and not top else cell
            out[method][str(target)] = {k: v for k, v in cell.items() if k not in ("method", "nfe")}
    return out


def label(option: dict[str, Any]) -> str:
    """A compact tag for a table cell: grid or spacing, K(arras), lu, o3, eaf, clip; pf's rtol."""
    if "rtol" in option:
        return f"rtol {option['rtol']:.0e}"
    if "grid" in option:
        return GRID_LABELS[option["grid"]]
    parts = [GRID_LABELS[option["timestep_spacing"]]]
    parts += ["K"] if option.get("use_karras_sigmas") else []
    parts += ["lu"] if option.get("use_lu_lambdas") else []
    parts += ["o3"] if option.get("solver_order") == 3 else []
    parts += ["eaf"] if option.get("euler_at_final") else []
    parts += ["clip"] if option.get("clip_sample") else []
    return "+".join(parts)
