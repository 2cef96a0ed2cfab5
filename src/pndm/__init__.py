"""pndm: pseudo numerical methods for diffusion models, diffusers-compatible.

Public names are loaded lazily so that ``import pndm`` stays cheap and a CLI start does not pay for
modules it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pndm._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "NoiseSchedule": "pndm.schedule",
    "VPSchedule": "pndm.schedule",
    "PNDMScheduler": "pndm.compat.scheduler",
    "SamplerScheduler": "pndm.compat.sampler_scheduler",
    "SchedulerOutput": "pndm.compat.scheduler",
    "PNDMPipeline": "pndm.compat.pipeline",
    "ImagePipelineOutput": "pndm.compat.outputs",
    "UNet2DModel": "pndm.models.unet_2d",
    "SAMPLERS": "pndm.samplers",
}

__all__ = [
    "ImagePipelineOutput",
    "NoiseSchedule",
    "PNDMPipeline",
    "PNDMScheduler",
    "SAMPLERS",
    "SamplerScheduler",
    "SchedulerOutput",
    "UNet2DModel",
    "VPSchedule",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from pndm.compat.outputs import ImagePipelineOutput
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.compat.sampler_scheduler import SamplerScheduler
    from pndm.compat.scheduler import PNDMScheduler, SchedulerOutput
    from pndm.models.unet_2d import UNet2DModel
    from pndm.samplers import SAMPLERS
    from pndm.schedule import NoiseSchedule, VPSchedule


__getattr__ = lazy_getattr(globals(), _EXPORTS)
