"""Sizes no micro_sym model has, checked before a model is built from a config."""

#: Bounds on model configs, checked before anything is built: a damaged or foreign file asking for
#: absurd sizes would otherwise allocate its filters first (widths of 200,000 asked for 1.28 TB).
#: The bundled models are far inside them (at most 128 channels, 4 levels, 5x5 kernels).
MAX_CHANNELS = 8192
MAX_LEVELS = 10
MAX_KERNEL = 31
MAX_CONVS = 16
#: Weights (float32: 4 GB), from a per-layer estimate of the U-Net's convolutions.
MAX_PARAMETERS = 10**9
