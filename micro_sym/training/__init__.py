"""Training networks on labeled data (docs/design.md §1 dataset layout), 2D and 3D alike.

- :mod:`micro_sym.training.config`: the one config (``micro-sym train CONFIG.yaml``);
- :mod:`micro_sym.training.loop`: the one training loop (``--resume``, ``--init``, ``--epochs``);
- :mod:`micro_sym.training.train2d` / :mod:`micro_sym.training.train3d`: what each dimension adds
  (data and targets, augmented crops, loss, validation; 3D also synthetic volumes and evaluation);
- :mod:`micro_sym.training.finetune`: fine-tuning from given weights (used after pruning).
"""
