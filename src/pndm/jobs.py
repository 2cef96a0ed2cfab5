"""The jobs behind ``pndm sample``: seeds -> batches -> a contact sheet, per-seed PNGs or an .npz.

Every image is decided by its seed alone (the pipeline draws each image's noise from its own
generator), so a job can be split into batches of any size and a folder output can resume: seeds
whose PNG already exists are skipped. Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pndm.checks import check_count
from pndm.devices import resolve_device, resolve_dtype
from pndm.images import contact_sheet, save_npz, save_png, to_uint8

OUTPUT_KINDS = ("sheet", "folder", "npz")
DEFAULT_STEPS = 50
DEFAULT_BATCH_SIZE = None  # what fits in memory: pndm.fast.default_batch_size
PNG_COMPRESSION_BOUND = 10  # a PNG is assumed at least 1/10 of its raw size (disk check)


def seed_filename(seed: int) -> str:
    return f"seed{seed:06d}.png"


# --- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Where the images go: ``kind`` is "sheet" (a .png contact sheet), "folder" (one PNG per
    seed) or "npz"."""

    path: Path
    kind: str


def resolve_output(path: str | os.PathLike, overwrite: bool = False) -> Output:
    """Decide the output kind from the path and refuse what cannot or must not be written."""
    text = os.fspath(path)
    out = Path(text)
    is_folder = out.is_dir() or text.endswith(("/", os.sep)) or out.suffix == ""
    suffix = out.suffix.lower()
    if not is_folder and suffix not in (".png", ".npz"):
        raise ValueError(
            f"unsupported output {text!r}: use a .png (contact sheet), an .npz (uint8 array) or "
            "a folder"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(f"parent folder of the output does not exist: {out.parent}")
    if is_folder:
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"output {out} exists and is not a folder")
        check_writable(out if out.is_dir() else out.parent)
        return Output(out, "folder")
    if out.is_dir():
        raise FileExistsError(f"output {out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output file {out} exists; pass --overwrite to replace it")
    check_writable(out.parent)
    return Output(out, "sheet" if suffix == ".png" else "npz")


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root and for
    read-only file systems, where permission bits say nothing."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".pndm-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder}: {err.strerror}") from None


# --- the job --------------------------------------------------------------------------------


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


@dataclass
class SampleSummary:
    images: int  # sampled in this run
    skipped: int  # already on disk (folder resume)
    nfe: int | None  # model calls per image
    seconds: float
    method: str
    steps: int
    output: Output

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else float("inf")
        skipped = f" ({self.skipped} already there)" if self.skipped else ""
        nfe = "?" if self.nfe is None else str(self.nfe)
        return (
            f"wrote {self.images} images{skipped} to {self.output.path} ({self.output.kind}): "
            f"{self.method}, {self.steps} steps, NFE {nfe}, {self.seconds:.1f} s, "
            f"{rate:.2f} images/s"
        )


def check_job(job: SampleJob) -> Output:
    """Validate everything that needs no model, so mistakes fail before any loading."""
    check_count("num_inference_steps", job.steps)
    if job.batch_size is not None:
        check_count("batch_size", job.batch_size)
    if not job.seeds:
        raise ValueError("no seeds to sample")
    if job.method is not None:
        from pndm.samplers import get_sampler

        get_sampler(job.method)  # lists the valid names on a typo
    resolve_dtype(job.dtype)
    resolve_device(job.device)
    return resolve_output(job.out, job.overwrite)


def load_pipeline(job: SampleJob) -> Any:
    """The PNDMPipeline of ``job.model`` (default: the shipped model) on the job's device."""

    from pndm.pipeline import PNDMPipeline

    folder = job.model
    if folder is None:
        from pndm.assets import shipped_model_path

        folder = shipped_model_path()
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    pipe = PNDMPipeline.from_pretrained(folder, torch_dtype=resolve_dtype(job.dtype))
    pipe = pipe.to(resolve_device(job.device))
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole job instead
    return pipe


def default_method(pipe: Any) -> str:
    """F-PNDM, or PLMS for a scheduler config with ``skip_prk_steps`` (as diffusers' step())."""
    return "plms" if pipe.scheduler.config.get("skip_prk_steps") else "f-pndm"


