"""Running a `pndm.jobs.job.SampleJob`: seeds -> ranks -> batches -> a contact sheet, an .npz, or
a folder of per-seed PNGs guarded by a manifest.

Every image is decided by its seed alone (the pipeline draws each image's noise from its own
generator), so a job splits into batches of any size and, under torchrun, into ranks
(`pndm.jobs.ranks`). A folder resumes: a seed counts as done only if its PNG is complete and of
the expected size and mode; `pndm.jobs.manifest` refuses a run whose settings differ from the
folder's. Nothing is written into a folder before every check of every rank has passed (the
settings, the seed names, the model loaded, the room), and its manifest records the run's seeds
only after every rank has written its last image.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pndm.assets import model_folder
from pndm.images import image_shape, to_uint8
from pndm.jobs import destinations as targets
from pndm.jobs import manifest as manifests
from pndm.jobs import ranks as distributed
from pndm.jobs.destinations import Output
from pndm.jobs.job import SampleJob, SampleSummary, check_job, job_device
from pndm.jobs.plan import Plan, plan
from pndm.jobs.ranks import Ranks
from pndm.runtime.devices import resolve_dtype, torch_threads
from pndm.runtime.precision import warn_if_slow
from pndm.runtime.progress import progress_bar


def load_pipeline(job: SampleJob, device: Any) -> Any:
    """The PNDMPipeline of the job's model folder on ``device``, its progress bar off."""
    from pndm.compat.pipeline import PNDMPipeline

    folder, dtype = model_folder(job.model), resolve_dtype(job.dtype)
    pipe = PNDMPipeline.from_pretrained(folder, torch_dtype=dtype)
    pipe.to(device).set_progress_bar_config(disable=True)  # one bar for the whole job instead
    warn_if_slow(pipe.device, pipe.dtype)
    return pipe


Loader = Callable[[SampleJob, Any], Any]


def run_job(job: SampleJob, load: Loader = load_pipeline) -> SampleSummary:
    """Sample ``job.seeds`` (this rank's share under torchrun) and write them to ``job.out``."""
    ranks = Ranks.from_env()
    output = check_job(job, ranks)
    job_plan = plan(job)
    update = _folder_update(job, output, job_plan) if output.kind == "folder" else None
    device = job_device(job, ranks)
    distributed.start(ranks, device)
    try:
        with _threads(job, ranks, device):
            summary = _run(job, load, ranks, device, output, job_plan, update)
        if update is not None and update.end is not None and ranks.lead:
            manifests.write(output.path, update.end)  # every rank has written its last image
    except BaseException:
        distributed.stop()  # no barrier: the other ranks may be in another collective
        raise
    distributed.stop(device)
    return summary


def _folder_update(job: SampleJob, output: Output, plan: Plan) -> manifests.Update:
    """The run's writes of the folder's manifest, checked against the folder's (before loading)."""
    from pndm import __version__

    versions = {"pndm": __version__, "torch": _torch_version()}
    wanted = manifests.Manifest(plan.settings, plan.image, versions, list(job.seeds))
    return manifests.update(output.path, wanted, job.overwrite)


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _threads(job: SampleJob, ranks: Ranks, device: Any) -> contextlib.AbstractContextManager:
    """``job.threads`` for the job, restored after it; under torchrun on the CPU, by default
    the machine's cores shared by its ranks."""
    threads = job.threads
    if threads is None and ranks.local_world > 1 and device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // ranks.local_world)
    return torch_threads(threads)


def _open_folder(folder: Path, start: Any, ranks: Ranks, device: Any) -> None:
    """Once every rank passed its checks, rank 0 makes the folder, removes a killed run's
    temporaries and writes the manifest's ``start`` (if any); every rank waits for it before
    writing any image."""
    distributed.barrier(device)  # a rank that failed a check never gets here: nothing written
    if ranks.lead:
        folder.mkdir(exist_ok=True)
        targets.remove_debris(folder)
        if start is not None:
            manifests.write(folder, start)
    distributed.barrier(device)


def _run(
    job: SampleJob,
    load: Loader,
    ranks: Ranks,
    device: Any,
    output: Output,
    plan: Plan,
    update: manifests.Update | None,
) -> SampleSummary:
    mine = ranks.share(job.seeds)
    todo = _todo(job, output, plan, mine)
    skipped = sum(distributed.gather(len(mine) - len(todo), device))
    done = (plan.method, plan.steps, output)
    if not sum(distributed.gather(len(todo), device)):  # a finished folder: nothing to load
        if ranks.lead and output.kind == "folder":
            targets.remove_debris(output.path)
        return SampleSummary(0, skipped, plan.nfe, 0.0, *done)
    pipe = load(job, device)
    _check_fits(pipe, output, len(todo))
    if update is not None:
        _open_folder(output.path, update.start, ranks, device)
    start = time.perf_counter()
    images, counted, per_rank = _sample_all(pipe, todo, job, plan, output, ranks)
    if output.kind != "folder":
        labels = plan.labels(job.seeds)
        targets.write_all(output, images, job.seeds, labels, replace=job.overwrite)
    seconds = time.perf_counter() - start
    nfe = counted if plan.nfe is None else plan.nfe  # adaptive methods: the calls counted
    return SampleSummary(sum(per_rank), skipped, nfe, seconds, *done, per_rank)


