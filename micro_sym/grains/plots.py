"""PNG plots of grains (matplotlib, Agg backend, no display needed).

Each function takes arrays (a 2D map, or one 3D slice chosen by the caller) and writes one PNG.
Orientation colours: cyclic ``twilight`` colormap over ``[0, 360/k)`` for 2D angles, with a colour
wheel showing the k-fold period; IPF colouring (sample direction, default Z) for cubic quaternions,
with the standard [001]-[101]-[111] triangle as key (colours shared with napari: :mod:`micro_sym.grains.colours`),
and for hexagonal (622 / Laue 6/mmm) quaternions with the [0001]-[2-1-10]-[10-10] sector as key
(:func:`ipf_colour_hexagonal`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micro_sym import orientation as ori
from micro_sym.grains.boundaries import find_boundaries
from micro_sym.grains.colours import ANGLE_COLORMAP, IPF_KEY_EXTENT, angle_fraction, ipf_key, ipf_key_corners
from micro_sym.grains.reconstruct import orientation_kind


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _extent(shape, pixel_size, unit):
    if pixel_size is None:
        return None, "px"
    py, px = pixel_size[-2], pixel_size[-1]
    return (0, shape[1] * px, shape[0] * py, 0), unit or ""


def plot_size_histogram(path, table: dict, unit: str = "px"):
    """Histogram of equivalent circle/sphere diameters (number-weighted) with the median marked."""
    plt = _plt()
    col = "ecd" if "ecd" in table else "esd"
    d = np.asarray(table[col], float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if len(d):
        ax.hist(d, bins=min(50, max(5, int(np.sqrt(len(d))))), color="#4477aa", edgecolor="white")
        ax.axvline(np.median(d), color="k", ls="--", lw=1, label=f"median {np.median(d):.3g} {unit}")
        ax.legend(frameon=False)
    ax.set_xlabel(f"equivalent {'circle' if col == 'ecd' else 'sphere'} diameter ({unit})")
    ax.set_ylabel("number of grains")
    ax.set_title(f"Grain size distribution (N = {len(d)})")
    return _save(fig, path)


def plot_misorientation_histogram(path, summary: dict):
    """Boundary misorientation distribution (length-weighted) from :func:`map_summary`."""
    plt = _plt()
    b = summary.get("boundaries") or {}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    h = b.get("histogram")
    if h and sum(h["counts"]):
        counts = np.asarray(h["counts"], float)
        edges = np.asarray(h["edges"])
        ax.bar(edges[:-1], counts / counts.sum(), width=np.diff(edges), align="edge", color="#aa3377")
        ax.axvline(15, color="k", ls=":", lw=1)
        txt = f"LAGB {b['low_angle_fraction']:.2f} / HAGB {b['high_angle_fraction']:.2f}"
        if b.get("sigma3_fraction") is not None:
            txt += f"\nΣ3 {b['sigma3_fraction']:.2f}"
        ax.text(0.02, 0.97, txt, transform=ax.transAxes, va="top")
    ax.set_xlabel("boundary misorientation (°)")
    ax.set_ylabel("fraction of boundary length")
    ax.set_title("Boundary misorientation distribution")
    return _save(fig, path)


def orientation_rgb(orientation, symmetry=None, direction=(0.0, 0.0, 1.0)):
    """RGB image ``(y, x, 3)`` of a 2D orientation map (cyclic for angles, IPF for quaternions)."""
    orient = np.asarray(orientation)
    kind = orientation_kind(orient.shape, symmetry)
    if kind.kind == "angle":
        plt = _plt()
        period = 360.0 / kind.k
        rgb = plt.get_cmap(ANGLE_COLORMAP)(angle_fraction(orient, period))[..., :3]
        rgb[~np.isfinite(orient)] = 1.0
        return rgb
    q = np.moveaxis(orient, 0, -1)
    if kind.symmetry == "hexagonal":
        return ipf_colour_hexagonal(q, direction)
    if kind.symmetry != "cubic":
        raise ValueError(f"IPF colouring is implemented for cubic and hexagonal symmetry, not {kind.symmetry}")
    return ori.ipf_colour_cubic(q, direction)


#: ``(x, y)`` extent of the hexagonal IPF key on the stereographic projection plane (the 30° sector).
HEX_IPF_KEY_EXTENT = (1.0, 0.5)


def ipf_colour_hexagonal(q, direction=(0.0, 0.0, 1.0)):
    """Inverse-pole-figure RGB colours (``(..., 3)`` in [0, 1]) for hexagonal (622) orientations.

    Crystal frame as :func:`micro_sym.orientation.hexagonal_symmetry_quats`: z ∥ c, x ∥ a1. The sample
    ``direction`` is expressed in the crystal frame (``q* v q``) and folded into the Laue 6/mmm
    fundamental sector (``|z|``, azimuth mod 60° mirrored into [0°, 30°]), the triangle [0001]-[2-1-10]-[10-10].
    Colours as the cubic key: red = [0001], green = [2-1-10] (azimuth 0°), blue = [10-10] (azimuth 30°),
    by the barycentric-like weights of the direction on those three corner vectors, each colour scaled to
    full brightness, with the same gamma. NaN quaternions give white.
    """
    q = np.asarray(q, dtype=np.float64)
    v = ori.quat_rotate(ori.quat_conjugate(q), np.broadcast_to(np.asarray(direction, float), q.shape[:-1] + (3,)))
    return _hex_ipf_colour_from_crystal_direction(v)


def _hex_ipf_colour_from_crystal_direction(v):
    """RGB of crystal directions ``(..., 3)`` in the hexagonal sector key (see :func:`ipf_colour_hexagonal`)."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    z = np.abs(v[..., 2])
    rho = np.hypot(v[..., 0], v[..., 1])
    phi = np.mod(np.arctan2(v[..., 1], v[..., 0]), np.pi / 3)
    phi = np.minimum(phi, np.pi / 3 - phi)  # mirror: [0°, 30°]
    x, y = rho * np.cos(phi), rho * np.sin(phi)
    # v = z·[0001] + g·(1, 0, 0) + b·(cos 30°, sin 30°, 0): all three weights >= 0 inside the sector.
    rgb = np.stack([z, x - np.sqrt(3.0) * y, 2.0 * y], axis=-1)
    rgb = rgb / np.max(rgb, axis=-1, keepdims=True)
    rgb = np.clip(rgb, 0, 1) ** 0.5
    return np.where(np.isnan(rgb), 1.0, rgb)


