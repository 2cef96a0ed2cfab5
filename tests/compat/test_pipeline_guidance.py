"""PNDMPipeline with a class-conditional UNet: class labels and classifier-free guidance equal a
hand-written guidance loop over the pure sampler; the "no class" label and the class names travel
in the folder, and a class name stands for its label."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_unet

from pndm import PNDMPipeline, PNDMScheduler
from pndm.guidance import CLASS_NAMES_KEY, NULL_LABEL_KEY, label_of_seed
from pndm.images import postprocess
from pndm.noise import initial_noise
from pndm.samplers import SAMPLERS

CLASSES = 10
NULL = CLASSES  # the last row of the embedding table: the label dropout's "no class"
SEEDS = [3, 17, 40]
# not in sorted order, so a name's label is its place here, not its rank among the names
NAMES = ("dog", "cat", "ant", "emu", "owl", "bee", "yak", "fox", "gnu", "elk")


def conditional_unet(dtype: torch.dtype = torch.float64):
    return tiny_unet(num_class_embeds=CLASSES + 1).to(dtype)


def pipeline(
    dtype: torch.dtype = torch.float64, null: int | None = NULL, names: tuple | None = None
) -> PNDMPipeline:
    pipe = PNDMPipeline(conditional_unet(dtype), PNDMScheduler(skip_prk_steps=True), null, names)
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


def test_the_class_names_round_trip_through_the_folder(tmp_path: Path) -> None:
    pipe = pipeline(torch.float32, names=NAMES)
    assert pipe.class_names == NAMES and pipe.config[CLASS_NAMES_KEY] == list(NAMES)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index[CLASS_NAMES_KEY] == list(NAMES) and index[NULL_LABEL_KEY] == NULL
    assert PNDMPipeline.from_pretrained(tmp_path).class_names == NAMES
    pipeline(torch.float32).save_pretrained(tmp_path / "unnamed")  # no names: no key
    assert CLASS_NAMES_KEY not in json.loads((tmp_path / "unnamed/model_index.json").read_text())
    assert PNDMPipeline.from_pretrained(tmp_path / "unnamed").class_names is None


def test_diffusers_loads_a_folder_with_a_null_label_and_class_names(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    pipeline(torch.float32, names=NAMES).save_pretrained(tmp_path)
    assert CLASS_NAMES_KEY in json.loads((tmp_path / "model_index.json").read_text())
    theirs = diffusers.PNDMPipeline.from_pretrained(tmp_path)
    assert theirs.unet.config.num_class_embeds == CLASSES + 1


def test_a_class_name_stands_for_its_label() -> None:
    """The name "cat" is label 1 (its place in NAMES), in one label for all and in a list mixing
    names and ints: the images equal those of the ints, bit for bit (the same labels reach the
    UNet)."""
    pipe = pipeline(names=NAMES)
    run = {"batch_size": 3, "num_inference_steps": 3, "seeds": SEEDS, "output_type": "pt",
           "guidance_scale": 2.0}  # fmt: skip
    assert torch.equal(pipe(class_labels="cat", **run).images, pipe(class_labels=1, **run).images)
    mixed = pipe(class_labels=["ant", 9, "dog"], **run).images
    assert torch.equal(mixed, pipe(class_labels=[2, 9, 0], **run).images)
    assert not torch.equal(mixed, pipe(class_labels=[0, 9, 0], **run).images)  # not vacuous


def test_an_unknown_name_lists_the_models_names() -> None:
    """At most 20 names are listed, then the count; a model without names says so."""
    with pytest.raises(ValueError, match=r"must be an int in \[0, 9\], 'random' or a class name "
                       r"of the model \('dog', 'cat', 'ant', .*'elk'\), got 'cow'$"):  # fmt: skip
        pipeline(names=NAMES)(num_inference_steps=3, class_labels="cow")
    many = tuple(f"n{i}" for i in range(30))
    wide = PNDMPipeline(tiny_unet(num_class_embeds=31), PNDMScheduler(), 30, many)
    with pytest.raises(ValueError, match=r"'n19', \.\.\. \(30 in all\)\), got 'cow'$"):
        wide(num_inference_steps=3, class_labels="cow")


BAD_NAMES = {
    "too few": (NAMES[:9], " must be a list of 10 class names, got 9 entries"),
    "too many": ((*NAMES, "pig"), " must be a list of 10 class names, got 11 entries"),
    "not a list": ("dog", " must be a list of 10 class names, got 'dog'"),
    "a number": ((*NAMES[:9], 9), r"\[9\] must be a non-empty string of at most 255 characters"),
    "null": ((*NAMES[:9], None), r"\[9\] must be a non-empty string"),
    "empty": (("", *NAMES[1:]), r"\[0\] must be a non-empty string"),
    "256 characters": (("x" * 256, *NAMES[1:]), r"\[0\] must be .* at most 255 characters, got "
                       r"'xxx.*\.\.\. \(256 characters\)"),
    "twice": ((*NAMES[:9], "dog"), " must name each class once, got 'dog' twice"),
    "newline": (("d\nog", *NAMES[1:]), r"\[0\] must be .* without control characters"),
    "escape": ((*NAMES[:5], "\x1b[2Jowl", *NAMES[6:]), r"\[5\] .* without control characters"),
    "C1 control": ((*NAMES[:9], "elk\x85"), r"\[9\] .* without control characters"),
    "lone surrogate": ((*NAMES[:9], "\ud800"), r"\[9\] .* without control characters"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_bad_class_names_are_refused(case: str, tmp_path: Path) -> None:
    """Given in Python (named by the argument), and in a folder's model_index.json (named by the
    file and its field)."""
    names, needle = BAD_NAMES[case]
    with pytest.raises(ValueError, match="^class_names" + needle):
        PNDMPipeline(conditional_unet(), PNDMScheduler(), NULL, names)
    pipeline(torch.float32).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, CLASS_NAMES_KEY: names}))
    field = re.escape(f"{tmp_path / 'model_index.json'}: {CLASS_NAMES_KEY}")
    with pytest.raises(ValueError, match="^" + field + needle):
        PNDMPipeline.from_pretrained(tmp_path)


def test_class_names_are_counted_against_the_model() -> None:
    """Names need a class table; a table of more than 1000 classes records none."""
    with pytest.raises(ValueError, match="class_names needs a class-conditional model"):
        PNDMPipeline(tiny_unet(), PNDMScheduler(), None, ["a"])
    many = [str(i) for i in range(1001)]
    with pytest.raises(ValueError, match="class_names must name at most 1000 classes, got 1001"):
        PNDMPipeline(tiny_unet(num_class_embeds=1002), PNDMScheduler(), 1001, many)
    unicode = ("chat noir", "猫", "x" * 255, *NAMES[3:])  # a space, CJK, the longest: all fine
    assert PNDMPipeline(conditional_unet(), PNDMScheduler(), NULL, unicode).class_names == unicode


def test_a_bad_null_label_in_a_folder_names_the_file(tmp_path: Path) -> None:
    pipeline(torch.float32).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, NULL_LABEL_KEY: "x" * 10**6}))
    field = re.escape(f"{tmp_path / 'model_index.json'}: {NULL_LABEL_KEY} must be the last")
    with pytest.raises(ValueError, match=field + r".*\(1000000 characters\)$"):
        PNDMPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("make", "kwargs", "needle"),
    [
        (pipeline, {"guidance_scale": 2.0}, "guidance_scale needs class_labels"),
        (lambda: pipeline(null=None), {"class_labels": 1, "guidance_scale": 2.0},
         "guidance needs the model's 'no class' label"),
        (pipeline, {"class_labels": CLASSES}, r"class label must be an integer in \[0, 9\]"),
        (pipeline, {"class_labels": [1, 2]}, "class_labels has 2 entries for 3 images"),
        (pipeline, {"class_labels": "cat"}, r"class_labels must be an int in \[0, 9\] or "
         r"'random' \(the model records no class names\), got 'cat'"),
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
