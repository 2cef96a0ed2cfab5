"""The model: diffusers' UNet2DModel (unet_2d and its parts), loading it from a folder (loading),
and converting checkpoints of the original DDPM/DDIM/PNDM code (convert, legacy)."""
