"""Running the UNet fast: devices and dtypes, input layout, compilation, CUDA graphs, memory."""
