"""Each grain's lattice angle, measured from the image inside the grain (docs/design.md §6.6).

A network's orientation map is good to a degree or two; the image itself holds the lattice to a
fraction of that. Once the grains are known, the power spectrum of each grain's own pixels puts its
lattice's first ring of spots at ``k`` directions (``k`` = 4 square, 6 hexagonal, 2 one set of
fringes), and the phase of the ring profile's ``k``-th angular harmonic gives their direction:

    c_k = Σ_f w(|f|) · (P(f) − P̄(|f|)) · exp(i k φ(f)),    fringe normal = arg(c_k) / k  (mod 360/k),

where ``P`` is the power spectrum of the grain's tapered pixels, ``P̄`` its radial mean (the smooth,
isotropic part: noise, amorphous speckle, intensity gradients; removing it also removes the 4-fold bias
of summing over a square grid of frequencies), ``w`` a Gaussian ring around the lattice's first-ring
frequency and ``φ`` the direction of ``f`` (x = column, y up: docs/design.md §1.1). The k spots of one
lattice add in phase; shot noise and the spots of a neighbouring grain seen through the taper do not.
The grain's pixels are tapered over two lattice periods inside its outline, so the outline's own
spectrum (a rectangle's would put power along both axes) does not leak onto the ring.

``c_0 = Σ_f w(|f|) P(f)`` is the ring's power; :func:`ring_sums` gives the sums per grain,
:func:`lattice_angles` turns them into angles. ``strength = |c_k| / c_0`` is 1 for a perfect k-fold ring
and near 0 where the grain shows no lattice at that ring; angles are reported only from
:data:`MIN_STRENGTH` on. A grain is measured whole (in a :data:`MAX_WINDOW` window around its centre),
never in parts: the block engine finds each final grain's extent block by block
(:func:`grain_extents`, :func:`merge_extents`) and then reads that window, so its sums, and every
decision taken on them, are those of the whole image however it was cut into blocks.

A network's grain that shows no lattice at its ring (``|c_k|`` and ``|c_2|`` both below
:data:`WEAK_LATTICE_STRENGTH` of ``c_0``) is left out (:func:`lattice_shown`): a patch of noise that
passed the ring-contrast mask, or a region whose parts are crystals of several orientations that the
network's boundary map did not separate (their spots cancel in ``c_k``).

The angle is given in the product's convention (docs/design.md §1.2): the direction of the first
real-space basis vector, modulo ``360/k``. For square lattices and fringes that is the fringe normal; a
hexagonal lattice's basis vectors lie 30° from its fringe normals.

Which grains show one set of fringes: the same sum at ``k = 2``. A square or hexagonal lattice's 4 or 6
spots cancel in ``c_2`` (its 2-fold harmonic is zero by symmetry), one set of fringes puts all its
power there: ``|c_2| / c_0`` is near 0 for a 2D lattice and near 1 for fringes, and ``arg(c_2) / 2`` is
the fringes' plane normal modulo 180° (which a square lattice's ``c_4`` gives only modulo 90°). The
grain table reports it as ``fringes_angle`` where ``|c_2| / c_0`` is at least
:data:`FRINGES_MIN_STRENGTH`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit
from scipy import fft, ndimage

from micro_sym.classical._distance import _depth, depth_inside

#: ``|c_k| / c_0`` from which a grain's angle is reported (below it the ring is mostly noise: with no
#: lattice the ratio is about ``1/sqrt(number of independent frequencies on the ring)``).
MIN_STRENGTH = 0.3
#: ``|c_2| / c_0`` from which a grain counts as one set of fringes: one pair of spots on the ring has at
#: least 3 times the power of all others (a 2D lattice's pairs are about equal, giving about 0).
FRINGES_MIN_STRENGTH = 0.5
#: Width of the taper inside a grain's outline, in lattice periods.
TAPER_PERIODS = 2.0
#: How far inside a grain's outline its taper starts, in lattice periods: the outline of a network's grain
#: lies in the boundary band, where the neighbour's lattice shows too.
INSET_PERIODS = 0.0
#: Radial sigma of the ring weight, as a fraction of the ring frequency.
RING_WIDTH = 0.1
#: Grains with fewer pixels than this many lattice cells get no angle.
MIN_CELLS = 4
#: A network's grain is kept only where ``max(|c_k|, |c_2|) / c_0`` reaches this (:func:`lattice_shown`;
#: chosen by ``bench/studies/weak_lattice_grains.py``).
WEAK_LATTICE_STRENGTH = 0.3
#: Largest crop side (px) measured per grain: a larger grain is measured in this window around its
#: centre (enough periods for a fraction of a degree; an FFT of the whole grain would cost more).
MAX_WINDOW = 512

_K = {"fringes": 2, "square": 4, "hexagonal": 6}


def lattice_order(lattice: str) -> int:
    """``k`` of a lattice family (``"square"`` 4, ``"hexagonal"`` 6, ``"fringes"`` 2)."""
    try:
        return _K[lattice]
    except KeyError:
        raise ValueError(f"unknown lattice {lattice!r}: expected one of {', '.join(_K)}") from None


def ring_sums(image, labels, *, ring_frequency: float, k: int, ids=None) -> dict:
    """Per-grain spectral sums over one 2D region: ``{"ids", "ck", "c2" (complex), "c0"}``.

    Parameters
    ----------
    image : (H, W) array
        Intensities (any real dtype; non-finite pixels count as the grain's mean).
    labels : (H, W) integer array
        Grain ids, 0 = none. Every id present is measured (or only ``ids``).
    ring_frequency : float
        The lattice's first ring, cycles/px (:func:`micro_sym.classical.ring_frequency`).
    k : int
        2, 4 or 6.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    extents = grain_extents(labels)
    if ids is not None:
        extents = select_extents(extents, ids)
    return grain_sums(lambda win: image[win], lambda win: labels[win], extents, ring_frequency=ring_frequency, k=k)


def grain_sums(read_image, read_labels, extents: dict, *, ring_frequency: float, k: int) -> dict:
    """:func:`ring_sums` of the grains ``extents`` (:func:`grain_extents`), each measured whole in its
    :func:`measure_window`: ``read_image(window)`` and ``read_labels(window)`` give the image and the
    grain labels there (a whole image's slices, or the block engine's reads of its input and output)."""
    period = 1.0 / float(ring_frequency)
    out_ids, cks, c2s, c0s = [], [], [], []
    for i, (g, win) in enumerate(zip(extents["ids"], grain_windows(extents))):
        if extents["count"][i] < MIN_CELLS * period * period:
            continue
        ck, c2, c0 = _grain_sums(np.asarray(read_image(win)), np.asarray(read_labels(win)), int(g), period, int(k))
        out_ids.append(int(g))
        cks.append(ck)
        c2s.append(c2)
        c0s.append(c0)
    return {"ids": np.asarray(out_ids, np.int64), "ck": np.asarray(cks, np.complex128).reshape(-1),
            "c2": np.asarray(c2s, np.complex128).reshape(-1), "c0": np.asarray(c0s, np.float64).reshape(-1)}


def grain_extents(labels, origin=(0, 0)) -> dict:
    """Each grain's extent in a region of the label map (2D or 3D) whose first pixel is at ``origin``:
    ``{"ids", "lo", "hi" (exclusive), "count", "coord_sum"}``, coordinates absolute (one column per axis).

    Coordinate sums are whole numbers, exact in float64 below 2**53 in any order of summation, so
    :func:`merge_extents` of a map's blocks gives the whole map's extents bit for bit.
    """
    labels = np.asarray(labels)
    nd = labels.ndim
    flat = labels.ravel().astype(np.int64, copy=False)
    count = np.bincount(flat) if flat.size else np.zeros(1, np.int64)
    ids = np.flatnonzero(count[1:]) + 1
    if not ids.size:
        return _no_extents(nd)
    sums = [np.bincount(flat, np.broadcast_to(np.arange(n, dtype=np.float64).reshape([-1 if a == axis else 1 for a in range(nd)]),
                                              labels.shape).ravel())[ids] for axis, n in enumerate(labels.shape)]
    boxes = ndimage.find_objects(flat.reshape(labels.shape))
    origin = np.asarray(origin, np.int64)
    lo = np.array([[boxes[g - 1][a].start for a in range(nd)] for g in ids], np.int64) + origin
    hi = np.array([[boxes[g - 1][a].stop for a in range(nd)] for g in ids], np.int64) + origin
    count = count[ids].astype(np.int64)
    # Whole numbers: the sums of local coordinates plus the origin's share stay exact.
    coord_sum = np.stack(sums, axis=1) + origin.astype(np.float64) * count[:, None]
    return {"ids": ids.astype(np.int64), "lo": lo, "hi": hi, "count": count, "coord_sum": coord_sum}


def merge_extents(parts) -> dict:
    """The extents of grains cut into parts: :func:`grain_extents` of each part, combined by grain id."""
    parts = [p for p in parts if len(p["ids"])]
    if not parts:
        return _no_extents()
    cat = {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in ("ids", "lo", "hi", "count", "coord_sum")}
    ids, index = np.unique(cat["ids"], return_inverse=True)
    n, nd = ids.size, cat["lo"].shape[1]
    lo = np.full((n, nd), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n, nd), -1, np.int64)
    np.minimum.at(lo, index, cat["lo"])
    np.maximum.at(hi, index, cat["hi"])
    count = np.bincount(index, cat["count"], minlength=n).astype(np.int64)
    coord_sum = np.stack([np.bincount(index, cat["coord_sum"][:, a], minlength=n) for a in range(nd)], axis=1)
    return {"ids": ids.astype(np.int64), "lo": lo, "hi": hi, "count": count, "coord_sum": coord_sum}


