"""Grain tessellations: relaxed power diagrams, cell adjacency and the grain rule.

Works in any dimension on *physical* coordinates (docs/design.md §1: 2D ``(x, y)`` with y up, 3D ``(x, y, z)``),
evaluated at arbitrary sample positions, so a distorted scan samples exactly the same microstructure as
the lattice rendered on it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> seeds, w = seed_cells([0, 0], [128, 128], grain_size=32, size_spread=0.3, relax_iterations=2, rng=rng)
>>> yy, xx = np.mgrid[0:128, 0:128]
>>> cells = power_diagram(np.stack([xx.ravel(), -yy.ravel()], -1), seeds, w).reshape(128, 128)
>>> from micro_sym.grains.boundaries import find_boundaries
>>> bool(find_boundaries(cells).any())
True
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

# Two cores are shared by everyone working on this machine; the KD-tree query is the only threaded step.
WORKERS = 2


def _cell_measure(d: int, grain_size: float) -> float:
    """Area (2D) or volume (3D) of a circle/sphere of diameter ``grain_size``."""
    return math.pi * grain_size**2 / 4 if d == 2 else math.pi * grain_size**3 / 6


def power_diagram(points, seeds, weights, workers: int = WORKERS):
    """Index of the power cell containing each point: ``argmin_i |p - s_i|² - w_i``.

    Computed with a KD-tree by lifting to one extra dimension: with ``h_i = sqrt(max(w) - w_i)`` the
    Euclidean distance from ``(p, 0)`` to ``(s_i, h_i)`` is ``|p - s_i|² - w_i + max(w)``, so the nearest
    lifted seed is the power cell (an exact identity, no approximation).

    Parameters
    ----------
    points : (M, d) array
        Query positions.
    seeds : (N, d) array
    weights : (N,) array
        Power weights (squared radii); equal weights give the Voronoi diagram.

    Returns
    -------
    (M,) int64 array of seed indices.
    """
    seeds = np.asarray(seeds, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    lift = np.sqrt(np.maximum(weights.max() - weights, 0.0))
    tree = cKDTree(np.concatenate([seeds, lift[:, None]], axis=1))
    pts = np.asarray(points, dtype=np.float64)
    out = np.empty(len(pts), dtype=np.int64)
    step = 1 << 20  # bounded memory for the lifted copy of the query points
    for start in range(0, len(pts), step):
        chunk = pts[start : start + step]
        lifted = np.concatenate([chunk, np.zeros((len(chunk), 1))], axis=1)
        out[start : start + step] = tree.query(lifted, workers=workers)[1]
    return out


def power_diagram_grid(positions, seeds, weights, block: int = 8, workers: int = WORKERS):
    """:func:`power_diagram` of a whole pixel/voxel grid, querying only near cell boundaries.

    Power cells are convex, so a block of the grid whose corners all fall in one cell lies entirely
    in that cell (the block is the convex hull of its corners when positions are an affine function of
    the index). Only blocks with mixed corners are evaluated pixel by pixel; the result is identical to
    querying every pixel, at a fraction of the cost.

    Parameters
    ----------
    positions : (d, *shape) array
        Physical coordinates of every grid point; must be affine in the array index (a regular grid,
        possibly sheared). Use :func:`power_diagram` for irregular (jittered) positions.
    seeds, weights : see :func:`power_diagram`
    block : int
        Block side in pixels.

    Returns
    -------
    int64 array of ``shape`` with the seed index of each grid point.
    """
    positions = np.asarray(positions)
    shape = positions.shape[1:]
    d = len(shape)
    nodes = [np.unique(np.append(np.arange(0, n, block), n - 1)) for n in shape]
    node_pos = positions[(slice(None), *np.ix_(*nodes))].reshape(d, -1).T
    corner = power_diagram(node_pos, seeds, weights, workers).reshape([len(nd) for nd in nodes])
    # A block's label, or -1 where its 2^d corners disagree.
    blocks = corner[tuple(slice(0, -1) for _ in range(d))].copy()
    for offs in np.ndindex(*(2,) * d):
        c = corner[tuple(slice(o, o + len(nd) - 1) for o, nd in zip(offs, nodes))]
        blocks[c != blocks] = -1
    labels = blocks
    for ax, nd in enumerate(nodes):
        counts = np.diff(nd)
        counts[-1] += 1  # the last block includes the last row/column
        labels = np.repeat(labels, counts, axis=ax)
    mixed = labels < 0
    if mixed.any():
        labels[mixed] = power_diagram(positions[:, mixed].T, seeds, weights, workers)
    return labels


def seed_cells(lo, hi, grain_size: float, size_spread: float, relax_iterations: int, rng: np.random.Generator):
    """Seeds and power weights of a tessellation with a given mean cell size.

    The box is widened by one grain size on every side so cells at the image border are cut from a
    larger microstructure rather than shaped by the border. The seed count fixes the mean cell
    area/volume (``pi d²/4`` or ``pi d³/6`` for mean diameter ``d``); log-normal radii ``r_i`` enter as
    power weights ``r_i²`` and spread the sizes; a few centroidal (Lloyd) steps on a coarse grid make
    the cells equiaxed with straight-ish boundaries meeting near 120°, much like a short grain growth.

    Parameters
    ----------
    lo, hi : sequence of float
        Physical bounding box of the sampled region (any dimension).
    grain_size : float
        Mean equivalent diameter of the cells.
    size_spread : float
        Log-normal sigma of the cell radii.
    relax_iterations : int
        Lloyd steps.
    rng : numpy.random.Generator

    Returns
    -------
    seeds : (N, d) float64, weights : (N,) float64
    """
    lo = np.asarray(lo, dtype=np.float64) - grain_size
    hi = np.asarray(hi, dtype=np.float64) + grain_size
    d = len(lo)
    n = max(2, int(round(np.prod(hi - lo) / _cell_measure(d, grain_size))))
    seeds = lo + rng.random((n, d)) * (hi - lo)
    radii = grain_size / 2 * np.exp(size_spread * rng.standard_normal(n) - size_spread**2 / 2)
    weights = radii**2
    if relax_iterations:
        # ~6 samples per grain diameter is enough to locate centroids and keeps this step cheap.
        h = grain_size / 6
        axes = [np.arange(a + h / 2, b, h) for a, b in zip(lo, hi)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
        for _ in range(relax_iterations):
            idx = power_diagram(grid, seeds, weights)
            count = np.bincount(idx, minlength=n)
            keep = count > 0
            for j in range(d):
                c = np.bincount(idx, weights=grid[:, j], minlength=n)
                seeds[keep, j] = c[keep] / count[keep]
    return seeds, weights


def face_pairs(labels):
    """Unique unordered pairs ``(a, b)``, ``a < b``, of labels that touch across a pixel/voxel face.

    Returns an ``(P, 2)`` int64 array.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 1
    keys = []
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        x, y = a[:-1], a[1:]
        diff = x != y
        lo = np.minimum(x[diff], y[diff]).astype(np.int64)
        hi = np.maximum(x[diff], y[diff]).astype(np.int64)
        keys.append(lo * n + hi)  # one int64 key per pair: 1D unique is far faster than unique(axis=0)
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys // n, keys % n], -1)


