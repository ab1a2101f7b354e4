"""3D segmentation U-Nets for tomography volumes: octahedral, SO(3)-steerable, point-group and plain.

All variants share one encoder-decoder topology and one interface (``ndim``, ``k``, ``halo``,
``total_stride``, ``config``, ``forward(x: (B, 1, z, y, x)) -> (B, 1 + d, z, y, x)``, ``export()``,
``normalize``). Output channel 0 is the boundary logit (an invariant field); channels 1.. are the
cubic-orientation field of :mod:`micro_sym.orientation.cubic_harmonics` (l = 4, 9 channels, optionally + l = 6,
13 channels) in escnn's irrep basis, decoded per voxel with ``sh_to_quat``.

Variants (``config["variant"]``):

``octa``
    escnn ``octaOnR3()``: the 24 rotations of the cube, regular fields, ``R3Conv`` + ``InnerBatchNorm``
    + ``ReLU`` + max pooling + nearest upsampling. Exact on the voxel grid. ``export()`` gives plain
    ``Conv3d``/``BatchNorm3d``/``ReLU``/``MaxPool3d``/``Upsample`` with identical outputs.
``so3``
    escnn ``rot3dOnR3()``: SO(3)-steerable fields (irreps l = 0..L, one sigmoid gate per field),
    ``IIDBatchNorm3d``, average pooling (linear, so equivariant for every field type). Exact on the
    24 grid rotations (its steerable kernels are sampled on a grid those rotations permute),
    equivariant up to interpolation for other rotations. Gated nonlinearities have no escnn export;
    ``export()`` here converts convolutions with escnn's own export and the gates into a small
    plain-torch module (``_PlainGate``), so the deployed model is plain torch too. Only l = 4 output
    (a 3³ steerable kernel is band-limited to frequency 2, so l = 6 is unreachable from l <= 4).
``pointgroup``
    G-CNN for a crystallographic point group G in {O (432, 24 rotations), T (23, 12 rotations)}
    with point-group-symmetrized filter banks: every filter is stored once and expanded into its |G|
    rotated copies (the orbit under G, with the matching permutation of group channels), so the
    layer is G-equivariant by construction. Implemented here in plain torch because escnn 1.0.11
    raises ``NotImplementedError`` for the tetrahedral subgroup. ``export()`` bakes the expanded
    filters into ``Conv3d``.
``plain``
    Conv3d + BatchNorm3d + ReLU baseline with the same topology and channel count.

``width`` is the number of *channels* at the first level for every variant (fields x field size),
so variants compare at equal width and equal deployed cost.
"""

from __future__ import annotations

import copy
import functools
import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from micro_sym.orientation.cubic_harmonics import DIM, VOLUME_TO_ESCNN, escnn_irrep_matrices

VARIANTS = ("octa", "so3", "pointgroup", "plain")

DEFAULT_CONFIG = {
    "arch": "gcnn3d",
    "variant": "octa",
    "ndim": 3,
    "width": 24,  # channels at level 0
    "levels": 2,  # resolution levels (levels - 1 poolings)
    "degrees": [4],  # harmonic degrees of the orientation head
    "group": "O",  # pointgroup variant: "O" or "T"
    "so3_max_frequency": 2,  # so3 variant: hidden irreps l = 0..L
    "lattice": "cubic",
}


# ------------------------------------------------------------------------------- grid rotations

# Index space (d, h, w) -> micro_sym physical frame (x, y, z) = (w, h, d) (docs/design.md §1).
_INDEX_TO_PHYS = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])


@dataclass(frozen=True)
class GridRotation:
    """One of the 24 rotations of the voxel grid.

    ``rotate_volume`` maps index ``p`` (centred, (d, h, w)) to ``index @ p``:
    ``out[..., q] = in[..., p]`` with ``q_i = signs[i] * p[perm[i]]``.
    """

    perm: tuple
    signs: tuple
    index: np.ndarray  # (3, 3) on (d, h, w)
    phys: np.ndarray  # (3, 3) on micro_sym (x, y, z)
    escnn: np.ndarray  # (3, 3) on escnn's (x, y, z)

    @property
    def quat(self):
        """Quaternion (w, x, y, z) of the physical rotation: orientations map q -> quat ⊗ q."""
        from ..orientation import matrix_to_quat

        return matrix_to_quat(self.phys)


