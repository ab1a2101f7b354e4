"""Measure lattice angles and periods of annotated grains by FFT of crops: plain numpy, independent of micro_sym.

The annotation of the real micrographs (``bench/real_data/annotations/*.json``) was drawn by eye; this
script only measures, inside each hand-drawn grain polygon, the direction and period of the strongest
reciprocal-lattice peak, so the annotated angles do not come from the product's classical (Gabor filter
bank) method that the benchmark scores. micro_sym is used for nothing but reading the file
(``micro_sym.io.open_image``, the RosettaSciIO reader), which is not what is scored.

Measurement (``fft_peak``): Hann-windowed square windows of ``window`` px fully (≥ 95 %) inside the
polygon, on a half-window grid, each mean-subtracted and zero-padded 4x; their power spectra are summed (Welch), smoothed by a
3x3 box, divided by the median power of the ring at the same |k| (whitening, so the smooth low-frequency
background of intensity gradients does not win), and the strongest peak of that ratio with period in
``[pmin, pmax]`` px (default 3-60) is taken, refined by a power-weighted centroid over its 3x3 neighbourhood (in-band pixels). Reported:

- ``angle_deg``: direction of that reciprocal-lattice vector, i.e. of the fringes' normal, in degrees
  counter-clockwise from +x (the column axis) with **y pointing up on screen** (towards decreasing row):
  ``atan2(-k_row, k_col)``, modulo 180 (a peak and its Friedel mate are the same). This is the
  frame of docs/design.md §1.1 (x = column, y up).
- ``period_px``: ``1 / |k|``, the fringe spacing in pixels.
- ``snr``: peak power (3x3 smoothed) over the median power of the ring at the same |k|.
- ``second``: the strongest other peak at least 20° away in direction (for crossed lattices).

    python bench/real_data/annotate_fft.py measure ANNOTATION.json     # print per-grain measurements
    python bench/real_data/annotate_fft.py measure ANNOTATION.json --write   # and store them in the JSON
    python bench/real_data/annotate_fft.py map IMAGE OUT.png [--window 128]  # local-FFT map to look at
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "real_micrographs"


def load_image(name) -> np.ndarray:
    """The image as float64 (file name under ../shared/data/real_micrographs, or a path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from micro_sym.io import open_image

    p = Path(name)
    if not p.exists():
        p = DATA / name
    return np.asarray(open_image(p).data, dtype=np.float64)


def polygon_mask(shape, polygon) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside ``polygon`` (list of (row, col))."""
    from matplotlib.path import Path as MPath

    poly = np.asarray(polygon, float)
    r0, c0 = np.floor(poly.min(0)).astype(int)
    r1, c1 = np.ceil(poly.max(0)).astype(int) + 1
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, shape[0]), min(c1, shape[1])
    mask = np.zeros(shape, bool)
    if r1 <= r0 or c1 <= c0:
        return mask
    rr, cc = np.mgrid[r0:r1, c0:c1]
    inside = MPath(poly[:, ::-1]).contains_points(np.c_[cc.ravel(), rr.ravel()])  # path in (x, y) = (col, row)
    mask[r0:r1, c0:c1] = inside.reshape(rr.shape)
    return mask


def _windows(mask, window):
    """Top-left corners of ``window``² squares on a half-window grid that lie ≥ 95 % inside ``mask``."""
    step = max(window // 2, 1)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    out = []
    for r in range(rows.min(), rows.max() - window + 2, step):
        for c in range(cols.min(), cols.max() - window + 2, step):
            if mask[r : r + window, c : c + window].mean() >= 0.95:
                out.append((r, c))
    return out


def power_spectrum(img, corners, window, pad=4) -> np.ndarray:
    """Summed, fft-shifted power spectrum of Hann-windowed, mean-subtracted crops, zero-padded
    ``pad`` times (finer sampling of the peak position, no extra resolution)."""
    hann = np.outer(np.hanning(window), np.hanning(window))
    n = window * pad
    acc = np.zeros((n, n))
    for r, c in corners:
        crop = img[r : r + window, c : c + window]
        crop = (crop - crop.mean()) * hann
        acc += np.abs(np.fft.fftshift(np.fft.fft2(crop, s=(n, n)))) ** 2
    return acc


def _box3(a):
    p = np.pad(a, 1, mode="edge")
    return sum(p[i : i + a.shape[0], j : j + a.shape[1]] for i in range(3) for j in range(3)) / 9.0


def peaks_from_spectrum(ps, pmin=3.0, pmax=60.0, n=2, min_sep_deg=20.0, pad=4, select="whitened"):
    """Strongest ``n`` peaks (distinct by ≥ ``min_sep_deg`` mod 180) of a shifted power spectrum.

    Chosen on the whitened spectrum (3x3 box, divided by its ring median), located by the
    centroid of the background-subtracted raw power within ``pad`` padded bins (one unpadded bin),
    so the steep ring background does not pull the position outwards.
    """
    w = ps.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(w))
    krow, kcol = np.meshgrid(f, f, indexing="ij")
    kr = np.hypot(krow, kcol)
    with np.errstate(divide="ignore"):
        period = np.where(kr > 0, 1.0 / np.maximum(kr, 1e-12), np.inf)
    band = (period >= pmin) & (period <= pmax)
    sm = _box3(ps)
    # Whiten: divide by the median power of the ring at the same |k| (1 spectrum-pixel rings), so the
    # smooth low-frequency background (particle edges, thickness) does not win.
    ring = np.rint(kr * w).astype(int)
    med = np.full(ring.max() + 1, np.inf)
    for rad in np.unique(ring[band]):
        sel = (ring >= 0.8 * rad) & (ring <= 1.25 * rad) & (ring > 0)
        med[rad] = max(np.median(sm[sel]), 1e-30)
    rel = sm / med[ring]
    excess = np.clip(ps - med[ring], 0, None)
    work = np.where(band, rel if select == "whitened" else sm, -np.inf)
    dirs = np.degrees(np.arctan2(-krow, kcol)) % 180.0
    found = []
    for _ in range(4 * n):
        i = np.unravel_index(np.argmax(work), work.shape)
        if not np.isfinite(work[i]):
            break
        r, c = i
        r0, r1, c0, c1 = max(r - pad, 0), min(r + pad + 1, w), max(c - pad, 0), min(c + pad + 1, w)
        wts = excess[r0:r1, c0:c1] * band[r0:r1, c0:c1]
        if wts.sum() <= 0:
            wts = band[r0:r1, c0:c1].astype(float)
        kr_c = (wts * krow[r0:r1, c0:c1]).sum() / wts.sum()
        kc_c = (wts * kcol[r0:r1, c0:c1]).sum() / wts.sum()
        k = float(np.hypot(kr_c, kc_c))
        ang = float(np.degrees(np.arctan2(-kr_c, kc_c)) % 180.0)
        snr = float(rel[i])
        if all(abs((ang - p["angle_deg"] + 90.0) % 180.0 - 90.0) >= min_sep_deg for p in found):
            found.append({"angle_deg": round(ang, 1), "period_px": round(1.0 / k, 2), "snr": round(snr, 1)})
        # suppress this peak, its Friedel mate and every peak within min_sep_deg of that direction (harmonics too)
        d = np.abs((dirs - ang + 90.0) % 180.0 - 90.0)
        work[d < min_sep_deg] = -np.inf
        if len(found) >= n:
            break
    return found


def highpass(img, sigma):
    """``img`` minus its Gaussian blur (sigma px): removes thickness/edge gradients before the FFT."""
    from scipy import ndimage

    return img - ndimage.gaussian_filter(img, sigma)


def fft_peak(img, polygon, window=256, pmin=3.0, pmax=60.0, pad=4, n_peaks=2):
    """Strongest reciprocal-lattice peak (and the next, ≥ 20° away) inside ``polygon``; see module doc.

    ``img`` is high-passed (Gaussian sigma ``pmax / 4``) on the polygon's bounding box plus a margin;
    the window shrinks by halves (to 32 px) until at least one fits inside the polygon.
    """
    return fft_peak_in_mask(img, polygon_mask(img.shape, polygon), window, pmin, pmax, pad, n_peaks)


def fft_peak_in_mask(img, mask, window=256, pmin=3.0, pmax=60.0, pad=4, n_peaks=2):
    """:func:`fft_peak` inside a boolean ``mask`` of the image's shape instead of a polygon."""
    corners = _windows(mask, window)
    while not corners and window > 32:
        window //= 2
        corners = _windows(mask, window)
    if not corners:
        raise ValueError("polygon too small for a 32 px window")
    rows, cols = np.nonzero(mask)
    m = int(pmax)
    r0, c0 = max(rows.min() - m, 0), max(cols.min() - m, 0)
    r1, c1 = min(rows.max() + m + 1, img.shape[0]), min(cols.max() + m + 1, img.shape[1])
    hp = highpass(img[r0:r1, c0:c1].astype(np.float64), pmax / 4.0)
    ps = power_spectrum(hp, [(r - r0, c - c0) for r, c in corners], window, pad)
    pk = peaks_from_spectrum(ps, pmin, pmax, n=max(n_peaks, 2), pad=pad)
    out = dict(pk[0])
    out["second"] = pk[1] if len(pk) > 1 else None
    out["peaks"] = pk
    out["window"] = window
    out["n_windows"] = len(corners)
    return out, ps


SYMMETRY_DEG = {"fringes": 180.0, "square": 90.0, "hexagonal": 60.0}


def circular_mean_mod(angles, sym):
    """Circular mean of ``angles`` (degrees) taken modulo ``sym``, in ``[0, sym)``."""
    t = np.deg2rad(np.asarray(angles, float)) * (360.0 / sym)
    return float(np.rad2deg(np.arctan2(np.sin(t).mean(), np.cos(t).mean())) * sym / 360.0 % sym)


def measure(ann_path, write=False, png_dir=None):
    """Measure every grain of an annotation file; with ``write``, store the results in it.

    A grain with ``lattice`` null (no lattice clear to the eye) is measured for the record only
    (``fft``), its ``angle_deg`` stays null. A grain marked ``"crossed": true`` also gets
    ``second_angle_deg`` (the strongest peak ≥ 20° from the first). A hexagonal grain gets its three
    first-order directions (``peaks_deg``) and their circular mean modulo 60
    (``angle_mean_mod_sym_deg``).
    """
    ann = json.loads(Path(ann_path).read_text())
    img = load_image(ann["image"])
    pmin, pmax = ann.get("fft_period_range_px", [3.0, 60.0])
    win = int(ann.get("fft_window_px", 256))
    for g in ann["grains"]:
        lat = g.get("lattice")
        n = 3 if lat == "hexagonal" else 2
        res, ps = fft_peak(img, g["polygon"], window=win, pmin=pmin, pmax=pmax, n_peaks=n)
        sym = SYMMETRY_DEG.get(lat, 180.0)
        print(f"grain {g['id']} ({g.get('name', '')}, {lat}): angle {res['angle_deg']:6.1f}° (mod {sym:.0f}: "
              f"{res['angle_deg'] % sym:5.1f}°)  period {res['period_px']:6.2f} px  snr {res['snr']:6.1f}  "
              f"others {res['peaks'][1:]}  windows {res['n_windows']}x{res['window']}")
        if png_dir is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 5))
            ax.imshow(np.log(ps + 1e-9), cmap="magma", extent=(-0.5, 0.5, 0.5, -0.5))
            lim = 2.0 / pmin if pmin > 4 else 0.4
            ax.set_xlim(-min(lim, 0.5), min(lim, 0.5))
            ax.set_ylim(min(lim, 0.5), -min(lim, 0.5))
            ax.set_xlabel("k_col (1/px)")
            ax.set_ylabel("k_row (1/px)")
            ax.set_title(f"{Path(ann['image']).stem} grain {g['id']}: {res['angle_deg']}° {res['period_px']} px", fontsize=8)
            fig.savefig(Path(png_dir) / f"fft_{Path(ann['image']).stem}_g{g['id']}.png", dpi=80)
            plt.close(fig)
        if write:
            g["fft"] = {"strongest": res["peaks"][0], "others": res["peaks"][1:], "window_px": res["window"],
                        "n_windows": res["n_windows"]}
            if lat is None:
                g["angle_deg"] = g["angle_mod_sym_deg"] = g["period_px"] = None
                continue
            g["angle_deg"] = res["angle_deg"]
            g["angle_mod_sym_deg"] = round(res["angle_deg"] % sym, 1)
            g["period_px"] = res["period_px"]
            if g.get("crossed") and res["second"] is not None:
                g["second_angle_deg"] = res["second"]["angle_deg"]
                g["second_period_px"] = res["second"]["period_px"]
            if lat == "hexagonal":
                g["peaks_deg"] = [p["angle_deg"] for p in res["peaks"][:3]]
                g["angle_mean_mod_sym_deg"] = round(circular_mean_mod(g["peaks_deg"], sym), 1)
    if write:
        Path(ann_path).write_text(json.dumps(ann, indent=2) + "\n")


