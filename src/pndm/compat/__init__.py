"""The diffusers surface: PNDMScheduler, PNDMPipeline, their outputs and pipeline folders."""
