"""``micro-sym grains INPUT --out DIR``: grains, statistics and plots from an orientation map.

INPUT is an EBSD map (``.cpr``/``.crc``, ``.ctf``, ``.ang``) or a segmentation output OME-Zarr
group holding ``orientation`` (2D angles in degrees, or ``(4, ...)`` quaternions) and optionally
``boundary`` (probability). Everything is written into a temporary directory next to DIR and moved
into place only when complete, so an error leaves nothing behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from micro_sym.errors import MicroSymError


def grains(
    input: Path = typer.Argument(..., help="EBSD file (.cpr/.crc, .ctf, .ang) or segmentation OME-Zarr group."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; existing files are not replaced)."),
    threshold: float = typer.Option(None, "--threshold", help="Misorientation threshold between neighbours (degrees; "
                                    "default 5, or what a segment output records)."),
    min_size: int = typer.Option(None, "--min-size", help="Minimum grain size in points (default 0, or what a segment "
                                 "output records)."),
    small: str = typer.Option(None, "--small", help="Small grains: 'merge' into a neighbour (MTEX, the default) or "
                              "'drop' (DefDAP); on a segment output it selects the plain pair rule."),
    connectivity: int = typer.Option(None, "--connectivity", help="4 or 8 (2D), 6 or 26 (3D); default 4 / 6."),
    symmetry: str = typer.Option(None, "--symmetry", help="square | hexagonal | cubic (default: from the input)."),
    boundary_threshold: float = typer.Option(None, "--boundary-threshold", help="Boundary probability that separates "
                                             "grains (default 0.5, or what a segment output records)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files of the same name."),
):
    """Reconstruct grains and write labels (OME-Zarr), a per-grain CSV with its column description, a
    per-boundary CSV (touching grain pairs: length / area, misorientation, Σ3 for cubic maps) with its
    column description, a JSON summary and PNG plots.

    On a ``micro-sym segment`` output the grains follow the rule that run recorded (the seeded rule of
    network maps, or the plain pair rule of the classical method), so the count matches the segment's;
    options that change the rule are applied and reported in one line."""
    import numpy as np

    from micro_sym.grains import orientation_kind, reconstruct_grains
    from micro_sym.grains.rules import is_seeded, pair_rule
    from micro_sym.grains import plots
    from micro_sym.grains.boundary_table import boundary_table, write_boundary_csv
    from micro_sym.grains.stats import grain_table, kam_map, map_summary, write_grain_csv, write_summary_json
    from micro_sym.io import move_into_place, scratch_folder, write_ome_zarr

    if small not in (None, "merge", "drop"):
        raise MicroSymError(f"--small: expected 'merge' or 'drop', got '{small}'")
    data = _load(input, symmetry)
    orient, sym, mask, phase, boundary = data["orientation"], data["symmetry"], data["mask"], data["phase"], data["boundary"]
    kind = orientation_kind(orient.shape, sym)
    spatial = orient.shape[1:] if kind.channel_axis else orient.shape
    nd = len(spatial)
    conn = _connectivity(connectivity, nd)
    given = {"threshold": threshold, "min_size": min_size, "small": small, "connectivity": connectivity,
             "boundary_threshold": boundary_threshold}
    rule, note = segment_rule(data.get("segment"), given, has_boundary=boundary is not None)
    # What the user left out: a segment run's recorded values, else the defaults.
    run = rule or {"threshold": 5.0, "min_size": 0, "boundary_threshold": 0.5}
    threshold = run["threshold"] if threshold is None else threshold
    min_size = run["min_size"] if min_size is None else min_size
    boundary_threshold = run["boundary_threshold"] if boundary_threshold is None else boundary_threshold
    small = small or "merge"
    if note:
        typer.echo(f"note: {note}", err=True)
    if rule is not None and rule["grain_rule"] is not None:  # the segment run's rule, applied to the whole map
        from micro_sym.grains.rules import grains_by_rule

        labels = grains_by_rule(orient, boundary, rule["grain_rule"], symmetry=sym, min_size=min_size,
                                boundary_threshold=boundary_threshold)
    else:
        labels = reconstruct_grains(
            orient, symmetry=sym, threshold=threshold, connectivity=conn, boundary=boundary,
            boundary_threshold=boundary_threshold, mask=mask, min_size=min_size, small=small, phase=phase,
        )
    if labels.max() == 0:
        raise MicroSymError(f"{input}: no grains found (every point is masked, a boundary or non-indexed)")
    ps, unit = data["pixel_size"], data["unit"]
    table = grain_table(labels, orient, symmetry=sym, pixel_size=ps, unit=unit, phase=data["phase_ids"])
    summary = map_summary(labels, orient, symmetry=sym, pixel_size=ps, unit=unit, table=table)
    summary["input"] = str(input)
    summary["parameters"] = {"threshold_deg": threshold, "min_size": min_size, "small": small,
                             "connectivity": {1: 2 * nd, 2: 3**nd - 1}[conn], "symmetry": sym,
                             "boundary_threshold": boundary_threshold if boundary is not None else None}
    if rule is not None and rule["grain_rule"] is not None:  # the seeded rule has no connectivity or small policy
        summary["parameters"].update(rule["grain_rule"], small="drop" if is_seeded(rule["grain_rule"]) else "merge",
                                     rule="segment", segment_n_grains=rule.get("n_grains"))
    kam = kam_map(orient, symmetry=sym, threshold=threshold, labels=labels)

    name = data["name"]
    out = Path(out)
    produced = [f"{name}.zarr", f"{name}_grains.csv", f"{name}_grains.json", f"{name}_summary.json",
                f"{name}_size_hist.png", f"{name}_misorientation_hist.png", f"{name}_orientation.png",
                f"{name}_grain_map.png"]
    # The boundary table needs orientations; every input of this command has them, but stay safe.
    boundaries = None
    if orient is not None:
        boundaries = boundary_table(labels, orient, symmetry=sym, pixel_size=ps, unit=unit)
        produced += [f"{name}_boundaries.csv", f"{name}_boundaries.json"]
    tmp = scratch_folder(out, produced, overwrite)
    try:
        arrays = {"grains": labels, "orientation": orient.astype(np.float32), "kam": kam}
        if boundary is not None:
            arrays["boundary"] = boundary.astype(np.float32)
        if phase is not None:
            arrays["phase"] = phase.astype(np.uint8 if phase.max() < 256 else np.int32)
        write_ome_zarr(tmp / f"{name}.zarr", arrays, pixel_size=ps, unit=unit if unit != "px" else None,
                       labels=("grains", "phase"))
        write_grain_csv(tmp / f"{name}_grains.csv", table, unit, pixel_size=ps, symmetry=sym, phases=data["phases"],
                        command="micro-sym grains",
                        grain_rule={**(run.get("grain_rule") or pair_rule(threshold)), **summary["parameters"]})
        if boundaries is not None:
            write_boundary_csv(tmp / f"{name}_boundaries.csv", boundaries, unit, pixel_size=ps, symmetry=sym,
                               command="micro-sym grains")
        write_summary_json(tmp / f"{name}_summary.json", summary, table, unit)
        plots.plot_size_histogram(tmp / f"{name}_size_hist.png", table, unit)
        plots.plot_misorientation_histogram(tmp / f"{name}_misorientation_hist.png", summary)
        # 3D: plot the middle plane.
        mid = spatial[0] // 2
        lab2 = labels if nd == 2 else labels[mid]
        or2 = orient if nd == 2 else (orient[:, mid] if kind.channel_axis else orient[mid])
        ps2 = None if ps is None else tuple(ps[-2:])
        plots.plot_orientation_map(tmp / f"{name}_orientation.png", or2, symmetry=sym, pixel_size=ps2, unit=unit,
                                   labels=lab2)
        plots.plot_grain_map(tmp / f"{name}_grain_map.png", lab2, pixel_size=ps2, unit=unit,
                             n_total=int(labels.max()), slice_index=None if nd == 2 else mid)
        # Everything exists: move into place (renames on one filesystem).
        if move_into_place(tmp, out, produced):
            tmp = None
    except MicroSymError:
        raise
    except OSError as err:
        raise MicroSymError(f"{out}: cannot write output ({err.strerror or err})") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    n = int(labels.max())
    wrote_boundaries = (f"{name}_boundaries.csv ({len(boundaries['grain_a'])} grain boundaries, columns in "
                        f"{name}_boundaries.json), " if boundaries is not None else "")
    typer.echo(f"{n} grains; wrote {out}/{name}.zarr, {name}_grains.csv (columns in {name}_grains.json), "
               f"{wrote_boundaries}{name}_summary.json and 4 PNGs")


def segment_rule(record: dict | None, given: dict, *, has_boundary: bool) -> tuple[dict | None, str | None]:
    """The grain rule to apply to a segment output, and a one-line note when it differs from the run's.

    Parameters
    ----------
    record : dict or None
        The output's ``micro_sym`` attributes (``grain_rule``, ``threshold``, ``min_size``,
        ``boundary_threshold``, ``n_grains``); None for other inputs.
    given : dict
        The user's ``threshold``, ``min_size``, ``small``, ``connectivity``, ``boundary_threshold``
        (None where not given).
    has_boundary : bool
        Whether the output holds its boundary map (the seeded rule needs it).

    Returns
    -------
    rule : dict or None
        ``grain_rule`` (a :mod:`micro_sym.grains.rules` dict, or None for the plain reconstruction with
        the given connectivity and small-grain policy, which the recorded rule has no counterpart for)
        and the ``threshold``, ``min_size``, ``boundary_threshold`` and ``n_grains`` to use; None when
        ``record`` is not a segment run's.
    note : str or None
        How the grains differ from the segment run's, if they do.
    """
    if not record or not isinstance(record.get("grain_rule"), dict):
        return None, None
    rec_rule = dict(record["grain_rule"])
    rec = {"threshold": float(record.get("threshold", rec_rule.get("pair_threshold", 5.0))),
           "min_size": int(record.get("min_size", 0)),
           "boundary_threshold": float(record.get("boundary_threshold", 0.5))}
    n = record.get("n_grains")
    found = f"; segment found {n} grains" if n is not None else ""
    seeded = rec_rule.get("core_radius") is not None
    kind = "seeded" if seeded else "pair"
    # Connectivity and the small-grain policy are fixed by the recorded rule: asking for them means the plain rule.
    plain = [f"--{k.replace('_', '-')} {given[k]}" for k in ("connectivity", "small") if given[k] is not None]
    if seeded and not has_boundary:
        plain.append("no boundary map in the output")
    use = {k: rec[k] if given[k] is None else type(rec[k])(given[k]) for k in rec}
    if plain:  # the options the user left out still follow the run
        return {"grain_rule": None, **use, "n_grains": n}, (f"grain rule differs from the segment run ({kind} rule): "
                                                             f"plain pair rule because of {', '.join(plain)}{found}")
    changed = [f"--{k.replace('_', '-')} {use[k]:g} (segment {rec[k]:g})" for k in rec if use[k] != rec[k]]
    if use["threshold"] != rec["threshold"]:
        rec_rule["pair_threshold"] = use["threshold"]
        if rec_rule.get("merge_threshold") is not None:
            rec_rule["merge_threshold"] = use["threshold"]
    note = f"grain rule differs from the segment run ({kind} rule): {', '.join(changed)}{found}" if changed else None
    return {"grain_rule": rec_rule, **use, "n_grains": n}, note


def _connectivity(value, nd):
    if value is None:
        return 1
    allowed = {2: {4: 1, 8: 2}, 3: {6: 1, 26: 2}}[nd]
    if value not in allowed:
        raise MicroSymError(f"--connectivity: {value} is not valid for a {nd}D map (use {' or '.join(map(str, allowed))})")
    return allowed[value]


def _load(path: Path, symmetry):
    """Orientation map and friends from an EBSD file or a segmentation OME-Zarr group."""
    import numpy as np

    from micro_sym.orientation.symmetry import lattice as find_lattice

    path = Path(path)
    if not path.exists():
        raise MicroSymError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix in (".cpr", ".crc", ".ctf", ".ang"):
        from micro_sym.io.ebsd import read_ebsd

        m = read_ebsd(path)
        sym = symmetry or m.symmetry
        if sym not in ("cubic", "hexagonal"):
            raise MicroSymError(f"{path}: phase symmetry '{sym}' not supported (cubic or hexagonal)")
        many = len(np.unique(m.phase[m.mask])) > 1
        return {"orientation": m.quaternions, "symmetry": sym, "mask": m.mask, "phase": m.phase if many else None,
                "boundary": None, "pixel_size": m.step, "unit": m.unit, "name": path.stem,
                "phase_ids": m.phase, "phases": m.phases}
    if not path.is_dir():
        raise MicroSymError(f"{path}: not an EBSD file (.cpr/.crc, .ctf, .ang) or an OME-Zarr directory")
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as err:
        raise MicroSymError(f"{path}: not a Zarr group ({type(err).__name__})") from None
    from micro_sym.io.images import output_array

    try:  # the OME-Zarr layout (docs/design.md §1.7) or the flat arrays of older outputs
        orient_arr = output_array(root, "orientation")
    except KeyError:
        raise MicroSymError(f"{path}: Zarr group has no 'orientation' array (a segmentation output is expected)") from None
    try:
        boundary_arr = output_array(root, "boundary")
    except KeyError:
        boundary_arr = None
    try:
        orient = np.asarray(orient_arr[...])
        boundary = np.asarray(boundary_arr[...]) if boundary_arr is not None else None
    except Exception as err:
        raise MicroSymError(f"{path}: cannot read arrays ({type(err).__name__}: {err})") from None
    if not np.issubdtype(orient.dtype, np.floating):
        raise MicroSymError(f"{path}: 'orientation' must be floating point, got {orient.dtype}")
    attrs = dict(root.attrs)
    from micro_sym.io.orientation_export import recorded_lattice, recorded_phases

    phases = recorded_phases(attrs)
    if len(phases) > 1 and symmetry is None:
        names = " and ".join(f"{p['name']} (mod {360 // find_lattice(p['symmetry']).k}°)" for p in phases)
        raise MicroSymError(f"{path}: a map of two phases, {names}, and grains follow one angle symmetry; its grains "
                            f"and their table are the segment output's, or give --symmetry to treat every angle alike")

    lattice = symmetry or recorded_lattice(attrs)
    if lattice is None:
        lattice = "cubic" if orient.ndim in (3, 4) and orient.shape[0] == 4 else "square"
    from micro_sym.io.images import ngff_scale  # NGFF "micrometer" -> "µm" for tables

    ps, unit = ngff_scale(attrs)
    name = path.name
    for suf in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    record = attrs.get("micro_sym") if isinstance(attrs.get("micro_sym"), dict) else None
    return {"orientation": orient, "symmetry": lattice, "mask": None, "phase": None, "boundary": boundary,
            "pixel_size": ps, "unit": unit or "px", "name": name, "phase_ids": None, "phases": None,
            "segment": record}


def register(app: typer.Typer) -> None:
    app.command("grains")(grains)