@functools.lru_cache(maxsize=None)
def cube_grid_rotations():
    """The 24 proper rotations of the voxel grid, identity first.

    Returns
    -------
    tuple of GridRotation
    """
    rots = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) < 0:
                continue
            phys = _INDEX_TO_PHYS @ m @ _INDEX_TO_PHYS.T
            esc = VOLUME_TO_ESCNN @ phys @ VOLUME_TO_ESCNN.T
            rots.append(GridRotation(perm, signs, m, phys, esc))
    rots.sort(key=lambda r: (r.perm != (0, 1, 2) or r.signs != (1, 1, 1)))
    return tuple(rots)


def rotate_volume(x, rot: GridRotation):
    """Rotate the last three (z, y, x) axes of a torch tensor or numpy array exactly on the grid.

    Parameters
    ----------
    x : torch.Tensor or ndarray, shape (..., z, y, x)
    rot : GridRotation

    Returns
    -------
    Same type, shape permuted accordingly.
    """
    n = x.ndim
    axes = list(range(n - 3)) + [n - 3 + p for p in rot.perm]
    flip = [n - 3 + i for i in range(3) if rot.signs[i] < 0]
    if isinstance(x, torch.Tensor):
        y = x.permute(*axes)
        return torch.flip(y, flip) if flip else y
    y = np.transpose(x, axes)
    return np.flip(y, flip) if flip else y


def point_group_indices(name: str):
    """Indices into :func:`cube_grid_rotations` of point group ``"O"`` (432) or ``"T"`` (23)."""
    rots = cube_grid_rotations()
    if name == "O":
        return tuple(range(24))
    if name == "T":
        # T: cyclic (even) axis permutations with an even number of sign flips (E, 3 C2, 8 C3).
        even = {(0, 1, 2), (1, 2, 0), (2, 0, 1)}
        return tuple(i for i, r in enumerate(rots) if r.perm in even and np.prod(r.signs) > 0)
    from ..errors import MicroSymError

    raise MicroSymError(f"config: point group {name!r} is not one of 'O', 'T'")


@functools.lru_cache(maxsize=None)
def field_matrices(degrees: tuple):
    """Block-diagonal representation matrices ``(24, d, d)`` of the orientation field per grid rotation.

    Under grid rotation ``g`` a correct model's orientation output satisfies
    ``out(rotate(x))[:, 1:] = ρ(g) · rotate(out(x))[:, 1:]``.
    """
    mats = np.stack([r.escnn for r in cube_grid_rotations()])
    blocks = [escnn_irrep_matrices(l, mats) for l in degrees]
    d = sum(DIM[l] for l in degrees)
    out = np.zeros((24, d, d))
    o = 0
    for l, b in zip(degrees, blocks):
        out[:, o : o + DIM[l], o : o + DIM[l]] = b
        o += DIM[l]
    return out


def rotate_output(y, rot_index: int, degrees=(4,)):
    """Transform a model output ``(B, 1 + d, z, y, x)`` by a grid rotation (the expected equivariance).

    Rotates the volume axes and applies ``ρ(g)`` to the orientation channels.
    """
    rot = cube_grid_rotations()[rot_index]
    y = rotate_volume(y, rot)
    rho = torch.as_tensor(field_matrices(tuple(degrees))[rot_index], dtype=y.dtype, device=y.device)
    return torch.cat([y[:, :1], torch.einsum("ij,bj...->bi...", rho, y[:, 1:])], 1)


# ------------------------------------------------------------------------------- shared pieces


def _unet_forward(x, enc, pools, ups, dec, head, cat):
    """The one U-Net topology, for escnn GeometricTensors and plain tensors alike."""
    skips = []
    for i, block in enumerate(enc):
        x = block(x)
        if i < len(enc) - 1:
            skips.append(x)
            x = pools[i](x)
    for up, block in zip(ups, dec):
        x = up(x)
        x = cat(skips.pop(), x)
        x = block(x)
    return head(x)


def _torch_cat(a, b):
    return torch.cat([a, b], 1)


class PlainUNet3D(nn.Module):
    """Deployed (plain torch) form of every variant: same topology, torch layers only."""

    def __init__(self, enc, pools, ups, dec, head):
        super().__init__()
        self.enc, self.pools, self.ups = nn.ModuleList(enc), nn.ModuleList(pools), nn.ModuleList(ups)
        self.dec, self.head = nn.ModuleList(dec), head

    def forward(self, x):
        return _unet_forward(x, self.enc, self.pools, self.ups, self.dec, self.head, _torch_cat)


