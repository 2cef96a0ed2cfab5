"""The jobs behind ``pndm sample``: seeds -> ranks -> batches -> a contact sheet, an .npz, or a
folder of per-seed PNGs guarded by a manifest.

Every image is decided by its seed alone (the pipeline draws each image's noise from its own
generator), so a job splits into batches of any size and, under torchrun, into ranks
(`pndm.jobs.ranks`). A folder resumes: a seed counts as done only if its PNG is complete and of
the expected size and mode; `pndm.jobs.manifest` refuses a run whose settings differ from the
folder's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pndm.assets import model_folder
from pndm.calibration import Calibration, check_calibration
from pndm.checks import check_count
from pndm.images import to_uint8
from pndm.jobs import destinations as targets
from pndm.jobs import ranks as distributed
from pndm.jobs.destinations import Output
from pndm.jobs.ranks import Ranks
from pndm.runtime.devices import resolve_device, resolve_dtype, torch_threads

DEFAULT_STEPS = 50
DEFAULT_BATCH_SIZE = None  # what fits in memory: pndm.runtime.fast.default_batch_size


@dataclass
class SampleJob:
    """What to sample; every field is a plain value so the CLI maps onto it one to one."""

    out: str | os.PathLike  # a str ending in "/" is a folder even with a suffix
    seeds: list[int]
    model: Path | None = None  # None: the shipped digits model
    method: str | None = None  # None: the scheduler config's (f-pndm, or plms with skip_prk_steps)
    steps: int = DEFAULT_STEPS
    batch_size: int | None = DEFAULT_BATCH_SIZE  # None: what fits in memory
    device: str = "auto"
    dtype: str = "float32"
    channels_last: bool | None = None  # None: channels-last inputs on the CPU only
    compile: bool = False
    cuda_graphs: bool = False
    overwrite: bool = False
    progress: bool = True
    threads: int | None = None  # CPU threads per process; None: torch's, or cores / local ranks
    timesteps: list[float] | None = None  # an explicit grid (e.g. a tuned one); replaces steps
    method_options: dict[str, Any] = field(default_factory=dict)  # the sampler's **options
    calibration: Calibration | None = None  # a tuned grid's (pndm.calibration)


@dataclass
class SampleSummary:
    images: int  # sampled in this run, all ranks
    skipped: int  # already on disk (folder resume)
    nfe: int | None  # model calls per image
    seconds: float
    method: str
    steps: int
    output: Output
    per_rank: list[int] = field(default_factory=list)  # images sampled by each rank

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else float("inf")
        skipped = f" ({self.skipped} already there)" if self.skipped else ""
        ranks = f" on {len(self.per_rank)} ranks {self.per_rank}" if len(self.per_rank) > 1 else ""
        nfe = "?" if self.nfe is None else str(self.nfe)
        return (
            f"wrote {self.images} images{skipped}{ranks} to {self.output.path} "
            f"({self.output.kind}): {self.method}, {self.steps} steps, NFE {nfe}, "
            f"{self.seconds:.1f} s, {rate:.2f} images/s"
        )


def check_job(job: SampleJob, ranks: Ranks | None = None) -> Output:
    """Validate everything that needs no model, so mistakes fail before any loading."""
    ranks = ranks or Ranks()
    from pndm.grids import check_num_steps  # imports torch: not at `pndm --help` time

    check_num_steps(job.steps)
    if job.batch_size is not None:
        check_count("batch_size", job.batch_size)
    if job.threads is not None:
        check_count("threads", job.threads)
    if not job.seeds:
        raise ValueError("no seeds to sample")
    if job.method is not None:
        from pndm.samplers import get_sampler

        get_sampler(job.method)  # lists the valid names on a typo
    resolve_dtype(job.dtype)
    job_device(job, ranks)
    output = targets.resolve_output(job.out, job.overwrite)
    if ranks.many and output.kind != "folder":
        raise ValueError(
            f"under torchrun write a folder (--out {output.path.with_suffix('')}/) and pack it "
            f"with `pndm pack FOLDER {output.path.name}`: ranks write their own PNGs"
        )
    return output


def job_device(job: SampleJob, ranks: Ranks) -> Any:
    """The job's device; under torchrun each rank's CUDA device is ``cuda:LOCAL_RANK``."""
    device = resolve_device(job.device)
    if ranks.many and device.type == "cuda":
        if job.device not in ("auto", "cuda"):
            raise ValueError(
                f"under torchrun each rank takes its GPU from LOCAL_RANK; use --device cuda or "
                f"auto, not {job.device!r}"
            )
        return resolve_device(f"cuda:{ranks.local_rank}")
    return device


def load_pipeline(job: SampleJob, device: Any) -> Any:
    """The PNDMPipeline of the job's model folder on ``device``, its progress bar off."""
    from pndm.compat.pipeline import PNDMPipeline

    folder, dtype = model_folder(job.model), resolve_dtype(job.dtype)
    pipe = PNDMPipeline.from_pretrained(folder, torch_dtype=dtype)
    pipe.to(device).set_progress_bar_config(disable=True)  # one bar for the whole job instead
    return pipe


