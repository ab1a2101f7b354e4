"""A figure of a generated micrograph beside its ground truth (used in the README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micro_sym.orientation.symmetry import lattice


def save_figure_2d(sample, path, *, crop: int | None = None, dpi: int = 110):
    """Save a PNG: image | grain ids with boundaries | orientation map (cyclic colours) | zoom.

    Parameters
    ----------
    sample : Synth2DSample
    path : str or Path
        Output PNG.
    crop : int, optional
        Side of the zoomed inset (default: a quarter of the image) so single columns are visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = lattice(sample.info.get("lattice", "square"))
    h, w = sample.image.shape
    crop = crop or max(32, min(h, w) // 4)
    rng = np.random.default_rng(0)
    # Random colours per grain make neighbours distinguishable; boundaries drawn black on top.
    colours = rng.uniform(0.25, 1.0, (int(sample.grains.max()) + 1, 3))
    ids = colours[sample.grains]
    ids[sample.boundary] = 0
    ori = plt.get_cmap("twilight")(sample.orientation / lat.period)[..., :3]
    ori[sample.boundary] = 0
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    lo, hi = np.percentile(sample.image, [0.5, 99.5])
    axes[0].imshow(sample.image, cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title(f"image ({sample.info.get('contrast', '')}, {sample.info.get('lattice', '')})")
    axes[0].add_patch(plt.Rectangle((0, 0), crop, crop, fill=False, ec="yellow", lw=1.2))
    axes[1].imshow(ids)
    axes[1].set_title(f"grain ids + boundary ({int(sample.grains.max())} grains, {sample.info.get('n_twins', 0)} twins)")
    im = axes[2].imshow(ori)
    axes[2].set_title(f"orientation (0..{360 // lat.k}°, cyclic)")
    axes[3].imshow(sample.image[:crop, :crop], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    axes[3].contour(sample.boundary[:crop, :crop], levels=[0.5], colors="yellow", linewidths=0.6)
    axes[3].set_title(f"zoom {crop}x{crop} px, boundary in yellow")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    sm = plt.cm.ScalarMappable(cmap="twilight", norm=plt.Normalize(0, lat.period))
    fig.colorbar(sm, ax=axes[2], fraction=0.046, label="degrees")
    del im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_figure_3d(sample, path, *, dpi: int = 110):
    """Save a PNG of a volume: central xy and xz slices of the reconstruction, grain ids and the
    noise-free lattice, so the missing-wedge elongation along z is visible next to the ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z, y, x = sample.volume.shape
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.25, 1.0, (int(sample.grains.max()) + 1, 3))
    panels = [
        (sample.volume[z // 2], "gray", f"volume, xy slice z={z // 2}"),
        (sample.volume[:, y // 2], "gray", f"volume, xz slice y={y // 2} (z down: beam axis)"),
        (sample.clean[z // 2], "gray", "noise-free lattice, xy"),
        (np.where(sample.boundary[z // 2][..., None], 0, colours[sample.grains[z // 2]]), None, f"grain ids, xy ({int(sample.grains.max())} grains)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    for ax, (img, cmap, title) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
