"""PNDMPipeline with a class-conditional UNet: class labels and classifier-free guidance equal a
hand-written guidance loop over the pure sampler; the "no class" label travels in the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_unet

from pndm import PNDMPipeline, PNDMScheduler
from pndm.guidance import NULL_LABEL_KEY, label_of_seed
from pndm.images import postprocess
from pndm.noise import initial_noise
from pndm.samplers import SAMPLERS

CLASSES = 10
NULL = CLASSES  # the last row of the embedding table: the label dropout's "no class"
SEEDS = [3, 17, 40]


def conditional_unet(dtype: torch.dtype = torch.float64):
    return tiny_unet(num_class_embeds=CLASSES + 1).to(dtype)


def pipeline(dtype: torch.dtype = torch.float64, null: int | None = NULL) -> PNDMPipeline:
    pipe = PNDMPipeline(conditional_unet(dtype), PNDMScheduler(skip_prk_steps=True), null)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def by_hand(pipe: PNDMPipeline, labels: list[int], scale: float, method: str, steps: int):
    """Two UNet calls per ε, guided as Ho & Salimans write it, over the pure sampler."""
    unet, schedule = pipe.unet, pipe.scheduler.schedule
    conditional = torch.tensor(labels)
    unconditional = torch.full_like(conditional, NULL)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = unet(x, t, class_labels=conditional).sample
        u = unet(x, t, class_labels=unconditional).sample
        return u + scale * (c - u)

    x = initial_noise((len(labels), 3, 8, 8), pipe.device, torch.float64, seeds=SEEDS)
    out = SAMPLERS[method](eps, x, pipe.scheduler.grid(steps), schedule)
    return postprocess(out, "pt")


@pytest.mark.parametrize("scale", [1.0, 0.0, 2.5, 7.5])
@pytest.mark.parametrize("method", ["plms", "ipndm", "dpmpp-2m"])
@pytest.mark.parametrize("labels", [4, [0, 9, 4], "random"])
def test_guided_sampling_equals_the_hand_written_loop(scale, method, labels) -> None:
    """float64 UNet and solver: the batched (conditional, unconditional) call differs from two
    separate calls only in summation order, ~1e-15 relative; 1e-10 on [0, 1] pixels."""
    pipe = pipeline()
    got = pipe(len(SEEDS), 5, seeds=SEEDS, class_labels=labels, guidance_scale=scale,
               method=method, output_type="pt").images  # fmt: skip
    if labels == "random":
        labels = [label_of_seed(seed, CLASSES) for seed in SEEDS]
    elif isinstance(labels, int):
        labels = [labels] * len(SEEDS)
    expected = by_hand(pipe, labels, scale, method, 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_guidance_changes_the_images_and_labels_matter() -> None:
    """Not vacuous: another class or another scale gives other images."""
    pipe = pipeline()
    run = {"batch_size": 3, "num_inference_steps": 4, "seeds": SEEDS, "output_type": "pt"}
    base = pipe(class_labels=1, guidance_scale=3.0, **run).images
    assert (base - pipe(class_labels=2, guidance_scale=3.0, **run).images).abs().max() > 1e-3
    assert (base - pipe(class_labels=1, guidance_scale=1.0, **run).images).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("scale", "sent"), [(0.0, [NULL] * 3), (1.0, [4] * 3), (2.0, [4] * 3 + [NULL] * 3)]
)
def test_the_unet_sees_both_halves_only_under_guidance(scale, sent) -> None:
    """w = 1 is the conditional model and w = 0 the unconditional one: each one call of the
    batch; any other scale sends the conditional and "no class" halves together."""
    pipe = pipeline()
    seen = []
    pipe.unet.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["class_labels"].tolist()), with_kwargs=True
    )
    pipe(3, 4, seeds=SEEDS, class_labels=4, guidance_scale=scale, output_type="pt")
    assert seen and all(labels == sent for labels in seen)


def test_random_labels_are_each_seeds_own() -> None:
    """An image's label and pixels depend on its seed alone, not on its batch (float32)."""
    pipe = pipeline(torch.float32)
    run = {"num_inference_steps": 4, "class_labels": "random", "guidance_scale": 2.0}
    together = pipe(3, seeds=SEEDS, output_type="pt", **run).images
    alone = pipe(seeds=[SEEDS[1]], output_type="pt", **run).images
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=2e-6)  # batch-size rounding
    counts = [0] * CLASSES
    for seed in range(2000):
        counts[label_of_seed(seed, CLASSES)] += 1
    assert min(counts) > 140 and max(counts) < 260  # 200 expected, sd 13.4: 4.5 sd either side