class Exported3D(nn.Module):
    """Plain-torch deployed model with the SegModel interface (``exported = True``; no escnn needed)."""

    ndim = 3
    exported = True
    normalization = "pm1"  # micro_sym.models.normalize: lo -> -1, hi -> +1 (as 2D)

    def __init__(self, core, source):
        super().__init__()
        self.core = core
        for name in ("config", "degrees", "levels", "total_stride", "k", "lattice", "out_channels", "halo"):
            setattr(self, name, copy.deepcopy(getattr(source, name)))
        self.meta = dict(getattr(source, "meta", {}))
        self.normalize = source.normalize

    def forward(self, x):
        return self.core(x)

    def export(self):
        return self


class SegModel3D(nn.Module):
    """Base class: the SegModel interface for 3D volumes."""

    ndim = 3
    #: Input normalization tag read by the inference engine: the shared ``normalize`` (lo -> -1, hi -> +1).
    normalization = "pm1"

    def __init__(self, config):
        super().__init__()
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config or {})
        cfg["degrees"] = [int(d) for d in cfg["degrees"]]
        self.config = cfg
        self.degrees = tuple(cfg["degrees"])
        self.levels = int(cfg["levels"])
        self.total_stride = 2 ** (self.levels - 1)
        # For 3D, ``k`` is the lattice label rather than an in-plane fold; 24 = |432|.
        self.k = 24
        self.lattice = "cubic"
        self.out_channels = 1 + sum(DIM[l] for l in self.degrees)
        self.halo = _halo(self.levels, self.total_stride)
        self.meta: dict = {}

    exported = False

    @staticmethod
    def normalize(x, lo, hi):
        """The shared normalization (``lo -> -1``, ``hi -> +1``) of :mod:`micro_sym.models.normalize`."""
        from .normalize import normalize

        return normalize(x, lo, hi)

    def _wrap_export(self, plain):
        """Give the plain-torch network this model's interface (``Exported3D``)."""
        return Exported3D(plain, self)

    def widths(self):
        w = int(self.config["width"])
        return [w * 2**i for i in range(self.levels)]