def fft_map(image, out_png, window=128, pmin=3.0, pmax=60.0):
    """Local strongest-peak map (angle colour, brightness by SNR) on a half-window grid, for looking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = highpass(load_image(image), pmax / 4.0)
    step = window // 2
    rows = list(range(0, img.shape[0] - window + 1, step))
    cols = list(range(0, img.shape[1] - window + 1, step))
    ang = np.zeros((len(rows), len(cols)))
    per = np.zeros_like(ang)
    snr = np.zeros_like(ang)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ps = power_spectrum(img, [(r, c)], window)
            p = peaks_from_spectrum(ps, pmin, pmax, n=1)[0]
            ang[i, j], per[i, j], snr[i, j] = p["angle_deg"], p["period_px"], p["snr"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    lo, hi = np.percentile(img, [1, 99])
    ext = (cols[0], cols[-1] + window, rows[-1] + window, rows[0])
    axes[0].imshow(np.clip((img - lo) / (hi - lo), 0, 1), cmap="gray")
    hsv = plt.get_cmap("hsv")(ang / 180.0)
    hsv[..., :3] *= np.clip((snr - 2) / 10, 0, 1)[..., None]
    axes[1].imshow(hsv, extent=ext)
    axes[1].set_title("angle (hsv, mod 180), dark = weak")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if snr[i, j] > 6 and (i % 2 == 0 and j % 2 == 0):
                axes[1].text(c + window / 2, r + window / 2, f"{ang[i, j]:.0f}", fontsize=5, ha="center", color="w")
    im = axes[2].imshow(per, extent=ext, cmap="viridis", vmin=pmin, vmax=pmax)
    axes[2].set_title("period px")
    plt.colorbar(im, ax=axes[2])
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return ang, per, snr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("annotation")
    m.add_argument("--write", action="store_true")
    m.add_argument("--png-dir")
    mp = sub.add_parser("map")
    mp.add_argument("image")
    mp.add_argument("out")
    mp.add_argument("--window", type=int, default=128)
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        measure(a.annotation, a.write, a.png_dir)
    else:
        fft_map(a.image, a.out, a.window)


if __name__ == "__main__":
    main()