Loader = Callable[[SampleJob, Any], Any]


def run_job(job: SampleJob, load: Loader = load_pipeline) -> SampleSummary:
    """Sample ``job.seeds`` (this rank's share under torchrun) and write them to ``job.out``."""
    ranks = Ranks.from_env()
    output = check_job(job, ranks)
    job_plan = plan(job)
    manifest = _folder_manifest(job, output, job_plan) if output.kind == "folder" else None
    device = job_device(job, ranks)
    distributed.start(ranks, device)
    try:
        with _threads(job, ranks, device):
            if manifest is not None:
                _open_folder(output.path, manifest, ranks, device)
            return _run(job, load, ranks, device, output, job_plan)
    finally:
        distributed.stop()


@dataclass(frozen=True)
class Plan:
    """What the model folder's files decide before the model is loaded."""

    method: str
    settings: dict[str, Any]  # the pixel-deciding settings (`pndm.jobs.manifest.SETTINGS`)
    image: dict[str, Any]  # width, height and PNG mode of every image


def plan(job: SampleJob) -> Plan:
    """Read the model folder's configs (not its weights into a model): the method, the image
    size, the step count or explicit grid checked against the scheduler, the method's option
    names, the model's content hash."""
    from pndm import grids, samplers
    from pndm.compat import folders
    from pndm.files import read_json
    from pndm.images import png_mode
    from pndm.jobs import manifest

    files = folders.model_files(model_folder(job.model))
    unet, scheduler = read_json(files[0]), read_json(files[2])
    grid = _grid(job, folders.scheduler_from_config(scheduler))  # bad steps or times fail here
    size = unet.get("sample_size")
    if size is None:
        raise ValueError(f"{files[0]} has no sample_size: pndm sample cannot tell the image size")
    width, height = (size, size) if isinstance(size, int) else (size[1], size[0])
    method = job.method or grids.default_method(scheduler)
    samplers.nfe(method, len(grid) - 1, **job.method_options)  # bad option names fail here
    settings = {"model": manifest.files_hash(files), "method": method}
    steps = job.steps if job.timesteps is None else len(grid) - 1
    settings |= {"method_options": dict(job.method_options), "steps": steps}
    settings |= {"timesteps": job.timesteps, "dtype": job.dtype}
    check_calibration(job.calibration)
    if job.calibration is not None:  # absent, not null: folders written before keep resuming
        settings["calibration"] = job.calibration.to_json()
    image = {"width": width, "height": height, "mode": png_mode(int(unet["in_channels"]))}
    return Plan(method, settings, image)


def _grid(job: SampleJob, scheduler: Any) -> list[float]:
    """The job's grid t_0 > ... > t_N: ``job.timesteps`` (checked), else ``job.steps`` steps."""
    if job.timesteps is None:
        return scheduler.grid(job.steps).tolist()
    return scheduler.grid(None, job.timesteps).tolist()


def _folder_manifest(job: SampleJob, output: Output, plan: Plan) -> Any:
    """The folder's manifest after this run, checked against the folder's (before loading)."""
    from pndm import __version__
    from pndm.jobs import manifest

    versions = {"pndm": __version__, "torch": _torch_version()}
    wanted = manifest.Manifest(plan.settings, plan.image, versions, list(job.seeds))
    return manifest.merge(output.path, wanted, job.overwrite)


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


