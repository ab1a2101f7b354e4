"""Study: five variants of the 2D seeded grain rule, each aimed at a cause of missed grains.

    python bench/studies/study_grains2d_variants.py --data data/synth2d_tune data/synth2d_more16

``bench/studies/diagnose_missed_grains.py`` finds most missed true grains merged with a neighbour. Each
variant below changes one step of :func:`micro_sym.grains.seeded.seeded_grains` (product settings:
seeds 2.5 px inside the predicted boundary, pair rule at 5°, seeds merged within 12 px at 5°, seeds
under 32 px dropped, 4 flood steps) on the bundled default-2d's maps:

- ``orientation_edges``: the core also excludes points where the predicted orientation changes by
  more than ``T`` degrees between the points ``s`` px before and after (4 directions; orientation
  first averaged over 3x3 as a k-fold vector, pairs that cross a predicted boundary skipped), so a
  smooth low-angle turn the boundary head missed still separates two seeds;
- ``split_bimodal``: each final grain whose angle histogram (1° bins, smoothed) has two peaks at
  least ``sep`` apart, the smaller holding at least ``frac`` of the grain, is split by nearest peak
  (connected parts of at least 32 px become grains);
- ``fill_band``: boundary-band pixels within ``d`` px of a grain join the nearest grain (true grains
  tile the image, so the band only lowers IoU);
- ``line_of_sight``: seeds pair for merging only when the pixels between them along the axis are all
  unlabelled (no merging across a third seed, e.g. a twin band);
- ``merge_threshold``: seeds merge at ``m`` degrees instead of the pair threshold.

Each row: pooled grain F1 over the set (IoU > 0.5, every true grain counted). Tuning sets only (synth
seeds 5000 and 6000); the held-out test set is not used. Writes bench/results/grains2d_variants.json.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, pooled, predicted, write_json  # noqa: E402
from micro_sym.grains.reconstruct import (  # noqa: E402
    _shift_slices, _valid_mask, filter_small_grains, orientation_kind, reconstruct_grains)
from micro_sym.grains.regions import (  # noqa: E402
    _keys_to_pairs, _pair_keys, merge_similar_regions, near_pairs, region_orientation_sums)
from micro_sym.grains.seeded import core_mask, grow_seeds, seeded_grains  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.orientation import misorientation_2d  # noqa: E402

K = 4  # square lattice
PRODUCT = {"threshold": 5.0, "core_radius": 2.5, "reach": 12, "min_size": 32, "steps": 4, "boundary_threshold": 0.5}


def seeded(maps, *, core_exclude=None, merge_threshold=None, pairs=near_pairs) -> np.ndarray:
    """The product's seeded rule with hooks: extra core exclusions, merge threshold, pair finder."""
    p = PRODUCT
    theta, boundary = maps["orientation"], maps["boundary"]
    kind = orientation_kind(theta.shape, "square")
    bmask = boundary >= p["boundary_threshold"]
    valid = _valid_mask(theta, kind, theta.shape, boundary, p["boundary_threshold"], None)
    core = valid & core_mask(bmask if core_exclude is None else bmask | core_exclude, p["core_radius"])
    seeds = reconstruct_grains(theta, symmetry="square", threshold=p["threshold"], connectivity=1, mask=core,
                               min_size=0)
    n = int(seeds.max())
    mapping = merge_similar_regions(n, region_orientation_sums(seeds, theta, K), pairs(seeds, p["reach"]),
                                    threshold=merge_threshold or p["threshold"], k=K)
    seeds = filter_small_grains(mapping[seeds], p["min_size"], small="drop")
    return grow_seeds(theta, boundary, seeds, kind, boundary_threshold=p["boundary_threshold"], steps=p["steps"])


def _check_harness(maps) -> None:
    """The hook-free :func:`seeded` must be the product's rule, or the variants compare against nothing."""
    p = PRODUCT
    product = seeded_grains(maps["orientation"], maps["boundary"], symmetry="square", threshold=p["threshold"],
                            boundary_threshold=p["boundary_threshold"], core_radius=p["core_radius"],
                            steps=p["steps"], min_size=p["min_size"], reach=p["reach"])
    if not np.array_equal(seeded(maps), product):
        raise SystemExit("study harness: seeded() no longer reproduces micro_sym.grains.seeded.seeded_grains")


def _shifted(a, dy, dx, fill):
    """``out[p] = a[p - (dy, dx)]``, ``fill`` where that falls outside."""
    lo, hi = _shift_slices(a.shape, (dy, dx))
    out = np.full(a.shape, fill, a.dtype)
    out[hi] = a[lo]
    return out