def plot_orientation_map(path, orientation, *, symmetry=None, pixel_size=None, unit=None, labels=None,
                         direction=(0.0, 0.0, 1.0)):
    """Orientation map with its colour key (and grain boundaries in black when ``labels`` given)."""
    plt = _plt()
    orient = np.asarray(orientation)
    kind = orientation_kind(orient.shape, symmetry)
    rgb = orientation_rgb(orient, symmetry, direction)
    if labels is not None:
        rgb = np.where(find_boundaries(labels, mode="one_sided")[..., None], 0.0, rgb)
    extent, u = _extent(rgb.shape[:2], pixel_size, unit)
    fig = plt.figure(figsize=(8, 4.8))
    ax = fig.add_axes([0.05, 0.1, 0.62, 0.82])
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    ax.set_xlabel(f"x ({u})")
    ax.set_ylabel(f"y ({u})")
    key = fig.add_axes([0.72, 0.35, 0.25, 0.4], projection="polar" if kind.kind == "angle" else None)
    if kind.kind == "angle":
        _angle_key(key, kind.k)
        ax.set_title(f"In-plane orientation ({kind.symmetry}, period {360 / kind.k:g}°)")
    elif kind.symmetry == "hexagonal":
        _hex_ipf_key(key)
        ax.set_title("IPF-" + "XYZ"[int(np.argmax(np.abs(direction)))] + " orientation map (hexagonal)")
    else:
        _ipf_key(key)
        ax.set_title("IPF-" + "XYZ"[int(np.argmax(np.abs(direction)))] + " orientation map (cubic)")
    return _save(fig, path)


