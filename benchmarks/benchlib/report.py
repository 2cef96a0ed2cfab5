"""quality.py's report: the markdown section (tables, head-to-head) and the error-vs-NFE plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchlib.methods import METHODS
from benchlib.peers import PEER_NAMES
from benchlib.results import label


def markdown_table(results: dict[str, dict[str, Any]], nfes: tuple[int, ...]) -> list[str]:
    lines = ["| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |"]
    lines.append("|---" * (len(nfes) + 1) + "|")
    for method, cells in results.items():
        row_cells = []
        for n in nfes:
            c = cells[str(n)]
            row_cells.append(f"{c['error']:.2e} {label(c['option'])}" if "error" in c else "–")
        if any(c != "–" for c in row_cells):
            lines.append(f"| {method} | " + " | ".join(row_cells) + " |")
    return lines


def head_to_head(results: dict[str, dict[str, Any]], nfes: tuple[int, ...]) -> list[str]:
    """Per NFE: the best pndm method against the best diffusers scheduler."""
    lines = ["| NFE | best pndm | error | best diffusers | error | diffusers/pndm |"]
    lines.append("|---|---|---|---|---|---|")
    for n in nfes:
        picks = []
        for names in ((*METHODS, "pf"), PEER_NAMES):
            cells = [(results[m][str(n)], m) for m in names if "error" in results[m][str(n)]]
            picks.append(min(cells, key=lambda c: c[0]["error"]))
        (p, pm), (d, dm) = picks
        lines.append(
            f"| {n} | {pm} ({label(p['option'])}) | {p['error']:.2e} | {dm} "
            f"({label(d['option'])}) | {d['error']:.2e} | {d['error'] / p['error']:.2g}x |"
        )
    return lines


def _intro(report: dict[str, Any], command: str) -> list[str]:
    return [
        "## Every solver at equal NFE: error to the exact solution (`benchmarks/quality.py`)",
        "",
        f"`{command}` — {report['setup']['wall_seconds'] / 60:.1f} min on one thread of "
        f"{report['setup']['device']}; torch {report['setup']['torch']}, diffusers "
        f"{report['setup']['diffusers']}. Results: `results/quality.json`, "
        "`results/quality_mixture.png`, `results/quality_digits.png`.",
        "",
        "Every method starts from the same x_T and ends at ᾱ_0 = 0.9999 (the shipped config's "
        "final value); the error is the RMS over samples and pixels against the ODE solution "
        "from (x_T, t = 999) to ᾱ_0. diffusers' schedulers run their own `set_timesteps`/`step` "
        'loop, set to end there (`set_alpha_to_one=False`, `final_sigmas_type="sigma_min"`; '
        "Heun's last sigma patched), with ε evaluated exactly at the ᾱ each step assumes. NFE is "
        "counted; '–' = no step count gives exactly that NFE. Each cell is the best option tried "
        "(see the module docstring for the rules).",
        "",
    ]


def markdown(report: dict[str, Any], command: str) -> str:
    nfes = tuple(report["setup"]["nfes"])
    mix, dig = report["models"]["mixture"], report["models"]["digits"]
    mn, dn = mix["notes"], dig["notes"]
    ref_steps = report["setup"]["ref_steps"]
    lines = [
        *_intro(report, command),
        f"**(a) Gaussian mixture** (3x32x32, {len(mn['weights'])} components, stds "
        f"{', '.join(map(str, mn['stds']))}; {mn['samples']} samples, float64). Reference: "
        f"DOP853 in σ̃ at rtol = atol = 1e-13; it differs from a 1e-11 run by "
        f"{mn['reference_vs_rtol_1e-11']:.1e}. (The digits reference method, vab with {ref_steps} "
        f"steps on the edm grid, is {mn[f'vab_{ref_steps}_edm_vs_dop853']:.1e} from it.)",
        "",
        *markdown_table(mix["results"], nfes),
        "",
        f"**(b) Shipped digits model** (1x16x16, {dn['samples']} noises, float32 UNet, float64 "
        f"solver state). Reference: vab (order 4) with {ref_steps} steps on the edm grid; pec with "
        f"{ref_steps} steps on the logsnr grid differs from it by "
        f"{dn[f'reference_vs_pec_{ref_steps}_logsnr']:.1e}. Options tried per (method, NFE): the "
        f"{report['setup']['candidates']} best on the mixture (DDIM: each with and without "
        "clip_sample).",
        "",
        *markdown_table(dig["results"], nfes),
        "",
        "Tags: grids tr/ld/ls = trailing/leading/linspace, un = uniform (original code), dq = DDIM "
        "quadratic, edm = Karras ρ = 7, lsnr = uniform log-SNR, tu/tq = uniform/quadratic in t; "
        "K = Karras sigmas, lu = lu-λ, o3 = solver_order 3, eaf = euler_at_final, clip = "
        "clip_sample; pf: its rtol (it reaches exactly 50 calls only with a loose tolerance).",
        "",
        "Best pndm method against the best diffusers scheduler, mixture:",
        "",
        *head_to_head(mix["results"], nfes),
        "",
        "and on the digits model:",
        "",
        *head_to_head(dig["results"], nfes),
    ]
    return "\n".join(lines) + "\n"


def plot(model: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = plt.get_cmap("tab20").colors
    for i, method in enumerate((*METHODS, "pf", *PEER_NAMES)):  # a fixed colour per method
        cells = model["results"][method]
        points = sorted((int(n), c["error"]) for n, c in cells.items() if "error" in c)
        if points:
            style = "-" if method in (*METHODS, "pf") else "--"
            nfe_, err = zip(*points, strict=True)
            ax.loglog(nfe_, err, style, marker="o", ms=3, color=colors[i % 20], label=method)
    nfes = sorted({int(n) for cells in model["results"].values() for n in cells})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_xlabel("NFE (model calls)")
    ax.set_ylabel("RMS error per pixel vs reference")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
