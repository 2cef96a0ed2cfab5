"""benchmarks/tuned.py --merge: reports of one problem, tuned in separate processes (other methods
or NFEs), fold into one, each NFE keeping the tuned method with the lower evaluation error, and
only when they were judged alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
import tuned  # noqa: E402  (benchmarks/ is on pytest's pythonpath)

pytestmark = pytest.mark.usefixtures("one_thread")  # tuned.main sets torch's thread count

SETTINGS = {"problem": "digits-cond", "guidance": 5.0, "eval_samples": 128, "eval_seed": 2,
            "ref_steps": 1000, "peer_select": 16, "tune_samples": 64, "tune_seed": 1,
            "metric_samples": 1000, "metric_seed": 3}  # fmt: skip


def row(method: str, error: float, peer: float) -> dict:
    tuned_run = {"method": method, "error": error, "options": {}, "tuning_model_calls": 500,
                 "tuning_seconds": 300.0}  # fmt: skip
    peer_run = {"method": "DEIS", "option": {"timestep_spacing": "leading"}, "error": peer}
    return {"peer": peer_run, "tuned": tuned_run, "factor": error / peer, "goal": 0.6}


def write(folder: Path, tag: str, rows: dict, **changed) -> None:
    runs = [{"method": r["tuned"]["method"], "nfe": int(n)} for n, r in rows.items()]
    report = {"rows": rows, "runs": runs, "nfes": [int(n) for n in rows], "goal": 0.6,
              "setup": {"args": {**SETTINGS, **changed}}}  # fmt: skip
    (folder / f"tuned_digits-cond_w5{tag}.json").write_text(json.dumps(report))


def merged(folder: Path, *tags: str) -> dict:
    argv = ["--problem", "digits-cond", "--guidance", "5", "--out", str(folder), "--merge", *tags]
    assert tuned.main(argv) == 0
    return json.loads((folder / "tuned_digits-cond_w5.json").read_text())


def test_each_nfe_keeps_the_lower_tuned_error(tmp_path) -> None:
    write(tmp_path, "", {"4": row("ipndm", 0.12, 0.1), "6": row("ipndm", 0.07, 0.09)})
    write(tmp_path, "_vab", {"4": row("vab", 0.13, 0.1), "6": row("vab", 0.05, 0.09),
                             "10": row("vab", 0.02, 0.03)})  # fmt: skip
    report = merged(tmp_path, "_vab")
    methods = {n: r["tuned"]["method"] for n, r in report["rows"].items()}
    assert methods == {"4": "ipndm", "6": "vab", "10": "vab"}
    assert report["nfes"] == [4, 6, 10] and len(report["runs"]) == 5
    assert report["merged"][0]["file"] == "tuned_digits-cond_w5_vab.json"
    with pytest.raises(SystemExit, match="merged into .* already"):
        merged(tmp_path, "_vab")


def test_reports_judged_otherwise_are_refused(tmp_path) -> None:
    write(tmp_path, "", {"6": row("ipndm", 0.07, 0.09)})
    write(tmp_path, "_vab", {"6": row("vab", 0.05, 0.09)}, eval_seed=7)
    with pytest.raises(SystemExit, match="judged otherwise.*eval_seed"):
        merged(tmp_path, "_vab")


def test_a_different_best_peer_is_refused(tmp_path) -> None:
    write(tmp_path, "", {"6": row("ipndm", 0.07, 0.09)})
    write(tmp_path, "_vab", {"6": row("vab", 0.05, 0.091)})
    with pytest.raises(SystemExit, match="best peer differs"):
        merged(tmp_path, "_vab")