def _angle_key(ax, k):
    """Colour wheel: the angle θ drawn at its own direction, coloured by θ mod 360/k."""
    plt = _plt()
    period = 360.0 / k
    th = np.linspace(0, 2 * np.pi, 361)
    r = np.linspace(0.5, 1.0, 2)
    T, R = np.meshgrid(th, r)
    ax.pcolormesh(T, R, angle_fraction(np.rad2deg(T), period), cmap=plt.get_cmap(ANGLE_COLORMAP), vmin=0, vmax=1,
                  shading="auto")
    ax.set_yticks([])
    ax.set_xticks(np.deg2rad(np.arange(0, 360, period / 2 if k <= 4 else period)))
    ax.set_title(f"θ (°, mod {period:g})", fontsize=9)


def _ipf_key(ax, n: int = 160):
    """Standard cubic triangle [001]-[101]-[111] in stereographic projection, coloured like the map."""
    xmax, ymax = IPF_KEY_EXTENT
    ax.imshow(ipf_key(n, origin="lower", dtype=np.float64), origin="lower", extent=(0, xmax, 0, ymax))
    for label, px, py in ipf_key_corners():
        ax.annotate(label, (px, py), textcoords="offset points", xytext=(-6, -12 if label != "111" else 4), fontsize=9)
    ax.set_axis_off()
    ax.set_title("IPF key (cubic)", fontsize=9)


def _hex_ipf_key(ax, n: int = 160):
    """Hexagonal sector [0001]-[2-1-10]-[10-10] in stereographic projection, coloured like the map."""
    xmax, ymax = HEX_IPF_KEY_EXTENT
    X, Y = np.meshgrid(np.linspace(0, xmax, 2 * n), np.linspace(0, ymax, n))
    r2 = X**2 + Y**2
    v = np.stack([2 * X, 2 * Y, 1 - r2], -1) / (1 + r2)[..., None]  # inverse stereographic projection
    inside = (r2 <= 1.0) & (Y <= X * np.tan(np.pi / 6))
    rgba = np.concatenate([_hex_ipf_colour_from_crystal_direction(v), inside[..., None]], -1)
    ax.imshow(rgba, origin="lower", extent=(0, xmax, 0, ymax))
    for label, (px, py), off in (("0001", (0.0, 0.0), (-6, -12)), ("2-1-10", (1.0, 0.0), (-18, -12)),
                                 ("10-10", (np.cos(np.pi / 6), np.sin(np.pi / 6)), (4, -2))):
        ax.annotate(label, (px, py), textcoords="offset points", xytext=off, fontsize=9)
    ax.set_axis_off()
    ax.set_title("IPF key (hexagonal)", fontsize=9)


def plot_grain_map(path, labels, *, pixel_size=None, unit=None, seed: int = 0, n_total: int | None = None,
                   slice_index: int | None = None):
    """Grains in random colours with boundaries (and unassigned points) in black.

    The title counts the grains present in ``labels`` (ids need not be consecutive). For a plane of a
    volume pass ``slice_index`` (its z) and ``n_total`` (grains in the whole volume): the title then
    reads "slice z=…: N grains shown of M".
    """
    plt = _plt()
    lab = np.asarray(labels)
    n = int(lab.max())
    rng = np.random.default_rng(seed)
    colours = np.vstack([[0, 0, 0], 0.25 + 0.75 * rng.random((n, 3))])
    rgb = colours[lab]
    rgb[find_boundaries(lab, mode="one_sided")] = 0.0
    extent, u = _extent(lab.shape, pixel_size, unit)
    fig, ax = plt.subplots(figsize=(6, 6 * lab.shape[0] / max(lab.shape[1], 1) + 0.6))
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    ax.set_xlabel(f"x ({u})")
    ax.set_ylabel(f"y ({u})")
    shown = int(np.count_nonzero(np.unique(lab)))  # the highest id over-counts a slice or a sparse labelling
    if slice_index is not None:
        of = f" of {int(n_total)}" if n_total is not None else ""
        ax.set_title(f"slice z={int(slice_index)}: {shown} grains shown{of}")
    else:
        ax.set_title(f"{shown if n_total is None else int(n_total)} grains")
    return _save(fig, path)