def test_the_null_label_round_trips_through_the_folder(tmp_path: Path) -> None:
    pipe = pipeline(torch.float32)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index[NULL_LABEL_KEY] == NULL and index["_class_name"] == "PNDMPipeline"
    loaded = PNDMPipeline.from_pretrained(tmp_path)
    assert loaded.null_class_label == NULL
    run = {"num_inference_steps": 3, "seeds": [1], "class_labels": 5, "guidance_scale": 4.0}
    torch.testing.assert_close(loaded(output_type="pt", **run).images,
                               pipe(output_type="pt", **run).images, rtol=0, atol=0)  # fmt: skip


def test_diffusers_loads_a_folder_with_a_null_label(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    pipeline(torch.float32).save_pretrained(tmp_path)
    theirs = diffusers.PNDMPipeline.from_pretrained(tmp_path)
    assert theirs.unet.config.num_class_embeds == CLASSES + 1


@pytest.mark.parametrize(
    ("make", "kwargs", "needle"),
    [
        (pipeline, {"guidance_scale": 2.0}, "guidance_scale needs class_labels"),
        (lambda: pipeline(null=None), {"class_labels": 1, "guidance_scale": 2.0},
         "guidance needs the model's 'no class' label"),
        (pipeline, {"class_labels": CLASSES}, r"class label must be an integer in \[0, 9\]"),
        (pipeline, {"class_labels": [1, 2]}, "class_labels has 2 entries for 3 images"),
        (pipeline, {"class_labels": "cat"}, "class_labels must be an int, a list of ints or"),
        (pipeline, {"class_labels": 1, "guidance_scale": -1.0}, "guidance_scale must be"),
        (pipeline, {"class_labels": 1, "guidance_scale": float("nan")}, "guidance_scale must be"),
    ],
)  # fmt: skip
def test_bad_conditioning_is_refused_before_any_model_call(make, kwargs, needle, monkeypatch):
    pipe = make()
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("called the UNet"))
    with pytest.raises(ValueError, match=needle):
        pipe(batch_size=3, num_inference_steps=3, output_type="pt", **kwargs)


def test_random_labels_need_seeds_and_labels_need_a_class_table() -> None:
    with pytest.raises(ValueError, match="draws each label from its image's seed: pass seeds"):
        pipeline()(num_inference_steps=3, class_labels="random")
    plain = PNDMPipeline(tiny_unet(), PNDMScheduler())
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        plain(num_inference_steps=3, class_labels=1)


@pytest.mark.parametrize("null", [3, CLASSES + 1, True, "10"])
def test_a_null_label_must_be_the_last_class_embedding(null) -> None:
    with pytest.raises(ValueError, match=r"null_class_label must be the last class embedding"):
        PNDMPipeline(conditional_unet(), PNDMScheduler(), null)


def test_the_memory_bound_counts_both_halves_and_names_the_users_batch(monkeypatch) -> None:
    from pndm.runtime import fast

    pipe = pipeline(torch.float32)
    each = fast.per_image_bytes(pipe.unet, pipe.dtype, (3, 8, 8))
    monkeypatch.setattr(fast, "free_memory", lambda device: 30 * each)
    run = {"num_inference_steps": 2, "class_labels": 3, "output_type": "pt"}
    assert len(pipe(15, guidance_scale=2.0, **run).images) == 15  # 30 model inputs
    with pytest.raises(ValueError, match=r"batch_size 16 needs .* use batch_size <= 15$"):
        pipe(16, guidance_scale=2.0, **run)
    assert len(pipe(30, guidance_scale=1.0, **run).images) == 30  # no guidance: one half