def orientation_edges(maps, span: int, threshold: float) -> np.ndarray:
    bmask = maps["boundary"] >= PRODUCT["boundary_threshold"]
    t = np.deg2rad(maps["orientation"].astype(np.float64)) * K
    inside = (~bmask).astype(float)
    theta = np.rad2deg(np.arctan2(ndimage.uniform_filter(np.sin(t) * inside, 3),
                                  ndimage.uniform_filter(np.cos(t) * inside, 3))) / K
    edges = np.zeros(theta.shape, bool)
    for dy, dx in [(1, 0), (0, 1), (1, 1), (1, -1)]:
        crossed = bmask.copy()
        for j in range(-span, span + 1):
            crossed |= _shifted(bmask, j * dy, j * dx, True)
        d = misorientation_2d(_shifted(theta, span * dy, span * dx, np.nan), _shifted(theta, -span * dy, -span * dx, np.nan), K)
        edges |= (np.nan_to_num(d, nan=0.0) > threshold) & ~crossed
    return edges


def split_bimodal(labels, theta, sep: float, frac: float, min_part: int = 32) -> np.ndarray:
    out, nxt = labels.copy(), int(labels.max()) + 1
    for g, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        m = labels[sl] == g
        t = theta[sl][m]
        if t.size < 2 * min_part:
            continue
        hist = ndimage.gaussian_filter1d(np.histogram(np.mod(t, 90), bins=90, range=(0, 90))[0].astype(float), 1.0,
                                         mode="wrap")
        peaks = [i for i in range(90) if hist[i] >= hist[i - 1] and hist[i] > hist[(i + 1) % 90]]
        if len(peaks) < 2:
            continue
        a, b = (i + 0.5 for i in sorted(peaks, key=lambda i: -hist[i])[:2])
        if misorientation_2d(a, b, K) < sep:
            continue
        near_b = misorientation_2d(t, b, K) < misorientation_2d(t, a, K)
        if near_b.sum() < max(frac * t.size, min_part):
            continue
        part = np.zeros(m.shape, bool)
        part[m] = near_b
        cc, n = ndimage.label(part)
        sub = out[sl]
        for j, size in enumerate(np.bincount(cc.ravel(), minlength=n + 1)[1:], start=1):
            if size >= min_part:
                sub[cc == j] = nxt
                nxt += 1
    return out


def fill_band(labels, max_distance: float) -> np.ndarray:
    dist, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    out = labels[tuple(idx)]
    out[dist > max_distance] = 0
    return out


def near_pairs_line_of_sight(labels, reach: int) -> np.ndarray:
    """:func:`near_pairs` restricted to pairs with only unlabelled pixels between them."""
    base = int(labels.max()) + 1
    keys = [np.zeros(0, np.int64)]
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        clear = np.ones(a[:-1].shape, bool)
        for d in range(1, min(reach, a.shape[0] - 1) + 1):
            if d > 1:
                clear = clear[:-1] & (a[d - 1:-1] == 0)
            keys.append(_pair_keys(np.where(clear, a[:-d], 0), a[d:], base))
    return _keys_to_pairs(np.unique(np.concatenate(keys)), base)


def variants():
    yield "product", {}, lambda m: seeded(m)
    for span in (2, 3):
        for t in (4.0, 6.0, 8.0):
            yield "orientation_edges", {"s": span, "T": t}, lambda m, s=span, t=t: seeded(m, core_exclude=orientation_edges(m, s, t))
    for sep in (4.0, 6.0, 8.0):
        for frac in (0.15, 0.3):
            yield "split_bimodal", {"sep": sep, "frac": frac}, lambda m, a=sep, f=frac: split_bimodal(seeded(m), m["orientation"], a, f)
    for d in (1, 3, np.inf):
        yield "fill_band", {"d": d if np.isfinite(d) else "any"}, lambda m, d=d: fill_band(seeded(m), d)
    yield "line_of_sight", {}, lambda m: seeded(m, pairs=near_pairs_line_of_sight)
    for mt in (3.0, 4.0, 4.5, 5.5):
        yield "merge_threshold", {"m": mt}, lambda m, mt=mt: seeded(m, merge_threshold=mt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=RESULTS / "grains2d_variants.json")
    args = ap.parse_args()
    model = load_model(args.model, export=True)
    rows = []
    for root in args.data:
        cache = predicted(model, root)
        _check_harness(cache[0][1])
        for name, params, rule in variants():
            rows.append({"data": str(root), "variant": name, **params, **pooled(cache, rule)})
            print(rows[-1], flush=True)
    write_json(args.out, {"model": args.model, "product": PRODUCT, "rows": rows}, indent=1, default=str)


if __name__ == "__main__":
    main()