def _halo(levels, stride):
    """Receptive-field radius (voxels) of the topology, rounded up to the total stride.

    Two 3³ convolutions per level add 2 voxels at that level's scale in the encoder and again in the
    decoder; each pooling/upsampling pair adds up to one more voxel at its scale.
    """
    r = 0
    for i in range(levels):
        s = 2**i
        r += 2 * s + (2 * s if i < levels - 1 else 0) + (s if i < levels - 1 else 0)
    return int(-(-r // stride) * stride)


# ------------------------------------------------------------------------------- escnn variants


def _escnn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import escnn.gspaces as gspaces
        import escnn.group as group
        import escnn.nn as enn
    return gspaces, group, enn


@functools.lru_cache(maxsize=None)
def _gate_class():
    """The gate as an escnn ``EquivariantModule`` (class built on first use: escnn imports slowly)."""
    _, _, enn = _escnn()
    return type("Gate", (_GateImpl, enn.EquivariantModule), {})


def _Gate(in_type, n_gates):
    """Sigmoid gates: field i is multiplied by ``sigmoid(gate_i + b_i)``; an escnn EquivariantModule.

    Built here instead of ``escnn.nn.GatedNonLinearity1`` so that it has an ``export()``.
    """
    return _gate_class()(in_type, n_gates)


class _GateImpl:
    def __init__(self, in_type, n_gates):
        torch.nn.Module.__init__(self)
        self.in_type = in_type
        self.n_gates = n_gates
        self.out_type = in_type.index_select(list(range(n_gates, len(in_type))))
        idx = []
        for i, r in enumerate(self.out_type.representations):
            idx += [i] * r.size
        self.register_buffer("gate_idx", torch.tensor(idx, dtype=torch.long))
        self.bias = nn.Parameter(torch.zeros(1, n_gates, 1, 1, 1))

    def forward(self, x):
        _, _, enn = _escnn()
        t = x.tensor
        g = torch.sigmoid(t[:, : self.n_gates] + self.bias)
        return enn.GeometricTensor(t[:, self.n_gates :] * g[:, self.gate_idx], self.out_type)

    def evaluate_output_shape(self, input_shape):
        return (input_shape[0], self.out_type.size) + tuple(input_shape[2:])

    def export(self):
        return _PlainGate(self.n_gates, self.gate_idx.clone(), self.bias.detach().clone())


class _PlainGate(nn.Module):
    """Plain-torch gated nonlinearity (the exported form of ``_Gate``)."""

    def __init__(self, n_gates, gate_idx, bias):
        super().__init__()
        self.n_gates = n_gates
        self.register_buffer("gate_idx", gate_idx)
        self.bias = nn.Parameter(bias)

    def forward(self, x):
        g = torch.sigmoid(x[:, : self.n_gates] + self.bias)
        return x[:, self.n_gates :] * g[:, self.gate_idx]


class _EscnnUNet3D(SegModel3D):
    """Common code for the escnn variants (``octa`` and ``so3``)."""

    def _build(self, gs, block_types, out_type, regular):
        gspaces, group, enn = _escnn()
        self.gspace = gs
        self.in_type = gs.type(gs.trivial_repr)

        def block(t_in, hidden):
            mods, t = [], t_in
            for _ in range(2):
                conv_out, post = hidden
                mods.append(enn.R3Conv(t, conv_out, 3, padding=1, bias=False))
                if regular:
                    mods += [enn.InnerBatchNorm(conv_out), enn.ReLU(conv_out, inplace=True)]
                else:
                    mods += [enn.IIDBatchNorm3d(conv_out), _Gate(conv_out, post)]
                t = mods[-1].out_type
            return enn.SequentialModule(*mods), t

        enc, pools, ups, dec, skips = [], [], [], [], []
        t = self.in_type
        for i in range(self.levels):
            b, t = block(t, block_types[i])
            enc.append(b)
            if i < self.levels - 1:
                skips.append(t)
                pool = enn.PointwiseMaxPool3D(t, 2, 2) if regular else enn.PointwiseAvgPool3D(t, 2, 2)
                pools.append(pool)
        for i in reversed(range(self.levels - 1)):
            ups.append(enn.R3Upsampling(t, scale_factor=2, mode="nearest"))
            cat_t = skips[i] + t
            b, t = block(cat_t, block_types[-1] if (i == 0 and len(block_types) > self.levels) else block_types[i])
            dec.append(b)
        self.enc, self.pools, self.ups = nn.ModuleList(enc), nn.ModuleList(pools), nn.ModuleList(ups)
        self.dec = nn.ModuleList(dec)
        self.out_type = out_type
        self.head = enn.R3Conv(t, out_type, 1, bias=True)

    # escnn's sampled kernel bases (rebuilt from the config; tens of MB for a small model) and the
    # eval-mode expanded filters (rebuilt from the weights on ``eval()``) stay out of model files.
    DERIVED_KEYS = ("sampled_basis", ".filter", ".expanded_bias")

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        for key in [k for k in sd if any(t in k for t in self.DERIVED_KEYS)]:
            del sd[key]
        return sd

    def forward(self, x):
        _, _, enn = _escnn()
        gx = enn.GeometricTensor(x, self.in_type)
        out = _unet_forward(gx, self.enc, self.pools, self.ups, self.dec, self.head, lambda a, b: enn.tensor_directsum([a, b]))
        return out.tensor

    def export(self):
        """Plain-torch copy (``PlainUNet3D``) in eval mode with identical outputs."""
        was = self.training
        self.eval()
        with torch.no_grad():
            plain = PlainUNet3D(
                [_export_escnn(b) for b in self.enc],
                [_export_escnn(p) for p in self.pools],
                [_export_escnn(u) for u in self.ups],
                [_export_escnn(b) for b in self.dec],
                _export_escnn(self.head),
            )
        self.train(was)
        return self._wrap_export(plain.eval())


def _export_escnn(m):
    """escnn module -> plain torch, filling the gaps of escnn's own ``export()``."""
    _, _, enn = _escnn()
    if isinstance(m, enn.SequentialModule):
        return nn.Sequential(*[_export_escnn(c) for c in m.children()])
    if isinstance(m, enn.PointwiseAvgPool3D):
        # Linear pooling has no escnn export; it is exactly torch's AvgPool3d on the raw tensor.
        return nn.AvgPool3d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
    if isinstance(m, enn.IIDBatchNorm3d):
        return _probe_affine(m)
    m.eval()
    return m.export()


def _probe_affine(m):
    """Export a per-voxel affine escnn module (batch norm in eval mode) as an exact 1x1x1 Conv3d.

    escnn's ``IIDBatchNorm3d.export`` refuses fields whose trivial components are not contiguous;
    in eval mode the module is ``y = A x + b`` per voxel, so probing it with 0 and the unit vectors
    recovers ``A`` and ``b`` exactly, whatever the field layout.
    """
    _, _, enn = _escnn()
    m.eval()
    c = m.in_type.size
    probe = torch.cat([torch.zeros(1, c), torch.eye(c)]).reshape(c + 1, c, 1, 1, 1)
    with torch.no_grad():
        out = m(enn.GeometricTensor(probe.to(next(m.buffers()).device), m.in_type)).tensor.reshape(c + 1, -1).cpu()
    conv = nn.Conv3d(c, out.shape[1], 1)
    conv.weight.data.copy_((out[1:] - out[0]).T.reshape(out.shape[1], c, 1, 1, 1))
    conv.bias.data.copy_(out[0])
    return conv.eval()


class OctaUNet3D(_EscnnUNet3D):
    """escnn ``octaOnR3`` U-Net with regular fields (exportable, exact on the grid)."""

    def __init__(self, config=None):
        super().__init__(config)
        gspaces, group, enn = _escnn()
        gs = gspaces.octaOnR3()
        types = [(gs.type(*[gs.regular_repr] * max(1, w // 24)), None) for w in self.widths()]
        so3 = group.so3_group(6)
        reps = [gs.trivial_repr] + [so3.restrict_representation("octa", so3.irrep(l)) for l in self.degrees]
        self._build(gs, types, gs.type(*reps), regular=True)
        if self.config.get("layer_fields"):  # field-pruned model (micro_sym.deploy.prune)
            from micro_sym.models.fields import shrink_structure; shrink_structure(self, self.config["layer_fields"])  # noqa: E702


class SO3UNet3D(_EscnnUNet3D):
    """escnn ``rot3dOnR3`` SO(3)-steerable U-Net (irreps l <= L, gated; exported via ``_PlainGate``)."""

    def __init__(self, config=None):
        super().__init__(config)
        if self.degrees != (4,):
            from ..errors import MicroSymError

            raise MicroSymError("config: the so3 variant predicts the l=4 field only (degrees: [4])")
        gspaces, group, enn = _escnn()
        L = int(self.config["so3_max_frequency"])
        gs = gspaces.rot3dOnR3(maximum_frequency=max(L, 4))
        so3 = gs.fibergroup

        def hidden(width, lmax):
            per = (lmax + 1) + (lmax + 1) ** 2  # gates + sum of irrep sizes, per multiplicity
            m = max(1, round(width / per))
            fields = [so3.irrep(l) for _ in range(m) for l in range(lmax + 1)]
            return gs.type(*([gs.trivial_repr] * len(fields) + fields)), len(fields)

        types = [hidden(w, L) for w in self.widths()]
        # The last decoder block also carries l = 3, 4 fields: a 3^3 steerable kernel reaches
        # frequency 2, so l = 4 comes from l = 2 features; the 1x1x1 head then reads it off.
        types.append(hidden(self.widths()[0], max(L, 4)))
        self._build(gs, types, gs.type(gs.trivial_repr, so3.irrep(4)), regular=False)


# ------------------------------------------------------------------------------- point-group G-CNN


class _GroupConv3d(nn.Module):
    """Convolution with point-group-symmetrized filters (lifting when ``in_group`` is False).

    Output channel ``(f, g)`` (index ``f * |G| + g``) uses the base filter of field ``f`` rotated by
    ``g`` and, for group inputs, with its group channels permuted by ``g``: the filter bank is the
    orbit of the base filters under G, which makes the layer equivariant by construction.
    """

    def __init__(self, in_ch, out_fields, group, kernel=3, in_group=True):
        super().__init__()
        self.group = tuple(group)
        G = len(self.group)
        rots = cube_grid_rotations()
        mats = [rots[i].index for i in self.group]
        # mult[a, b] = index of g_a g_b; inv[a] = index of g_a^-1 (matrices compose exactly).
        find = {tuple(m.astype(int).ravel()): i for i, m in enumerate(mats)}
        self.mult = [[find[tuple((ma @ mb).astype(int).ravel())] for mb in mats] for ma in mats]
        self.inv = [find[tuple(m.T.astype(int).ravel())] for m in mats]
        self.in_group, self.kernel, self.out_fields = in_group, kernel, out_fields
        fan_in = in_ch * kernel**3
        if in_group:
            shape = (out_fields, in_ch // G, G, kernel, kernel, kernel)
        else:
            shape = (out_fields, in_ch, kernel, kernel, kernel)
        self.weight = nn.Parameter(torch.randn(shape) * np.sqrt(2.0 / fan_in))

    def expanded_weight(self):
        rots = cube_grid_rotations()
        ws = []
        for a, gi in enumerate(self.group):
            w = self.weight
            if self.in_group:
                # Input group channel g' meets base slice g_a^-1 g'.
                idx = [self.mult[self.inv[a]][b] for b in range(len(self.group))]
                w = w[:, :, idx]
                w = w.flatten(1, 2)
            ws.append(rotate_volume(w, rots[gi]))
        w = torch.stack(ws, 1)  # (F, G, C_in, k, k, k)
        return w.flatten(0, 1)

    def forward(self, x):
        return torch.nn.functional.conv3d(x, self.expanded_weight(), padding=self.kernel // 2)

    def export(self):
        conv = nn.Conv3d(self.weight.shape[1] * (len(self.group) if self.in_group else 1), self.out_fields * len(self.group), self.kernel, padding=self.kernel // 2, bias=False)
        conv.weight.data.copy_(self.expanded_weight().detach())
        return conv


class _FieldBatchNorm(nn.Module):
    """BatchNorm sharing statistics over the |G| channels of each regular field (like InnerBatchNorm)."""

    def __init__(self, fields, G):
        super().__init__()
        self.G = G
        self.bn = nn.BatchNorm3d(fields)

    def forward(self, x):
        b, c, d, h, w = x.shape
        return self.bn(x.reshape(b, c // self.G, self.G * d, h, w)).reshape(b, c, d, h, w)

    def export(self):
        bn = nn.BatchNorm3d(self.bn.num_features * self.G, eps=self.bn.eps).eval()
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).data.copy_(getattr(self.bn, name).detach().repeat_interleave(self.G))
        return bn


class _RegularHead(nn.Module):
    """1x1x1 head from regular fields: invariant boundary logit + orientation field ``Σ_g ρ(g) a_f``."""

    def __init__(self, fields, group, degrees):
        super().__init__()
        self.G = len(group)
        rho = field_matrices(tuple(degrees))[list(group)]  # (G, d, d)
        self.register_buffer("rho", torch.tensor(rho, dtype=torch.float32))
        d = rho.shape[1]
        self.w_boundary = nn.Parameter(torch.randn(fields) / np.sqrt(fields * self.G))
        self.bias = nn.Parameter(torch.zeros(1))
        self.a = nn.Parameter(torch.randn(d, fields) / np.sqrt(fields * self.G))

    def weight(self):
        orient = torch.einsum("gij,jf->ifg", self.rho, self.a).flatten(1)  # (d, F*G)
        bound = self.w_boundary[:, None].expand(-1, self.G).reshape(1, -1)
        return torch.cat([bound, orient], 0)[..., None, None, None]

    def forward(self, x):
        b = torch.cat([self.bias, torch.zeros(self.rho.shape[1], device=x.device, dtype=self.bias.dtype)])
        return torch.nn.functional.conv3d(x, self.weight(), b)

    def export(self):
        w = self.weight().detach()
        conv = nn.Conv3d(w.shape[1], w.shape[0], 1)
        conv.weight.data.copy_(w)
        conv.bias.data.zero_()
        conv.bias.data[0] = self.bias.detach()[0]
        return conv


def _export_plain(m):
    if hasattr(m, "export"):
        return m.export()
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*[_export_plain(c) for c in m])
    return copy.deepcopy(m)


class PointGroupUNet3D(SegModel3D):
    """U-Net with point-group-symmetrized filters for G = O (432) or T (23); regular fields."""

    def __init__(self, config=None):
        super().__init__(config)
        self.group = point_group_indices(self.config["group"])
        G = len(self.group)
        fields = [max(1, w // G) for w in self.widths()]

        def block(c_in, f, in_group):
            return nn.Sequential(
                _GroupConv3d(c_in, f, self.group, 3, in_group), _FieldBatchNorm(f, G), nn.ReLU(inplace=True),
                _GroupConv3d(f * G, f, self.group, 3, True), _FieldBatchNorm(f, G), nn.ReLU(inplace=True),
            )

        enc, c = [], 1
        for i, f in enumerate(fields):
            enc.append(block(c, f, i > 0))
            c = f * G
        dec = []
        for i in reversed(range(self.levels - 1)):
            dec.append(block(fields[i] * G + c, fields[i], True))
            c = fields[i] * G
        self.enc, self.dec = nn.ModuleList(enc), nn.ModuleList(dec)
        self.pools = nn.ModuleList([nn.MaxPool3d(2) for _ in range(self.levels - 1)])
        self.ups = nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(self.levels - 1)])
        self.head = _RegularHead(fields[0], self.group, self.degrees)

    def forward(self, x):
        return _unet_forward(x, self.enc, self.pools, self.ups, self.dec, self.head, _torch_cat)

    def export(self):
        was = self.training
        self.eval()
        with torch.no_grad():
            plain = PlainUNet3D(
                [_export_plain(b) for b in self.enc], [copy.deepcopy(p) for p in self.pools],
                [copy.deepcopy(u) for u in self.ups], [_export_plain(b) for b in self.dec], _export_plain(self.head),
            )
        self.train(was)
        return self._wrap_export(plain.eval())


class PlainCNN3D(SegModel3D):
    """Non-equivariant baseline: Conv3d + BatchNorm3d + ReLU, same topology and channel count."""

    def __init__(self, config=None):
        super().__init__(config)
        ws = self.widths()

        def block(c_in, c):
            return nn.Sequential(
                nn.Conv3d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
                nn.Conv3d(c, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
            )

        self.enc = nn.ModuleList([block(1 if i == 0 else ws[i - 1], w) for i, w in enumerate(ws)])
        self.dec = nn.ModuleList([block(ws[i] + ws[i + 1], ws[i]) for i in reversed(range(self.levels - 1))])
        self.pools = nn.ModuleList([nn.MaxPool3d(2) for _ in range(self.levels - 1)])
        self.ups = nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(self.levels - 1)])
        self.head = nn.Conv3d(ws[0], self.out_channels, 1)

    def forward(self, x):
        return _unet_forward(x, self.enc, self.pools, self.ups, self.dec, self.head, _torch_cat)

    def export(self):
        plain = PlainUNet3D(*(copy.deepcopy(m) for m in (self.enc, self.pools, self.ups, self.dec, self.head)))
        return self._wrap_export(plain.eval())


_CLASSES = {"octa": OctaUNet3D, "so3": SO3UNet3D, "pointgroup": PointGroupUNet3D, "plain": PlainCNN3D}


def complete_config3d(config) -> dict:
    """Fill defaults into a 3D model config and check it.

    Raises
    ------
    MicroSymError
        Unknown variant, group or degrees, or bad sizes.
    """
    from ..errors import MicroSymError

    if not isinstance(config, dict):
        raise MicroSymError(f"model config must be a mapping, got {type(config).__name__}")
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config)
    cfg["arch"], cfg["ndim"], cfg["lattice"] = "gcnn3d", 3, "cubic"
    if cfg["variant"] not in _CLASSES:
        raise MicroSymError(f"model config: unknown 3D variant '{cfg['variant']}' (one of {', '.join(VARIANTS)})")
    cfg["degrees"] = [int(d) for d in cfg["degrees"]]
    if cfg["degrees"] not in ([4], [4, 6]):
        raise MicroSymError(f"model config: degrees must be [4] or [4, 6], got {cfg['degrees']}")
    if cfg["group"] not in ("O", "T"):
        raise MicroSymError(f"model config: point group '{cfg['group']}' is not one of O, T")
    for key in ("width", "levels", "so3_max_frequency"):
        if int(cfg[key]) < 1:
            raise MicroSymError(f"model config: {key} must be a positive integer")
        cfg[key] = int(cfg[key])
    # Sizes no model has (a damaged or foreign file) fail here, before the filters are allocated.
    from micro_sym.models.limits import MAX_CHANNELS, MAX_LEVELS

    hint = "; the file is damaged or not a micro_sym model"
    if cfg["levels"] > MAX_LEVELS:
        raise MicroSymError(f"model config: 'levels' is {cfg['levels']} (at most {MAX_LEVELS}){hint}")
    if cfg["width"] * 2 ** (cfg["levels"] - 1) > MAX_CHANNELS:
        raise MicroSymError(f"model config: 'width' {cfg['width']:,} asks for {cfg['width'] * 2 ** (cfg['levels'] - 1):,} "
                            f"channels at level {cfg['levels'] - 1} (at most {MAX_CHANNELS:,}){hint}")
    if cfg["so3_max_frequency"] > 8:
        raise MicroSymError(f"model config: 'so3_max_frequency' is {cfg['so3_max_frequency']} (at most 8){hint}")
    return cfg


def measure_halo3d(model, trials: int = 2) -> int:
    """Receptive-field radius (voxels) by a gradient probe, rounded up to ``total_stride``.

    As in 2D: the union over a few random inputs of the voxels whose input gradient is non-zero for
    a stride-sized block of centre outputs (max pooling routes gradients through one voxel per window).
    """
    import math

    s = model.total_stride
    bound = _halo(model.levels, s)
    size = int(math.ceil((2 * bound + 2 * s + 4) / s) * s)
    probe = model if model.exported else model.export()
    probe = copy.deepcopy(probe).float().cpu().eval()
    gen = torch.Generator().manual_seed(0)
    reach = np.zeros((size,) * 3, dtype=bool)
    c = size // 2
    sl = slice(c - s // 2, c - s // 2 + s)
    with torch.enable_grad():  # callable from no_grad contexts
        for _ in range(trials):
            x = torch.randn(1, 1, size, size, size, generator=gen, requires_grad=True)
            probe(x)[:, :, sl, sl, sl].abs().sum().backward()
            reach |= (x.grad[0, 0].abs() > 0).numpy()
    idx = np.argwhere(reach)
    if idx.size == 0:
        return s
    radius = int(np.abs(idx - c).max())
    return int(math.ceil(max(radius, 1) / s) * s)


def build_model3d(config, measure_halo: bool = True):
    """Build an untrained 3D model (``variant`` in ``VARIANTS``, see ``DEFAULT_CONFIG``); halo measured.

    Examples
    --------
    >>> m = build_model3d({"variant": "plain", "width": 8})
    >>> tuple(m(torch.zeros(1, 1, 8, 8, 8)).shape)
    (1, 10, 8, 8, 8)
    """
    cfg = complete_config3d(config or {})
    model = _CLASSES[cfg["variant"]](cfg)
    if measure_halo:  # otherwise the analytic bound of the topology (tests skip the probe's cost)
        model.halo = measure_halo3d(model)
    return model


def model3d_from_blob(blob, path, device="cpu", export: bool = False):
    """Rebuild a 3D model from a loaded model file (called by ``micro_sym.models.load_model``).

    The file was written by ``save_model`` in eval mode (escnn's expanded filters are buffers then),
    so the model is built, switched to eval and loaded strictly.
    """
    import hashlib
    from pathlib import Path

    from ..errors import MicroSymError

    try:
        cfg = complete_config3d(blob["config"])
    except MicroSymError as err:  # name the file: the config came from it
        raise MicroSymError(f"{path}: {err}") from None
    model = _CLASSES[cfg["variant"]](cfg).eval()
    # escnn keeps some index buffers as expanded (stride-0) views, which load_state_dict cannot
    # copy into; give every buffer its own memory first (values are rebuilt from the config anyway).
    for mod in model.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is not None:
                mod._buffers[name] = buf.clone().contiguous()
    derived = getattr(model, "DERIVED_KEYS", ())
    try:
        res = model.load_state_dict(blob["state_dict"], strict=False)
    except RuntimeError as err:
        raise MicroSymError(f"{path}: weights do not fit the stored config ({str(err).splitlines()[0]})") from None
    missing = [k for k in res.missing_keys if not any(t in k for t in derived)]
    if missing or res.unexpected_keys:
        raise MicroSymError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, "
                            f"unexpected {res.unexpected_keys[:3]})")
    # Re-expand escnn's eval-mode filters from the loaded weights (they are not stored).
    model.train().eval()
    model.halo = int(blob["meta"].get("halo", model.halo))
    model.meta = dict(blob["meta"])
    model.meta["path"] = str(path)
    model.meta["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if export:
        model = model.export()
    return model.to(device).eval()
