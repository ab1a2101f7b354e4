"""Deployment: field-wise pruning of equivariant models and export to plain PyTorch, TorchScript, ONNX.

``micro_sym.deploy.prune``
    :func:`prune_model` removes whole fields (all |G| channels of a regular field) of escnn U-Nets
    (2D ``unet_equi``, 3D ``gcnn3d`` variant ``octa``) and rebuilds a smaller escnn model whose
    config records the surviving field counts (``layer_fields``), so it saves and loads like any model.
``micro_sym.deploy.export``
    :func:`export_model` writes a deployable file (``.pt``/``.safetensors`` plain torch, ``.ts``
    TorchScript, ``.onnx``) that runs without escnn; :func:`load_deployed` loads it back with the
    SegModel interface (``ndim``, ``k``, ``halo``, ``total_stride``, ``__call__`` on torch tensors).
``micro_sym.deploy.runtime``
    :func:`cpu_forward` runs exported networks on the CPU by the fastest backend (onnxruntime for 2D,
    channels-last torch for 3D); the engine, ``predict_image`` and ``segment_image`` use it.
``micro_sym.deploy.measure``
    Parameters, convolution MACs, CPU latency, equivariance error over the exact group elements.

Nothing here imports escnn at module import time: deployed files load in environments without it.
"""
