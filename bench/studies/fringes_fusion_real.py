"""Both networks' grains in one map on the real Au micrograph (issue 26; no product change).

Usage::

    python bench/studies/fringes_fusion_real.py [--out FILE]

The map of ``bench/studies/fringes_fusion.py`` (fringes-2d's grains plus each robust-2d grain lying
mostly where fringes-2d has none) on ``example_Au_nanoparticle``, scored against the project's
annotation by ``bench/bench_real_micrographs.py``'s own scoring: grains of at least (2 periods)²
against the annotated 6-9, the annotated vacuum left unassigned, which high-confidence particles share
a grain, and the annotated grain-grain line's distance to the nearest change of label. Angles are not
scored (the map mixes grains modulo 180° and modulo 90°). Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies
import bench_real_micrographs as real  # noqa: E402
from _common import RESULTS, write_json  # noqa: E402
from fringes_fusion import fused  # noqa: E402

IMAGE = "example_Au_nanoparticle"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS / "fringes_fusion_real.json"))
    args = ap.parse_args()
    ann = json.loads((real.ANNOTATIONS / f"{IMAGE}.json").read_text())
    image = real.DATA / ann["image"]
    result = {"what": __doc__.split("\n\n")[0], "command": "python bench/studies/fringes_fusion_real.py " + " ".join(sys.argv[1:]),
              "image": ann["image"], "maps": {}}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for model in ("robust-2d", "fringes-2d"):
            run = real.run_segment(image, Path(tmp) / model, real.cli_args(f"model:{model}", "fringes"))
            if run["rc"]:
                raise SystemExit(f"{model}: {run.get('error')}")
            outputs[model] = real.read_outputs(Path(tmp) / model, image.stem)
        outputs["both"] = dict(outputs["robust-2d"], labels=fused(outputs["fringes-2d"]["labels"],
                                                                  outputs["robust-2d"]["labels"]))
        for name, o in outputs.items():
            s = real.score(ann, o)
            keep = {"grains": s["grains"], "vacuum": s["vacuum"], "merged_high_confidence": s["merged_high_confidence"],
                    "boundary_to_label_change_px": (s["boundaries"] or {}).get("median_dist_label_change_px"),
                    "boundary_to_label_change_periods": (s["boundaries"] or {}).get("median_dist_label_change_periods")}
            result["maps"][name] = keep
            print(f"{name}: {keep['grains']['n_labels_ge_min_area']} grains (annotated {ann['expected_grains']}-"
                  f"{ann.get('expected_grains_max', ann['expected_grains'])}), vacuum unassigned "
                  f"{keep['vacuum']['unassigned_fraction']:.2f}, particles sharing a grain {keep['merged_high_confidence']}, "
                  f"boundary {keep['boundary_to_label_change_px']} px = {keep['boundary_to_label_change_periods']} periods")
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