def check_fits(pipe: Any, output: Output, n: int) -> None:
    """Refuse, before sampling, a request whose images cannot fit: in memory (a sheet or an
    .npz holds them all), on disk, or one image in the UNet's working memory."""
    import torch

    from pndm import fast

    fast.check_fits(pipe.device, pipe.dtype, pipe.unet)
    config = pipe.unet.config
    size = config["sample_size"]
    raw = (
        n * int(config["in_channels"]) * math.prod((size, size) if isinstance(size, int) else size)
    )
    if output.kind != "folder":
        _need("memory", 2 * raw, fast.free_memory(torch.device("cpu")))
        return
    folder = output.path if output.path.is_dir() else output.path.parent
    stats = os.statvfs(folder)
    _need("disk", raw // PNG_COMPRESSION_BOUND, stats.f_bavail * stats.f_frsize)
    if stats.f_files and n > stats.f_favail:  # f_files 0: no inode limit (e.g. some FUSE)
        raise ValueError(f"{n} PNG files need {n} free inodes; {folder} has {stats.f_favail}")


def _need(what: str, need: int, free: int) -> None:
    if need > free:
        raise ValueError(
            f"the images need about {need / 2**30:.3g} GiB of {what}; {free / 2**30:.3g} GiB "
            "are free (sample fewer images per run, or into a folder)"
        )


def _chunks(seeds: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(seeds), size):
        yield list(seeds[start : start + size])


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


def _sample(pipe: Any, seeds: list[int], job: SampleJob, method: str) -> np.ndarray:
    result = pipe(
        batch_size=len(seeds),
        num_inference_steps=job.steps,
        seeds=seeds,
        method=method,
        output_type="np",
        return_dict=True,
        channels_last=job.channels_last,
        compile=job.compile,
        cuda_graphs=job.cuda_graphs,
    )
    return to_uint8(np.asarray(result.images))


def run_job(job: SampleJob, load: Callable[[SampleJob], Any] = load_pipeline) -> SampleSummary:
    """Sample ``job.seeds`` in batches of ``job.batch_size`` and write them to ``job.out``."""
    output = check_job(job)
    todo = job.seeds
    if output.kind == "folder" and not job.overwrite:
        todo = [s for s in job.seeds if not (output.path / seed_filename(s)).is_file()]
    skipped = len(job.seeds) - len(todo)
    if not todo:  # a finished folder: nothing to load
        return SampleSummary(0, skipped, None, 0.0, job.method or "-", job.steps, output)
    pipe = load(job)
    check_fits(pipe, output, len(todo))
    method = job.method or default_method(pipe)
    pipe.scheduler.grid(job.steps)  # a bad step count fails here, before the progress bar
    start = time.perf_counter()
    images, nfe = _sample_all(pipe, todo, job, method, output)
    if output.kind != "folder":
        _write_all(output, images, job.seeds)
    seconds = time.perf_counter() - start
    return SampleSummary(len(todo), skipped, nfe, seconds, method, job.steps, output)


def _sample_all(
    pipe: Any, seeds: list[int], job: SampleJob, method: str, output: Output
) -> tuple[np.ndarray | None, int | None]:
    """(the images unless written per seed, NFE per image); PNGs of a folder as batches finish."""
    write = _folder_writer(output.path) if output.kind == "folder" else None
    batch_size = job.batch_size or _fitting_batch_size(pipe)
    counter = _CallCounter(pipe.unet)
    kept: list[np.ndarray] = []
    try:
        with _progress(len(seeds), job.progress) as bar:
            for chunk in _chunks(seeds, batch_size):
                images = _sample(pipe, chunk, job, method)
                if write is not None:
                    write(chunk, images)
                else:
                    kept.append(images)
                bar.update(len(chunk))
    finally:
        counter.close()
    batches = math.ceil(len(seeds) / batch_size)
    return (np.concatenate(kept) if kept else None), counter.calls // batches


def _fitting_batch_size(pipe: Any) -> int:
    """The memory-aware default: the batch that fits half the free memory (capped on CPU)."""
    from pndm.fast import default_batch_size

    return default_batch_size(pipe.device, pipe.dtype, pipe.unet)


def _folder_writer(folder: Path) -> Callable[[list[int], np.ndarray], None]:
    folder.mkdir(exist_ok=True)

    def write(seeds: list[int], images: np.ndarray) -> None:
        for seed, image in zip(seeds, images, strict=True):
            save_png(folder / seed_filename(seed), image)

    return write


def _write_all(output: Output, images: np.ndarray | None, seeds: Sequence[int]) -> None:
    assert images is not None
    if output.kind == "sheet":
        save_png(output.path, contact_sheet(images))
    else:
        save_npz(output.path, images, seeds)
