"""U-Net topologies: the escnn (p4m / D_N / C_N) network and its plain-CNN baseline.

Both share one topology class, :class:`UNetCore`, whose pieces are swappable modules: the escnn
version holds ``R2Conv``/``InnerBatchNorm``/``ReLU``/``PointwiseMaxPool2D``/``R2Upsampling`` plus
small wrapper modules of our own (:class:`Wrap`, :class:`Unwrap`, :class:`Concat`), and every piece
has an ``export()``; ``UNetCore.export()`` therefore yields the same topology in plain torch.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

GROUPS = ("C1", "C4", "C8", "C16", "D4", "D8", "D16")


# --------------------------------------------------------------------------- plain-torch pieces


class Concat(nn.Module):
    """Skip connection: concatenate ``(skip, up)`` along channels.

    In escnn mode the inputs are GeometricTensors and the result's field type is the direct sum of
    the two (which is what the following ``R2Conv`` was built for); ``export()`` returns the plain
    version, a ``torch.cat``.
    """

    def __init__(self, escnn_mode: bool = False):
        super().__init__()
        self.escnn_mode = escnn_mode

    def forward(self, skip, up):
        if self.escnn_mode:
            from escnn.nn import tensor_directsum

            return tensor_directsum([skip, up])
        return torch.cat([skip, up], dim=1)

    def export(self):
        return Concat(escnn_mode=False)


class Wrap(nn.Module):
    """Tensor -> GeometricTensor of a fixed input type (identity after export)."""

    def __init__(self, in_type=None):
        super().__init__()
        self.in_type = in_type

    def forward(self, x):
        if self.in_type is None:
            return x
        from escnn.nn import GeometricTensor

        return GeometricTensor(x, self.in_type)

    def export(self):
        return Wrap(None)


class Unwrap(nn.Module):
    """GeometricTensor -> Tensor (identity after export)."""

    def forward(self, x):
        return x.tensor if hasattr(x, "tensor") else x

    def export(self):
        return Unwrap()


def _export(module):
    """Export a module that may be escnn (has ``export``) or already plain torch."""
    if hasattr(module, "export"):
        out = module.export()
    else:
        out = copy.deepcopy(module)
    return out.eval() if not module.training else out


class UNetCore(nn.Module):
    """Encoder-decoder with skip connections; every level halves (encoder) / doubles (decoder) size.

    ``forward``: ``wrap -> [enc_0, pool, enc_1, ..., enc_L] -> [up, concat(skip), dec]* -> head -> unwrap``.
    """

    def __init__(self, wrap, enc, pools, ups, cats, decs, head, unwrap):
        super().__init__()
        self.wrap, self.unwrap, self.head = wrap, unwrap, head
        self.enc, self.pools = nn.ModuleList(enc), nn.ModuleList(pools)
        self.ups, self.cats, self.decs = nn.ModuleList(ups), nn.ModuleList(cats), nn.ModuleList(decs)

    def forward(self, x):
        h = self.wrap(x)
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                h = self.pools[i - 1](h)
            h = block(h)
            skips.append(h)
        skips.pop()  # the bottleneck is not a skip
        for up, cat, dec in zip(self.ups, self.cats, self.decs):
            h = dec(cat(skips.pop(), up(h)))
        return self.unwrap(self.head(h))

    def export(self):
        """Plain-torch copy of the same topology, identical outputs (eval mode is kept)."""
        ex = lambda ms: [_export(m) for m in ms]  # noqa: E731
        out = UNetCore(
            _export(self.wrap), ex(self.enc), ex(self.pools), ex(self.ups), ex(self.cats), ex(self.decs),
            _export(self.head), _export(self.unwrap),
        )
        return out.train(self.training)


# --------------------------------------------------------------------------- escnn network


def make_gspace(group: str):
    """escnn gspace for a group name: ``D4`` = p4m (flips + 90° rotations), ``C8`` = 45° rotations, ..."""
    from escnn import gspaces

    if group not in GROUPS:
        raise ValueError(f"unknown group '{group}' (expected one of {', '.join(GROUPS)})")
    n = int(group[1:])
    return gspaces.flipRot2dOnR2(n) if group[0] == "D" else gspaces.rot2dOnR2(n)


def orientation_repr(gspace, k: int):
    """The frequency-k O(2) irrep restricted to the network's group (docs/design.md §2).

    For D4 and k = 4 it is trivial (cos 4θ) ⊕ mirror-sign (sin 4θ); for rotation-only groups the
    mirror part disappears; for D16 a 22.5° rotation turns (cos 4θ, sin 4θ) by 90°. escnn's element
    (+, 1) acts on arrays as ``np.rot90`` (counter-clockwise as displayed) and its flip as
    ``np.fliplr``, which is the micro_sym angle convention, so no sign change is needed.
    """
    from escnn import group as egroup

    o2 = egroup.o2_group()
    rep = o2.restrict_representation(gspace._sg_id, o2.irrep(1, k))
    assert rep.group == gspace.fibergroup
    return rep


def build_equivariant_unet(group="D4", k=4, widths=(2, 4, 8, 16), convs_per_level=2, kernel_size=3,
                           stem_kernel=5, upsample="bilinear", head_kernel=1, dec_convs=None):
    """escnn U-Net over ``group`` with regular fields; output ``(B, 3, H, W)`` tensor.

    Parameters
    ----------
    group : str
        ``D4`` (p4m, default), ``D8``, ``D16``, ``C1``, ``C4``, ``C8``, ``C16``.
    k : int
        Lattice symmetry order of the orientation field (4 square, 6 hexagonal).
    widths : sequence of int
        Number of *regular fields* per level (channels = width × |G|); ``len(widths) - 1`` poolings.
    convs_per_level : int
        3×3 convolution + batch norm + ReLU blocks per encoder level.
    dec_convs : int, optional
        Blocks per decoder level (default ``convs_per_level``); 1 saves full-resolution compute.
    stem_kernel : int
        Kernel size of the very first convolution (larger sees a lattice period at once).
    upsample : {"bilinear", "nearest"}
        Both are exactly equivariant for even sizes and export to ``torch.nn.Upsample``.
    """
    from escnn import nn as enn

    gs = make_gspace(group)
    reg = lambda n: enn.FieldType(gs, [gs.regular_repr] * n)  # noqa: E731

    def block(in_type, out_type, first_kernel, n=convs_per_level):
        layers, t = [], in_type
        for j in range(n):
            ks = first_kernel if j == 0 else kernel_size
            layers += [enn.R2Conv(t, out_type, ks, padding=ks // 2), enn.InnerBatchNorm(out_type), enn.ReLU(out_type, inplace=True)]
            t = out_type
        return enn.SequentialModule(*layers)

    in_type = enn.FieldType(gs, [gs.trivial_repr])
    types = [reg(w) for w in widths]
    enc = [block(in_type, types[0], stem_kernel)] + [block(types[i - 1], types[i], kernel_size) for i in range(1, len(types))]
    pools = [enn.PointwiseMaxPool2D(t, 2, stride=2) for t in types[:-1]]
    ups, cats, decs = [], [], []
    for i in range(len(types) - 1, 0, -1):
        ups.append(enn.R2Upsampling(types[i], scale_factor=2, mode=upsample, align_corners=False))
        cats.append(Concat(escnn_mode=True))
        decs.append(block(types[i - 1] + types[i], types[i - 1], kernel_size, dec_convs or convs_per_level))
    out_type = enn.FieldType(gs, [gs.trivial_repr, orientation_repr(gs, k)])
    head = enn.R2Conv(types[0], out_type, head_kernel, padding=head_kernel // 2)
    return UNetCore(Wrap(in_type), enc, pools, ups, cats, decs, head, Unwrap())


# --------------------------------------------------------------------------- plain baseline


def build_plain_unet(k=4, widths=(16, 32, 64, 128), convs_per_level=2, kernel_size=3, stem_kernel=5,
                     upsample="bilinear", head_kernel=1, dec_convs=None):
    """Plain-CNN U-Net with the same topology and heads (``widths`` are channels here)."""
    del k  # the plain head is 3 unconstrained channels whatever the lattice

    def block(cin, cout, first_kernel, n=convs_per_level):
        layers = []
        for j in range(n):
            ks = first_kernel if j == 0 else kernel_size
            layers += [nn.Conv2d(cin if j == 0 else cout, cout, ks, padding=ks // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    w = list(widths)
    enc = [block(1, w[0], stem_kernel)] + [block(w[i - 1], w[i], kernel_size) for i in range(1, len(w))]
    pools = [nn.MaxPool2d(2, 2) for _ in w[:-1]]
    ups, cats, decs = [], [], []
    for i in range(len(w) - 1, 0, -1):
        ups.append(nn.Upsample(scale_factor=2, mode=upsample, **({"align_corners": False} if upsample == "bilinear" else {})))
        cats.append(Concat())
        decs.append(block(w[i - 1] + w[i], w[i - 1], kernel_size, dec_convs or convs_per_level))
    head = nn.Conv2d(w[0], 3, head_kernel, padding=head_kernel // 2)
    return UNetCore(Wrap(None), enc, pools, ups, cats, decs, head, Unwrap())


def analytic_receptive_radius(widths, convs_per_level, kernel_size, stem_kernel, head_kernel=1, dec_convs=None) -> int:
    """Upper bound of the receptive-field radius (px) from the layer geometry (a check on the probe)."""
    r, scale = 0.0, 1
    levels = len(widths)
    for lvl in range(levels):
        for j in range(convs_per_level):
            ks = stem_kernel if (lvl == 0 and j == 0) else kernel_size
            r += (ks // 2) * scale
        if lvl < levels - 1:
            r += scale  # 2x2 max pool reaches one more pixel of the finer grid
            scale *= 2
    for lvl in range(levels - 1, 0, -1):
        r += scale / 2  # bilinear upsampling reads the neighbouring coarse sample
        scale //= 2
        r += (dec_convs or convs_per_level) * (kernel_size // 2) * scale
    r += head_kernel // 2
    return int(np.ceil(r))
