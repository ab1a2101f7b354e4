"""Training networks on labeled data (docs/design.md §1 dataset layout).

- :mod:`micro_sym.training.train2d`: the 2D p4m segmenters (``micro-sym train CONFIG``, ``--init``,
  ``--resume``), and fine-tuning used by pruning.
- :mod:`micro_sym.training.train3d`: the 3D octahedral G-CNNs (3D configs route here).
"""
