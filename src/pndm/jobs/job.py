"""What ``pndm sample`` is asked to do: the job, its checks that need no model, and its summary.

Torch-free at import, so that ``pndm --help`` can read the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pndm.calibration import Calibration
from pndm.checks import check_count, check_flag
from pndm.jobs import destinations
from pndm.jobs.destinations import Output
from pndm.jobs.ranks import Ranks
from pndm.jobs.seeds import check_seed_list
from pndm.runtime.devices import resolve_device, resolve_dtype

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
    channels_last: bool | None = None  # None: NCHW (`pndm.jobs.run.job_layout`)
    compile: bool = False
    cuda_graphs: bool = False
    overwrite: bool = False
    progress: bool = True
    threads: int | None = None  # CPU threads per process; None: torch's, or cores / local ranks
    timesteps: list[float] | None = None  # an explicit grid (e.g. a tuned one); replaces steps
    method_options: dict[str, Any] = field(default_factory=dict)  # the sampler's **options
    calibration: Calibration | None = None  # a tuned grid's (pndm.calibration)
    class_labels: int | str | None = None  # a conditional model's class (or its name), or "random"
    guidance_scale: float = 1.0  # classifier-free guidance (pndm.guidance); 1: none


@dataclass
class SampleSummary:
    images: int  # sampled in this run, all ranks
    skipped: int  # already on disk (folder resume)
    nfe: int | None  # model calls per image (None: an adaptive method that sampled nothing)
    seconds: float
    method: str
    steps: int  # of the grid sampled on (an explicit grid's, or --steps)
    output: Output
    per_rank: list[int] = field(default_factory=list)  # images sampled by each rank

    def line(self) -> str:
        done = self.images and self.seconds > 0  # nothing written: no rate (not "inf images/s")
        rate = f", {self.images / self.seconds:.2f} images/s" if done else ""
        skipped = f" ({self.skipped} already there)" if self.skipped else ""
        ranks = f" on {len(self.per_rank)} ranks {self.per_rank}" if len(self.per_rank) > 1 else ""
        nfe = "?" if self.nfe is None else str(self.nfe)
        return (
            f"wrote {self.images} images{skipped}{ranks} to {self.output.path} "
            f"({self.output.kind}): {self.method}, {self.steps} steps, NFE {nfe}, "
            f"{self.seconds:.1f} s{rate}"
        )


def check_job(job: SampleJob, ranks: Ranks | None = None) -> Output:
    """Validate everything that needs no model, so mistakes fail before any loading."""
    ranks = ranks or Ranks()
    from pndm.grids import check_num_steps  # imports torch: not at `pndm --help` time

    check_num_steps(job.steps)
    for name in ("overwrite", "progress", "cuda_graphs"):
        check_flag(name, getattr(job, name))
    if job.channels_last is not None:
        check_flag("channels_last", job.channels_last)
    if job.batch_size is not None:
        check_count("batch_size", job.batch_size)
    if job.threads is not None:
        check_count("threads", job.threads)
    check_seed_list(job.seeds)  # a seed twice would be written twice into one PNG, or an .npz
    if job.method is not None:
        from pndm.samplers import get_sampler

        get_sampler(job.method)  # lists the valid names on a typo
    resolve_dtype(job.dtype)
    job_device(job, ranks)
    output = destinations.resolve_output(job.out, job.overwrite)
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