def _todo(job: SampleJob, output: Output, plan: Plan, seeds: list[int]) -> list[int]:
    """This rank's seeds still to sample: all, or in a folder those without a complete PNG."""
    if output.kind != "folder":
        return seeds
    if job.overwrite:
        targets.check_replaceable(output.path, seeds)
        return seeds
    image = plan.image
    todo = targets.missing_seeds(output.path, seeds, image["width"], image["height"], image["mode"])
    targets.check_replaceable(output.path, todo)
    return todo


def _check_fits(pipe: Any, output: Output, n: int) -> None:
    """One image must fit the UNet's working memory; all of them the output
    (`pndm.jobs.destinations`)."""
    import torch

    from pndm.runtime import fast

    fast.check_fits(pipe.device, pipe.dtype, pipe.unet)
    shape = image_shape(pipe.unet.config)
    targets.check_room(output, n, shape, fast.free_memory(torch.device("cpu")))


class _CallCounter:
    """Counts the UNet's forward calls (NFE per image = calls per batch)."""

    def __init__(self, unet: Any) -> None:
        self.calls = 0
        self._handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def _progress(total: int, enabled: bool) -> Any:
    return progress_bar(total, "img", enabled)


def sample_batch(pipe: Any, seeds: list[int], job: SampleJob, plan: Plan, size: int) -> np.ndarray:
    """The images of ``seeds`` on the plan's grid, sampled in a batch padded to ``size`` images
    (copies of the last seed): the kernels a convolution library picks, and so the last bits of
    every image, depend on the batch's size, never on its other images or their order."""
    padded = [*seeds, *[seeds[-1]] * (size - len(seeds))]
    result = pipe(
        batch_size=size,
        timesteps=list(plan.grid),
        calibration=job.calibration,
        class_labels=plan.class_labels,  # a class name resolved, as the manifest has it
        guidance_scale=job.guidance_scale,
        seeds=padded,
        method=plan.method,
        output_type="np",
        return_dict=True,
        channels_last=job_layout(job.channels_last),
        compile=job.compile,
        cuda_graphs=job.cuda_graphs,
        **job.method_options,
    )
    return to_uint8(np.asarray(result.images))[: len(seeds)]


def job_layout(channels_last: bool | None) -> bool:
    """A sample folder's layout: NCHW unless asked. Not the pipeline's measured default
    (`pndm.runtime.layout`): its choice may differ from one process to the next, and a folder
    resumed, extended or sampled by several ranks must give the same bytes for a seed."""
    return False if channels_last is None else channels_last


def _batches(seeds: Sequence[int], size: int) -> list[list[int]]:
    return [list(seeds[start : start + size]) for start in range(0, len(seeds), size)]


def _sample_all(
    pipe: Any, seeds: list[int], job: SampleJob, plan: Plan, output: Output, ranks: Ranks
) -> tuple[np.ndarray | None, int | None, list[int]]:
    """(the images unless written per seed, model calls per image counted, images per rank).
    PNGs of a folder are written as batches finish; every rank runs as many rounds as the
    busiest one, so the progress bar (rank 0's) counts all ranks' images."""
    size = min(job.batch_size or _fitting_batch_size(pipe, plan), len(job.seeds))  # any rank
    batches = _batches(seeds, size)
    rounds = max(distributed.gather(len(batches), pipe.device))
    total = sum(distributed.gather(len(seeds), pipe.device))
    write = targets.folder_writer(output.path, seeds) if output.kind == "folder" else None
    counter, kept = _CallCounter(pipe.unet), []
    try:
        with _progress(total, job.progress and ranks.lead) as bar:
            for i in range(rounds):
                chunk = batches[i] if i < len(batches) else []
                images = sample_batch(pipe, chunk, job, plan, size) if chunk else None
                if images is not None and write is not None:
                    write(chunk, images)
                elif images is not None:
                    kept.append(images)
                bar.update(sum(distributed.gather(len(chunk), pipe.device)))
    finally:
        counter.close()
    nfe = counter.calls // len(batches) if batches else None
    return (
        (np.concatenate(kept) if kept else None),
        nfe,
        distributed.gather(len(seeds), pipe.device),
    )


def _fitting_batch_size(pipe: Any, plan: Plan) -> int:
    """The memory-aware default: the batch that fits half the free memory (capped on CPU),
    halved under guidance (the model sees two halves per image)."""
    from pndm.runtime.fast import default_batch_size

    return max(1, default_batch_size(pipe.device, pipe.dtype, pipe.unet) // plan.batch_factor)
