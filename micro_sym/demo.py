"""`make demo`: segment the bundled sample micrographs with the default model and the classical
method, score both against the exact ground truth, and write outputs plus a PNG figure; then run the
batch engine as `micro-sym segment` does by default (`--method auto`) over all sample micrographs,
and over the sample tomography volume (which runs the bundled default-3d)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "micrographs"
VOLUMES = SAMPLES.parent / "volume"


def _plain(o):
    return o.tolist() if hasattr(o, "tolist") else str(o)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="demo_output")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from micro_sym.classical import classical_segment
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.metrics import evaluate_sample
    from micro_sym.models import load_model
    from micro_sym.inference.whole_image import segment_image

    ds = LabeledDataset(SAMPLES)
    model = load_model("default-2d", export=True)
    sample = ds[0]
    net = segment_image(model, sample.image)
    classical = classical_segment(sample.image, lattice=ds.lattice)
    scores = {
        "network (default-2d)": evaluate_sample(net, sample.grains, sample.orientation, ds.k),
        "classical (Gabor)": evaluate_sample(classical, sample.grains, sample.orientation, ds.k),
    }
    (out / "demo_scores.json").write_text(json.dumps(scores, indent=2, default=_plain))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    panels = [
        (sample.image, "micrograph", "gray"),
        (sample.grains % 20, "ground-truth grains", "tab20"),
        (np.where(net["grains"] > 0, net["grains"] % 20, np.nan), "network grains", "tab20"),
        (net["orientation"], "network orientation (deg, mod 90)", "twilight"),
    ]
    for ax, (img, title, cmap) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap)
        ax.set_title(title)
        ax.axis("off")
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    fig.savefig(out / "demo_2d.png", dpi=110, bbox_inches="tight")
    for method, s in scores.items():
        print(f"{method}: {json.dumps(s, default=_plain)[:300]}")
    print(f"wrote {out / 'demo_2d.png'} and {out / 'demo_scores.json'}")

    # The batch path: streamed, resumable, method chosen per image (micro-sym segment IMAGES --out DIR).
    from micro_sym.inference import segment

    # Volumes in their own batch (and folder): without a model, an all-volume batch runs default-3d.
    batches = {"segment": sorted((SAMPLES / "images").glob("*.tif")), "segment3d": sorted((VOLUMES / "images").glob("*.tif"))}
    failed = 0
    for folder, images in batches.items():
        # A fresh run each time: the engine rightly refuses to resume outputs written by other code
        # or settings, and the demo's folders are its own (an earlier version's results would block it).
        shutil.rmtree(out / folder, ignore_errors=True)
        for r in segment(images, out / folder):
            failed += r.status == "failed"
            manifest = json.loads((out / folder / f".{r.name}.run" / "manifest.json").read_text()) if r.status != "failed" else {}
            auto = manifest.get("method", {}).get("auto", {})
            how = f"{auto['chose']} (fringe SNR {auto['fringe_snr_db']:.1f} dB)" if auto else (r.error or manifest.get("model", {}).get("name", ""))
            print(f"segment {r.input}: {r.status}, {r.n_grains} grains, {how} -> {r.zarr}")
    if failed:
        raise SystemExit(f"micro-sym demo: {failed} sample inputs failed")


if __name__ == "__main__":
    main()