def apply_grain_rule(cells, pairs, misorientation, threshold_deg: float):
    """Grain ids from cells by the docs/design.md §3 rule.

    Touching cells closer than ``threshold_deg`` are one grain (transitively, as in MTEX/DREAM.3D),
    and a grain is a *connected* region (4-/6-connectivity), so a parent cut in two by a twin band
    gives two grains.

    Parameters
    ----------
    cells : int array
        Cell index per pixel/voxel (0..N-1).
    pairs : (P, 2) int array
        Touching cell pairs, e.g. from :func:`face_pairs`.
    misorientation : (P,) float array
        Misorientation (degrees) of each pair.
    threshold_deg : float

    Returns
    -------
    uint32 array of grain ids, consecutive from 1 (no zeros).
    """
    n = int(cells.max()) + 1
    close = np.asarray(misorientation) < threshold_deg
    p = np.asarray(pairs)[close]
    graph = sparse.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    merged = comp[cells] + 1
    structure = ndimage.generate_binary_structure(cells.ndim, 1)
    grains = np.zeros(cells.shape, dtype=np.uint32)
    next_id = 0
    # Label the connected pieces of each merged region; ndimage.label on the whole map would join
    # different regions, so label the regions' own masks via find_objects windows.
    for r, sl in enumerate(ndimage.find_objects(merged), start=1):
        if sl is None:
            continue
        win = merged[sl] == r
        lab, k = ndimage.label(win, structure=structure)
        g = grains[sl]
        g[win] = lab[win] + next_id
        next_id += k
    return grains


def relabel_consecutive(labels):
    """Map the non-negative labels present to ``0..K-1`` (order preserved); returns ``(new_labels, old_ids)``."""
    present = np.bincount(labels.ravel()) > 0  # O(n), unlike np.unique's sort
    lut = np.cumsum(present) - 1
    return lut[labels], np.flatnonzero(present)


def slab_mask(points, center, normal, width: float):
    """Points within ``width / 2`` of the plane (line in 2D) through ``center`` with unit ``normal``."""
    return np.abs((points - center) @ normal) < width / 2


def random_neighbour_assignment(n_cells: int, pairs, rng, fractions):
    """Plan which cells copy a neighbour's orientation with a small extra rotation.

    Cells are visited in random order; a chosen cell takes a *neighbour that is not itself derived*,
    so chains of small rotations do not accumulate into large ones.

    Parameters
    ----------
    fractions : sequence of float
        One probability per kind of boundary (e.g. sub-grain, low-angle).

    Returns
    -------
    list of (cell, neighbour, kind) tuples.
    """
    neighbours = [[] for _ in range(n_cells)]
    for a, b in pairs:
        neighbours[a].append(b)
        neighbours[b].append(a)
    derived = np.zeros(n_cells, dtype=bool)
    source = np.zeros(n_cells, dtype=bool)
    plan = []
    cum = np.cumsum(fractions)
    for c in rng.permutation(n_cells):
        u = rng.random()
        kind = int(np.searchsorted(cum, u, side="right"))
        if kind >= len(fractions) or source[c]:
            continue
        options = [b for b in neighbours[c] if not derived[b]]
        if not options:
            continue
        nb = int(options[rng.integers(len(options))])
        plan.append((int(c), nb, kind))
        derived[c] = True
        source[nb] = True
    return plan
