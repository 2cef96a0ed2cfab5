"""What a model folder's files decide before the model is loaded: the method, the grid (built
here, once: the pipeline samples on exactly this grid), the NFE, the image size and mode, and the
pixel-deciding settings a folder's manifest records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pndm.assets import model_folder
from pndm.calibration import check_calibration
from pndm.jobs.job import SampleJob

if TYPE_CHECKING:  # imports torch: the plan's module stays light until it runs
    from pndm.compat.folders import ModelLabels


@dataclass(frozen=True)
class Plan:
    """``grid``: the full grid t_0 > ... > t_N (target included) the pipeline samples on;
    ``nfe``: model calls per image (None for an adaptive method)."""

    method: str
    grid: tuple[float, ...]
    nfe: int | None
    settings: dict[str, Any]  # the pixel-deciding settings (`pndm.jobs.manifest.SETTINGS`)
    image: dict[str, Any]  # width, height and PNG mode of every image

    @property
    def batch_factor(self) -> int:
        """Model inputs per image (`pndm.guidance.batch_factor`)."""
        from pndm.guidance import batch_factor

        setting = self.settings.get("conditioning")
        return 1 if setting is None else batch_factor(True, setting["guidance_scale"])

    @property
    def class_labels(self) -> int | str | None:
        """The labels every batch is sampled with, as the manifest records them: one int (a
        class name resolved), "random", or None for an unconditional job."""
        setting = self.settings.get("conditioning")
        return None if setting is None else setting["class_labels"]

    def labels(self, seeds: list[int]) -> Any:
        """The class label of each seed's image (int64), or None for an unconditional job."""
        from pndm.guidance import recorded_labels

        setting = self.settings.get("conditioning")
        return None if setting is None else recorded_labels(setting, seeds, "the job")

    @property
    def steps(self) -> int:
        return len(self.grid) - 1


def plan(job: SampleJob) -> Plan:
    """Read the model folder's configs (not its weights into a model): the method, the image
    size, the step count or explicit grid checked against the scheduler, the method's options,
    the model's content hash."""
    from pndm import grids, samplers
    from pndm.compat import folders
    from pndm.files.jsonfile import read_json
    from pndm.images import image_shape, png_mode

    folder = model_folder(job.model)
    files = folders.model_files(folder)
    unet, scheduler = read_json(files.unet_config), read_json(files.scheduler_config)
    sampler = folders.scheduler_from_config(scheduler)
    grid = _grid(job, sampler)  # bad steps or times fail here
    try:
        channels, height, width = image_shape(unet)
    except ValueError as err:
        raise ValueError(f"{files.unet_config}: {err}; pndm sample needs it") from None
    method = job.method or grids.default_method(scheduler)
    nfe = samplers.nfe(method, len(grid) - 1, **job.method_options)  # bad options fail here
    settings = {"model": folders.model_hash(folder), "method": method}
    steps = job.steps if job.timesteps is None else len(grid) - 1
    settings |= {"method_options": dict(job.method_options), "steps": steps}
    settings |= {"timesteps": job.timesteps, "dtype": job.dtype}
    check_calibration(job.calibration, sampler.schedule)  # shifted times in the schedule's range
    if job.calibration is not None:  # absent, not null: folders written before keep resuming
        settings["calibration"] = job.calibration.to_json()
    conditioning = _conditioning(job, unet, folders.read_labels(folder, unet))
    if conditioning is not None:  # absent likewise for an unconditional job
        settings["conditioning"] = conditioning
    image = {"width": width, "height": height, "mode": png_mode(channels)}
    return Plan(method, tuple(grid), nfe, settings, image)


def _conditioning(
    job: SampleJob, unet: dict[str, Any], labels: ModelLabels
) -> dict[str, Any] | None:
    """The job's labels and guidance checked against the model (before it is loaded) and the
    labels its folder records; a class name is recorded as its int."""
    from pndm.guidance import Conditioning, conditioning_setting

    cond = Conditioning.of(unet, labels.null_label, job.class_labels, job.guidance_scale,
                           job.seeds[:1], 1, labels.class_names)  # fmt: skip
    return conditioning_setting(cond, job.class_labels)


def _grid(job: SampleJob, scheduler: Any) -> list[float]:
    """The job's grid t_0 > ... > t_N: ``job.timesteps`` (checked), else ``job.steps`` steps."""
    if job.timesteps is None:
        return scheduler.grid(job.steps).tolist()
    return scheduler.grid(None, job.timesteps).tolist()
