"""Tuning a class-conditional model under classifier-free guidance: the grid is tuned on the
guided ε (the same grid as `tune` on a hand-written guided ε), the grid file records the guidance
scale, and ``pndm sample`` warns when a grid is used at another scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_unet

from pndm import PNDMPipeline, PNDMScheduler
from pndm.cli import main
from pndm.guidance import label_of_seed
from pndm.noise import initial_noise
from pndm.tuning import tune, tune_pipeline
from pndm.tuning.search import tuning_seeds
from pndm.wrapper import make_eps_fn

CLASSES = 10
RUN = {"method": "ipndm", "nfe": 3, "samples": 4, "iterations": 12, "search_options": False}


def pipeline() -> PNDMPipeline:
    unet = tiny_unet(num_class_embeds=CLASSES + 1).double()
    pipe = PNDMPipeline(unet, PNDMScheduler(), null_class_label=CLASSES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tune_pipeline_tunes_on_the_guided_eps() -> None:
    pipe = pipeline()
    tuned = tune_pipeline(pipe, class_labels="random", guidance_scale=3.0, **RUN)
    seeds = tuning_seeds(4)
    labels = torch.tensor([label_of_seed(seed, CLASSES) for seed in seeds])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # Ho & Salimans, by hand
        c = pipe.unet(x, t, class_labels=labels).sample
        u = pipe.unet(x, t, class_labels=torch.full_like(labels, CLASSES)).sample
        return u + 3.0 * (c - u)

    x = initial_noise((4, 3, 8, 8), pipe.device, torch.float64, seeds=seeds)
    by_hand = tune(make_eps_fn(guided, pipe.scheduler.schedule), pipe.scheduler.schedule, x,
                   method="ipndm", nfe=3, budget=12)  # fmt: skip
    # float64: batched and separate UNet calls differ in the last bits; the search is the same
    torch.testing.assert_close(tuned.timesteps, by_hand.timesteps, rtol=0, atol=1e-6)
    assert tuned.error == pytest.approx(by_hand.error, rel=1e-6)
    unguided = tune_pipeline(pipe, class_labels="random", **RUN)
    assert unguided.error != pytest.approx(tuned.error, rel=1e-3)  # the guidance mattered


def test_guidance_without_labels_is_refused_before_any_model_call(monkeypatch) -> None:
    pipe = pipeline()
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("called the UNet"))
    with pytest.raises(ValueError, match="guidance_scale needs class_labels"):
        tune_pipeline(pipe, guidance_scale=2.0, **RUN)


def test_a_grid_file_records_its_guidance_and_sample_warns_at_another(tmp_path: Path, capsys):
    model = tmp_path / "cond"
    unet = tiny_unet(num_class_embeds=CLASSES + 1)
    PNDMPipeline(unet, PNDMScheduler(), null_class_label=CLASSES).save_pretrained(model)
    grid = tmp_path / "g.json"
    quiet = ["--model", str(model), "--no-progress", "--threads", "1"]
    args = ["tune", *quiet, "--method", "ipndm", "--nfe", "3", "--samples", "4",
            "--iterations", "12", "--no-search-options"]  # fmt: skip
    assert main([*args, "--class", "random", "--guidance", "2", "--out", str(grid)]) == 0
    record = json.loads(grid.read_text())["tuning"]
    assert record["guidance_scale"] == 2.0 and record["class_labels"] == "random"
    capsys.readouterr()
    out = str(tmp_path / "x.npz")
    common = ["sample", *quiet, "--seeds", "0-1", "--class", "random", "--timesteps", str(grid)]
    assert main([*common, "--guidance", "2", "--out", out]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*common, "--guidance", "4", "--out", out, "--overwrite"]) == 0
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith("warning: ") and "tuned at guidance scale 2, not 4" in warning