def select_extents(extents: dict, ids) -> dict:
    """The rows of ``extents`` for those of the grains ``ids`` that it holds, in the order of ``ids``."""
    row_of = {int(g): i for i, g in enumerate(extents["ids"])}
    rows = np.asarray([row_of[int(g)] for g in np.asarray(ids).reshape(-1) if int(g) in row_of], np.int64)
    return {key: np.asarray(values)[rows] for key, values in extents.items()}


def _no_extents(nd: int = 2) -> dict:
    return {"ids": np.zeros(0, np.int64), "lo": np.zeros((0, nd), np.int64), "hi": np.zeros((0, nd), np.int64),
            "count": np.zeros(0, np.int64), "coord_sum": np.zeros((0, nd), np.float64)}


def measure_window(lo, hi, centre, size: int = MAX_WINDOW) -> tuple:
    """The region a grain is measured in: its bounding box ``[lo, hi)``, cut to at most ``size`` pixels
    per side around ``centre`` (its centre of mass, absolute coordinates)."""
    cut = []
    for a, b, c in zip(lo, hi, centre):
        a, b = int(a), int(b)
        if b - a <= size:
            cut.append(slice(a, b))
            continue
        start = int(min(max(round(float(c)) - size // 2, a), b - size))
        cut.append(slice(start, start + size))
    return tuple(cut)


def grain_windows(extents: dict) -> list[tuple]:
    """:func:`measure_window` of every grain of ``extents`` (:func:`grain_extents`), in its order."""
    return [measure_window(lo, hi, total / n)
            for lo, hi, total, n in zip(extents["lo"], extents["hi"], extents["coord_sum"], extents["count"])]


def lattice_shown(sums: dict, *, min_strength: float | None = None) -> np.ndarray:
    """Which grains of :func:`ring_sums`-style ``sums`` show a lattice at their ring: ``|c_k|`` or
    ``|c_2|`` (one set of fringes) at least ``min_strength`` (default :data:`WEAK_LATTICE_STRENGTH`) of ``c_0``."""
    min_strength = WEAK_LATTICE_STRENGTH if min_strength is None else float(min_strength)
    c0 = np.asarray(sums["c0"], np.float64)
    shown = np.maximum(np.abs(np.asarray(sums["ck"])), np.abs(np.asarray(sums["c2"])))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c0 > 0) & (shown >= min_strength * c0)


def lattice_angles(ck, c0, k: int, lattice: str, *, min_strength: float = MIN_STRENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``(angle_deg, strength)`` from summed :func:`ring_sums`; angle NaN below ``min_strength``."""
    ck = np.asarray(ck, np.complex128)
    c0 = np.asarray(c0, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        strength = np.where(c0 > 0, np.abs(ck) / c0, 0.0)
    normal = np.degrees(np.angle(ck)) / k
    offset = 30.0 if lattice == "hexagonal" else 0.0  # basis vectors 30° from a hexagonal lattice's normals
    angle = np.mod(normal - offset, 360.0 / k)
    return np.where(strength >= min_strength, angle, np.nan), strength


def fringes_angles(c2, c0) -> tuple[np.ndarray, np.ndarray]:
    """``(angle_deg, strength)`` of one set of fringes from summed :func:`ring_sums`: the plane normal in
    ``[0, 180)``, NaN where ``|c_2| / c_0`` is below :data:`FRINGES_MIN_STRENGTH` (a 2D lattice or noise)."""
    return lattice_angles(c2, c0, 2, "fringes", min_strength=FRINGES_MIN_STRENGTH)


def grain_lattice_angles(image, labels, *, period: float, lattice: str, ids=None) -> dict:
    """Each grain's measured lattice angle in one call (a whole image): ``{"ids", "angle_deg", "strength",
    "fringes_angle_deg", "fringes_strength"}`` (the last two: :func:`fringes_angles`).

    ``period``: the lattice constant in px, in ``lattice``'s convention (:func:`measure_lattice`'s ``period``).
    ``ids``: the grains to report, in this order (default: those large enough to measure); a grain too
    small to measure gets angle NaN and strength 0.
    """
    from micro_sym.classical.filter_bank import ring_frequency

    k = lattice_order(lattice)
    sums = ring_sums(image, labels, ring_frequency=ring_frequency(period, "hexagonal" if k == 6 else "square"), k=k,
                     ids=ids)
    angle, strength = lattice_angles(sums["ck"], sums["c0"], k, lattice)
    fringes, fringes_strength = fringes_angles(sums["c2"], sums["c0"])
    measured = {"angle_deg": angle, "strength": strength, "fringes_angle_deg": fringes,
                "fringes_strength": fringes_strength}
    if ids is None:
        return {"ids": sums["ids"], **measured}
    # ring_sums keeps the order of ids, leaving out those too small to measure: NaN angle, 0 strength.
    ids = np.asarray(ids, np.int64)
    found = np.isin(ids, sums["ids"])
    out = {"ids": ids}
    for key, values in measured.items():
        out[key] = np.full(len(ids), np.nan) if key.endswith("_deg") else np.zeros(len(ids))
        out[key][found] = values
    return out


def grain_table_columns(image, labels, *, period: float, lattice: str, ids) -> dict:
    """The grain table's ``lattice_angle``, ``lattice_strength``, ``fringes_angle`` and ``fringes_strength``
    for the grains ``ids`` (in this order) of a whole image: :func:`grain_lattice_angles` under the
    table's column names."""
    m = grain_lattice_angles(image, labels, period=period, lattice=lattice, ids=ids)
    return {"lattice_angle": m["angle_deg"], "lattice_strength": m["strength"],
            "fringes_angle": m["fringes_angle_deg"], "fringes_strength": m["fringes_strength"]}


def grain_columns(sums: dict, n_grains: int, setting: dict) -> dict:
    """The grain table's ``lattice_angle``, ``lattice_strength``, ``fringes_angle`` and ``fringes_strength``
    (rows = grains 1..n_grains) from :func:`grain_sums` of the final grains; a grain it does not hold
    (too small to measure) gets angle NaN and strength 0.

    ``setting``: ``{"k", "lattice", ...}`` (:func:`micro_sym.inference.lattice_mask.grain_lattice`).
    """
    totals = {key: np.zeros(n_grains + 1, np.float64 if key == "c0" else np.complex128) for key in ("ck", "c2", "c0")}
    ids = np.asarray(sums["ids"], np.int64)
    for key, total in totals.items():
        total[ids] = np.asarray(sums[key], total.dtype)
    angle, strength = lattice_angles(totals["ck"][1:], totals["c0"][1:], setting["k"], setting["lattice"])
    fringes, fringes_strength = fringes_angles(totals["c2"][1:], totals["c0"][1:])
    return {"lattice_angle": angle, "lattice_strength": strength, "fringes_angle": fringes,
            "fringes_strength": fringes_strength}


def window(box, mask, size: int):
    """A grain's bounding box ``box`` (and its ``mask`` there) cut to at most ``size`` points per side,
    around the grain's centre (2D and 3D grain measurements: enough periods for the angle, an FFT of a
    whole large grain would cost more)."""
    if max(mask.shape) <= size:
        return box, mask
    centre = ndimage.center_of_mass(mask)
    cut = []
    for c, n in zip(centre, mask.shape):
        lo = int(min(max(round(c) - size // 2, 0), max(n - size, 0)))
        cut.append(slice(lo, min(lo + size, n)))
    cut = tuple(cut)
    return tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, cut)), mask[cut]


def tapered(crop, finite, period: float) -> np.ndarray:
    """A grain's values for its spectrum (float64; a 3D grain's, :mod:`.grain_orientation3d`; a 2D grain's
    come from :func:`_grain_values`, the same taper): the mean over its points ``finite`` removed, 0
    outside them, and tapered as sin² over :data:`TAPER_PERIODS` periods inside its outline, so that
    the outline's own spectrum does not leak onto the lattice ring."""
    values = np.where(finite, crop, 0.0).astype(np.float64, order="C")  # C order: reshape(-1) below is a view
    finite = np.ascontiguousarray(finite, bool)
    depth = depth_inside(finite)
    _taper(values.reshape(-1), finite.reshape(-1), depth.reshape(-1), 0.0, TAPER_PERIODS * period)
    return values


@njit(cache=True, nogil=True)
def _taper(values, finite, depth, inset, width):
    """A grain's taper in place on flat arrays, in the values' precision (the mean summed in float64):
    ``values = (values - mean) · sin²(π/2 · clip((depth - inset') / width, 0, 1))`` on the grain's
    points, 0 elsewhere. ``inset' = min(inset, max(depth) / 2)``: the taper starts ``inset`` px inside
    the outline, at most half the grain's largest depth, so a thin grain keeps its middle."""
    total = 0.0
    n = 0
    deepest = 0.0
    for i in range(values.size):
        if finite[i]:
            total += values[i]
            n += 1
            deepest = max(deepest, depth[i])
    mean = values.dtype.type(total / max(n, 1))
    inset = min(inset, 0.5 * deepest)
    half_pi = values.dtype.type(0.5 * math.pi)
    for i in range(values.size):
        if not finite[i]:
            values[i] = 0.0
            continue
        value = values[i] - mean
        ramp = (depth[i] - inset) / width
        if ramp < 1.0:  # deeper points keep their value
            factor = math.sin(values.dtype.type(max(ramp, 0.0)) * half_pi)
            value *= factor * factor
        values[i] = value


@njit(cache=True, nogil=True)
def _grain_values(crop, labels, g, inset, width):
    """A 2D grain's values for its spectrum, as :func:`tapered` makes a 3D grain's but in float32: the
    finite pixels of grain ``g`` (``labels == g``) in ``crop``, tapered (:func:`_taper`), in one compiled
    call that holds no GIL (the engine's workers measure grains side by side); ``(values, number of pixels)``."""
    h, w = crop.shape
    finite = np.zeros((1, h, w), np.bool_)
    values = np.zeros((h, w), np.float32)
    n = 0
    for i in range(h):
        for j in range(w):
            value = np.float64(crop[i, j])
            if labels[i, j] == g and np.isfinite(value):
                finite[0, i, j] = True
                values[i, j] = value
                n += 1
    if n:
        depth = _depth(finite, False)
        _taper(values.reshape(h * w), finite.reshape(h * w), depth.reshape(h * w), inset, width)
    return values, n


def _grain_sums(crop, labels, g: int, period: float, k: int) -> tuple[complex, complex, float]:
    """``(c_k, c_2, c_0)`` of grain ``g``'s pixels in ``crop`` (see the module docstring)."""
    values, n = _grain_values(crop, labels, g, INSET_PERIODS * period, TAPER_PERIODS * period)
    if not n:
        return 0j, 0j, 0.0
    # Zero-padded so the ring lies at least 16 frequency bins from the centre (its k spots resolved).
    size = tuple(fft.next_fast_len(max(2 * side, math.ceil(16 * period))) for side in crop.shape)
    where, weight, bins, phase = _ring_geometry(size, round(1.0 / period, 9), k)
    phase2 = phase if k == 2 else _ring_geometry(size, round(1.0 / period, 9), 2)[3]
    ck, c2, c0 = _ring_terms(fft.rfft2(values, s=size).reshape(-1), where, weight, bins, phase, phase2)
    return complex(ck), complex(c2), float(c0)


@njit(cache=True, nogil=True)
def _ring_terms(spectrum, where, weight, bins, phase, phase2):
    """``(c_k, c_2, c_0)`` from a grain's flat spectrum at its ring's frequencies (:func:`_ring_geometry`):
    the power there less its radial mean (bins one frequency step wide: the isotropic part), weighted."""
    power = np.empty(where.size)
    nbins = bins.max() + 1 if where.size else 1
    total = np.zeros(nbins)
    count = np.zeros(nbins)
    for i in range(where.size):
        s = spectrum[where[i]]
        power[i] = np.float64(s.real) ** 2 + np.float64(s.imag) ** 2
        total[bins[i]] += power[i]
        count[bins[i]] += 1.0
    ck = 0j
    c2 = 0j
    c0 = 0.0
    for i in range(where.size):
        excess = (power[i] - total[bins[i]] / max(count[bins[i]], 1.0)) * weight[i]
        ck += excess * phase[i]
        c2 += excess * phase2[i]
        c0 += power[i] * weight[i]
    return ck, c2, c0


@functools.lru_cache(maxsize=256)
def _ring_geometry(size: tuple, f0: float, k: int):
    """For an rfft2 of ``size``: the flat indices of the frequencies near the ring at ``f0``, their ring
    weights, radial bins (one frequency step wide, from 0) and ``exp(i k φ)``. The grains of one image
    share some dozens of padded sizes (a block of a thousand pixels square holds about 70), so this is
    computed once per size and image, not per grain; only the ring's frequencies are kept, so an
    entry is small."""
    fy = fft.fftfreq(size[0])[:, None]
    fx = fft.rfftfreq(size[1])[None, :]
    radius = np.hypot(fy, fx)
    weight = np.exp(-0.5 * ((radius - f0) / (RING_WIDTH * f0)) ** 2)
    weight[:, 0] *= 0.5  # the rfft half-plane holds both mates of the kx = 0 column
    where = np.flatnonzero(weight > 1e-3)
    bins = (radius.ravel()[where] * min(size)).astype(np.int64)
    phi = np.arctan2(-fy, fx)  # rows grow downwards: y = -row
    phase = np.broadcast_to(np.exp(1j * k * phi), radius.shape).ravel()[where]
    return where, weight.ravel()[where], bins - bins.min(), phase