def _open_folder(folder: Path, manifest: Any, ranks: Ranks, device: Any) -> None:
    """Rank 0 makes the folder, removes a killed run's temporaries and writes the manifest;
    every rank waits for it before looking at any file."""
    from pndm.jobs import manifest as manifests

    if ranks.lead:
        folder.mkdir(exist_ok=True)
        targets.remove_debris(folder)
        manifests.write(folder, manifest)
    distributed.barrier(device)


def _run(
    job: SampleJob, load: Loader, ranks: Ranks, device: Any, output: Output, plan: Plan
) -> SampleSummary:
    mine = ranks.share(job.seeds)
    todo = _todo(job, output, plan, mine)
    skipped = sum(distributed.gather(len(mine) - len(todo), device))
    method = plan.method
    if not sum(distributed.gather(len(todo), device)):  # a finished folder: nothing to load
        return SampleSummary(0, skipped, None, 0.0, method, job.steps, output)
    pipe = load(job, device)
    _check_fits(pipe, output, len(todo))
    start = time.perf_counter()
    images, nfe, per_rank = _sample_all(pipe, todo, job, method, output, ranks)
    if output.kind != "folder":
        targets.write_all(output, images, job.seeds, replace=job.overwrite)
    seconds = time.perf_counter() - start
    return SampleSummary(sum(per_rank), skipped, nfe, seconds, method, job.steps, output, per_rank)


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
    """One image must fit the UNet's working memory; all of them the output (`targets`)."""
    import torch

    from pndm.runtime import fast

    fast.check_fits(pipe.device, pipe.dtype, pipe.unet)
    config = pipe.unet.config
    size = config["sample_size"]
    shape = (int(config["in_channels"]), *((size, size) if isinstance(size, int) else size))
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
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=not enabled, leave=False)


def _sample(pipe: Any, seeds: list[int], job: SampleJob, method: str, size: int) -> np.ndarray:
    """The images of ``seeds``, sampled in a batch padded to ``size`` images (copies of the last
    seed): the kernels a convolution library picks, and so the last bits of every image, depend
    on the batch's size, never on its other images or their order (tests/test_scale.py)."""
    padded = [*seeds, *[seeds[-1]] * (size - len(seeds))]
    result = pipe(
        batch_size=size,
        num_inference_steps=job.steps,
        timesteps=job.timesteps,
        calibration=job.calibration,
        seeds=padded,
        method=method,
        output_type="np",
        return_dict=True,
        channels_last=job.channels_last,
        compile=job.compile,
        cuda_graphs=job.cuda_graphs,
        **job.method_options,
    )
    return to_uint8(np.asarray(result.images))[: len(seeds)]


def _batches(seeds: Sequence[int], size: int) -> list[list[int]]:
    return [list(seeds[start : start + size]) for start in range(0, len(seeds), size)]


def _sample_all(
    pipe: Any, seeds: list[int], job: SampleJob, method: str, output: Output, ranks: Ranks
) -> tuple[np.ndarray | None, int | None, list[int]]:
    """(the images unless written per seed, NFE per image, images per rank). PNGs of a folder
    are written as batches finish; every rank runs as many rounds as the busiest one, so the
    progress bar (rank 0's) counts all ranks' images."""
    size = min(job.batch_size or _fitting_batch_size(pipe), len(job.seeds))  # same on any rank
    batches = _batches(seeds, size)
    rounds = max(distributed.gather(len(batches), pipe.device))
    total = sum(distributed.gather(len(seeds), pipe.device))
    write = targets.folder_writer(output.path, seeds) if output.kind == "folder" else None
    counter, kept = _CallCounter(pipe.unet), []
    try:
        with _progress(total, job.progress and ranks.lead) as bar:
            for i in range(rounds):
                chunk = batches[i] if i < len(batches) else []
                images = _sample(pipe, chunk, job, method, size) if chunk else None
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


def _fitting_batch_size(pipe: Any) -> int:
    """The memory-aware default: the batch that fits half the free memory (capped on CPU)."""
    from pndm.runtime.fast import default_batch_size

    return default_batch_size(pipe.device, pipe.dtype, pipe.unet)
