"""The grain table: one definition of the per-grain CSV columns for every command (docs/design.md §3.4).

Which columns a table has depends on two things only: the map's dimensionality (2D: pixels, area,
perimeter; 3D: voxels, volume, surface area) and its orientations (2D micrographs: in-plane lattice
angles; 3D volumes and EBSD maps: quaternions). Within one such kind, ``segment``, ``grains``,
``classical`` and the napari plugin write the same columns in the same order; a column a command
cannot compute (``gos`` in the block engine) is written empty and listed as not computed.

Next to every ``NAME_grains.csv`` a sidecar ``NAME_grains.json`` (:func:`describe`) documents each
column (header, unit, meaning in the words of the map's dimensionality), the phases, the pixel size,
the grain rule and the command.

Orientation columns
-------------------
Quaternion maps get the Bunge Euler angles ``phi1, Phi, phi2`` (degrees, ZXZ) of the mean
orientation, in the convention EBSD files, MTEX and orix use: they describe the passive sample ->
crystal rotation ``g = Z(φ2) X(Φ) Z(φ1)``, whose inverse, the active ``Z(φ1) X(Φ) Z(φ2)``, is the
crystal -> sample quaternion micro_sym stores (:func:`micro_sym.orientation.euler_bunge_to_quat`
is the inverse of :func:`euler_bunge_from_quat`). They are the angles of the same representative as
the ``mean_q`` columns, not reduced to a fundamental zone.

2D micrograph tables have no Euler columns: an image of a lattice measures one in-plane angle, not a
3D orientation. Writing ``(θ, 0, 0)`` would claim the beam runs along the crystal's [001] (or [0001])
axis, which the image does not show: a 6-fold pattern is as often a cubic crystal seen along <111>
as a hexagonal one along [0001], and the tilt about in-plane axes is not measured at all. The
``micro-sym ebsd`` export, whose formats need a 3D orientation per point, does write such angles,
with that assumption stated (docs/design.md §1.8).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError

#: Sidecar file name suffix: ``NAME_grains.csv`` -> ``NAME_grains.json``.
SIDECAR_SUFFIX = ".json"
#: |sin(Φ/2)| or |cos(Φ/2)| below this: Φ is 0 or 180° and only φ1 ± φ2 is defined (gimbal lock).
_GIMBAL = 1e-10


@dataclass(frozen=True)
class Column:
    """One grain-table column.

    ``unit`` is a template: ``""`` (a count, an id or dimensionless), ``"points"`` (pixels / voxels),
    ``"L"``, ``"L2"``, ``"L3"`` (length, area, volume in the pixel-size unit) or ``"deg"``.
    ``meaning`` may hold ``{point}``, ``{points}`` and ``{map}``, filled in per dimensionality.
    """

    name: str
    unit: str
    meaning: str


_WORDS = {2: {"point": "pixel", "points": "pixels", "map": "image"},
          3: {"point": "voxel", "points": "voxels", "map": "volume"}}

_HEAD = (
    Column("grain", "", "grain id: the value of its {points} in the grain label {map} (ids from 1; 0 = no grain)"),
    Column("n_points", "points", "number of {points} in the grain"),
)
_GEOMETRY = {
    2: (
        Column("area", "L2", "area: n_points x pixel area"),
        Column("ecd", "L", "equivalent circle diameter, 2 sqrt(area / pi)"),
        Column("perimeter", "L", "length of the pixel edges between the grain and anything else "
                                 "(staircase length; the image edge counts)"),
        Column("centroid_y", "L", "centroid row coordinate, from the centre of the first pixel "
                                  "(rows increase downwards)"),
        Column("centroid_x", "L", "centroid column coordinate, from the centre of the first pixel"),
        Column("major_axis", "L", "full major axis of the ellipse with the same second moments, 4 sqrt(lambda1)"),
        Column("minor_axis", "L", "full minor axis of that ellipse, 4 sqrt(lambda2)"),
        Column("aspect_ratio", "", "major_axis / minor_axis (empty for one-pixel-wide grains)"),
        Column("ellipse_angle", "deg", "angle of the major axis from +x, counter-clockwise as displayed (y up), "
                                       "in [0, 180)"),
    ),
    3: (
        Column("volume", "L3", "volume: n_points x voxel volume"),
        Column("esd", "L", "equivalent sphere diameter, (6 volume / pi)^(1/3)"),
        Column("surface_area", "L2", "area of the voxel faces between the grain and anything else "
                                     "(the volume edge counts)"),
        Column("centroid_z", "L", "centroid plane coordinate, from the centre of the first voxel"),
        Column("centroid_y", "L", "centroid row coordinate, from the centre of the first voxel"),
        Column("centroid_x", "L", "centroid column coordinate, from the centre of the first voxel"),
        Column("axis_a", "L", "longest full axis of the ellipsoid with the same second moments, 2 sqrt(5 lambda1)"),
        Column("axis_b", "L", "middle full axis of that ellipsoid"),
        Column("axis_c", "L", "shortest full axis of that ellipsoid"),
        Column("aspect_ratio", "", "axis_a / axis_c (empty for one-voxel-thin grains)"),
    ),
}
_TAIL = (
    Column("touches_border", "", "1 if the grain touches the {map} edge, else 0"),
    Column("n_neighbours", "", "number of distinct grains it touches, counted across unassigned bands (label 0: the "
                               "boundary a segmentation leaves between grains) up to 4 {points} wide"),
)
_PHASE = Column("phase", "", "phase id (1 = the first phase); 'phases' in the sidecar JSON gives its name and "
                             "symmetry (EBSD maps: the file's phase numbers)")
_GOS = Column("gos", "deg", "grain orientation spread: mean misorientation of the grain's {points} to its mean "
                            "orientation (symmetry-aware)")
_ORIENTATION = {
    "angle": (
        _PHASE,
        Column("mean_angle", "deg", "mean in-plane lattice angle: the lattice's first basis vector from +x, "
                                    "counter-clockwise as displayed (y up); circular mean of k theta divided by k, "
                                    "in [0, 360/k) (k = 4 square, 6 hexagonal)"),
        Column("lattice_angle", "deg", "in-plane lattice angle measured from the image inside the grain: the phase of "
                                       "the k-fold first ring of the power spectrum of its pixels, same convention as "
                                       "mean_angle, in [0, 360/k) with k of the image's measured lattice (6 hexagonal, "
                                       "else 4); empty where lattice_strength is below 0.3"),
        Column("lattice_strength", "", "how k-fold the power on the grain's first lattice ring is: |c_k| / c_0, "
                                       "1 for a perfect lattice, near 0 for no lattice or noise"),
        Column("fringes_angle", "deg", "where the grain shows one set of lattice fringes (fringes_strength at least "
                                       "0.5): their plane normal from +x, counter-clockwise as displayed, in [0, 180), "
                                       "measured as lattice_angle at k = 2; empty for a 2D lattice"),
        Column("fringes_strength", "", "how 2-fold the power on the grain's first lattice ring is: |c_2| / c_0, "
                                       "near 1 for one set of fringes, near 0 for a square or hexagonal lattice "
                                       "(whose spots cancel at k = 2) or noise"),
        _GOS,
    ),
    "quaternion": (
        _PHASE,
        *(Column(f"mean_q{c}", "", f"mean orientation, unit quaternion component {c} (scalar first; "
                                    "rotates crystal vectors into the sample frame; from segment with a harmonic "
                                    "network: the orientation its map shows, lattice_q where given)") for c in "wxyz"),
        Column("phi1", "deg", "Bunge Euler angle phi1 of the mean orientation (ZXZ, passive sample -> crystal, "
                              "as EBSD files, MTEX and orix use), in [0, 360)"),
        Column("Phi", "deg", "Bunge Euler angle Phi of the mean orientation, in [0, 180]"),
        Column("phi2", "deg", "Bunge Euler angle phi2 of the mean orientation, in [0, 360) (0 where Phi is 0 or 180)"),
        *(Column(f"lattice_q{c}", "", f"orientation measured from the {{map}} inside the grain (its lattice's first-ring "
                                      f"spots in the power spectrum of its {{points}}), unit quaternion component {c}, as "
                                      "mean_q; empty where lattice_quality is below 0.4 or the grain is too small")
          for c in "wxyz"),
        Column("lattice_quality", "", "share of the grain's first-ring spot power that the measured orientation "
                                      "explains (1: all of it; noise: about 0.1)"),
        _GOS,
    ),
}
#: Every column name any table may have.
ALL_NAMES = frozenset(c.name for group in (_HEAD, *_GEOMETRY.values(), _TAIL, *_ORIENTATION.values()) for c in group)


def columns(ndim: int, orientation: str | None = None) -> list[Column]:
    """The documented columns, in CSV order, of a ``ndim``-D map with ``orientation`` (``"angle"``,
    ``"quaternion"`` or None for a table of labels only), meanings in that dimensionality's words."""
    if ndim not in _GEOMETRY:
        raise MicroSymError(f"grain table: expected a 2D or 3D map, got {ndim}D")
    group = (*_HEAD, *_GEOMETRY[ndim], *_TAIL, *(_ORIENTATION[orientation] if orientation else ()))
    return [Column(c.name, c.unit, c.meaning.format(**_WORDS[ndim])) for c in group]


def table_kind(table: dict) -> tuple[int, str | None]:
    """``(ndim, orientation)`` of a table from its columns (names with or without unit suffixes)."""
    names = {_base_name(k)[0] for k in table}
    if "volume" in names:
        ndim = 3
    elif "area" in names:
        ndim = 2
    else:
        raise MicroSymError("grain table: no 'area' or 'volume' column, so its dimensionality is unknown")
    orientation = "quaternion" if "mean_qw" in names else "angle" if "mean_angle" in names else None
    return ndim, orientation


def ascii_unit(unit: str | None) -> str:
    """The length unit as CSV headers carry it (``µm`` -> ``um``)."""
    u = unit or "px"
    return {"µm": "um", "\u03bcm": "um", "Å": "A", "\u212b": "A"}.get(u, u)


def header_unit(column: Column, unit: str | None) -> str:
    """The unit suffix of a column's CSV header (``um2`` for an area in µm²; ``""``: no suffix)."""
    u = ascii_unit(unit)
    return {"L": u, "L2": f"{u}2", "L3": f"{u}3", "deg": "deg"}.get(column.unit, "")


def doc_unit(column: Column, unit: str | None, ndim: int) -> str:
    """The unit documented for a column: its header suffix, else ``pixels``/``voxels`` for counts of
    points, else ``""`` (ids, counts of grains, flags and ratios)."""
    if column.unit == "points":
        return _WORDS[ndim]["points"]
    return header_unit(column, unit)


def header(column: Column, unit: str | None) -> str:
    """The CSV header of a column: its name plus ``_UNIT`` where it has a unit (``area_um2``)."""
    suffix = header_unit(column, unit)
    return f"{column.name}_{suffix}" if suffix else column.name


def _base_name(key: str) -> tuple[str, str | None]:
    """``(column name, unit suffix or None)`` of a table key or CSV header (``area_nm2`` -> ``area, nm2``)."""
    if key in ALL_NAMES:
        return key, None
    base, _, suffix = key.rpartition("_")
    return (base, suffix) if base in ALL_NAMES else (key, None)


def _unit_of_suffix(template: str, suffix: str) -> str | None:
    """The length unit a header suffix implies (``L2``, ``nm2`` -> ``nm``), None when it implies none."""
    if template == "L":
        return suffix
    if template in ("L2", "L3") and suffix.endswith(template[1]):
        return suffix[:-1]
    return None


# ------------------------------------------------------------------------------ Euler angles


def euler_bunge_from_quat(q):
    """Bunge Euler angles ``(phi1, Phi, phi2)`` in degrees of crystal -> sample quaternions.

    The inverse of :func:`micro_sym.orientation.euler_bunge_to_quat`: for ``q`` of the active
    rotation ``Z(φ1) X(Φ) Z(φ2)`` it returns ``φ1, φ2`` in ``[0, 360)`` and ``Φ`` in ``[0, 180]``,
    the angles an EBSD file stores for that orientation. Where ``Φ`` is 0 or 180° only ``φ1 + φ2``
    (``φ1 - φ2``) is defined; then ``φ2 = 0``, as MTEX and orix choose. NaN quaternions give NaN.

    Parameters
    ----------
    q : array_like, (..., 4)
        Quaternions, scalar first (either sign, any norm > 0).

    Returns
    -------
    phi1, Phi, phi2 : ndarray, (...)
    """
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    # Z(φ1) X(Φ) Z(φ2) multiplies out to
    #   w = cos(Φ/2) cos((φ1 + φ2)/2),  z = cos(Φ/2) sin((φ1 + φ2)/2),
    #   x = sin(Φ/2) cos((φ1 - φ2)/2),  y = sin(Φ/2) sin((φ1 - φ2)/2).
    cos_h, sin_h = np.hypot(w, z), np.hypot(x, y)
    big_phi = 2 * np.arctan2(sin_h, cos_h)
    total = 2 * np.arctan2(z, w)
    diff = 2 * np.arctan2(y, x)
    phi1 = np.where(sin_h < _GIMBAL, total, np.where(cos_h < _GIMBAL, diff, (total + diff) / 2))
    phi2 = np.where((sin_h < _GIMBAL) | (cos_h < _GIMBAL), 0.0, (total - diff) / 2)
    return _wrap360(np.rad2deg(phi1)), np.rad2deg(big_phi), _wrap360(np.rad2deg(phi2))


def _wrap360(a):
    a = np.mod(a, 360.0)
    # -1e-15 wraps to 360 - 1e-15, which prints as 360: call it 0.
    return np.where(a > 360.0 - 1e-9, 0.0, a)


# ------------------------------------------------------------------------------------- phases


def grain_phase(labels, phase) -> np.ndarray:
    """Phase id of each grain ``1..N``: the most frequent non-zero id of its points in ``phase``.

    Grains reconstructed with a phase map never cross a phase change, so this is the phase of all
    its points. A grain without an indexed point gets 0.
    """
    lab = np.asarray(labels).ravel().astype(np.int64)
    ph = np.asarray(phase).ravel().astype(np.int64)
    if ph.shape != lab.shape:
        raise MicroSymError(f"phase: {np.shape(phase)} does not match the labels {np.shape(labels)}")
    n, p = int(lab.max()) if lab.size else 0, int(max(ph.max(), 0)) if ph.size else 0
    counts = np.bincount(lab * (p + 1) + np.clip(ph, 0, None), minlength=(n + 1) * (p + 1)).reshape(n + 1, p + 1)
    counts[:, 0] = 0
    best = counts.argmax(axis=1)
    return np.where(counts.max(axis=1) > 0, best, 0)[1:].astype(np.int64)


def phase_list(symmetry: str | None = None, phases=None) -> dict:
    """``{id: {"name", "symmetry"}}`` for the sidecar: EBSD ``phases`` (1-based, in file order), else
    one phase named after the map's symmetry (``square``, ``hexagonal``, ``cubic``)."""
    if phases:
        if isinstance(phases, dict):
            return {str(k): dict(v) for k, v in phases.items()}
        return {str(i): {"name": p.get("name"), "symmetry": p.get("symmetry")} for i, p in enumerate(phases, 1)}
    return {"1": {"name": symmetry, "symmetry": symmetry}}


# ------------------------------------------------------------------------------- the table


def add_derived(table: dict) -> dict:
    """``table`` plus the columns that follow from others: Euler angles from the mean quaternion and
    ``phase`` = 1 (one phase) where a table with orientations has none. Returns a new dict."""
    t = dict(table)
    names = {_base_name(k)[0]: k for k in t}
    if "mean_qw" in names and "phi1" not in names:
        q = np.stack([np.asarray(t[names[f"mean_q{c}"]], np.float64) for c in "wxyz"], -1)
        t["phi1"], t["Phi"], t["phi2"] = euler_bunge_from_quat(q)
    if ("mean_qw" in names or "mean_angle" in names) and "phase" not in names:
        t["phase"] = np.ones(len(np.asarray(t[names["grain"]])), np.int64)
    return t


def order(table: dict) -> dict:
    """``table`` with its documented columns first, in CSV order (others after, as they came)."""
    ndim, orientation = table_kind(table)
    names = {_base_name(k)[0]: k for k in table}
    first = [names[c.name] for c in columns(ndim, orientation) if c.name in names]
    return {k: table[k] for k in first + [k for k in table if k not in first]}


def complete(table: dict, unit: str | None = "px") -> tuple[dict, str, list[str]]:
    """The table as every command writes it: documented columns in order, derived ones added.

    Keys may carry unit suffixes (a table read back from a CSV, ``area_nm2``); the result uses plain
    names. A documented column the table lacks (``gos`` from the block engine) is added as NaN.

    Returns
    -------
    table : dict of ndarray
        Plain column names, CSV order; undocumented extra columns last.
    unit : str
        The length unit: the one the headers carry where they carry one, else ``unit``.
    not_computed : list of str
        The columns added as NaN.
    """
    unit = unit or "px"
    ndim, orientation = table_kind(table)
    docs = {c.name: c for c in columns(ndim, orientation)}
    t = {}
    for key, values in table.items():
        name, suffix = _base_name(key)
        if suffix is not None and name in docs:
            found = _unit_of_suffix(docs[name].unit, suffix)
            if found is not None:  # the header's unit is the values' unit, whatever the caller says
                unit = {"um": "µm"}.get(found, found)
        t[name if name in docs else key] = np.asarray(values)
    t = add_derived(t)
    n = len(t["grain"])
    missing = [c for c in docs if c not in t]
    for c in missing:
        t[c] = np.full(n, np.nan)
    return order(t), unit, missing


def describe(table: dict, unit: str | None = "px", *, pixel_size=None, symmetry: str | None = None, phases=None,
             command: str | None = None, grain_rule: dict | None = None, csv_name: str | None = None,
             not_computed=()) -> dict:
    """The sidecar document of a grain table (JSON-ready): every CSV column's header, unit and
    meaning, plus the phases, pixel size, grain rule and command that produced it.

    ``table`` as :func:`complete` returns it (plain names); ``unit`` its length unit.
    """
    ndim, orientation = table_kind(table)
    docs = {c.name: c for c in columns(ndim, orientation)}
    cols = []
    for key in table:
        c = docs.get(key)
        if c is None:
            cols.append({"name": key, "quantity": key, "unit": "", "meaning": "(not a documented grain-table column)"})
            continue
        meaning = c.meaning + (" -- not computed by this command: empty" if key in not_computed else "")
        cols.append({"name": header(c, unit), "quantity": c.name, "unit": doc_unit(c, unit, ndim), "meaning": meaning})
    words = _WORDS[ndim]
    u = ascii_unit(unit)
    conventions = {
        "header": f"each header is the quantity plus its unit as a suffix: _{u} a length in {unit or 'px'}, _{u}2 an "
                  f"area in {unit or 'px'}^2, _{u}3 a volume in {unit or 'px'}^3, _deg degrees; no suffix: an id, a "
                  f"count or a ratio" + (f" (px: the {words['point']} edge length)" if (unit or "px") == "px" else ""),
        "empty_cells": f"no value: undefined for that grain (e.g. aspect_ratio of a one-{words['point']}-wide "
                       "grain), or the column is listed in not_computed",
        "coordinates": "centroids are array coordinates times the pixel size, from the centre of the first "
                       + ("pixel: x = column, y = row (downwards, as stored)" if ndim == 2 else
                          "voxel: x = column, y = row, z = plane (each along increasing index)"),
    }
    if orientation == "angle":
        conventions["orientation"] = (
            "2D in-plane lattice angle (degrees, counter-clockwise from +x as displayed, y up). No Euler angles: an "
            "image of a lattice measures this one angle, not a 3D orientation; (mean_angle, 0, 0) would be the Bunge "
            "angles only if the beam ran along the crystal's [001] / [0001] axis, which the image does not show "
            "(a 6-fold pattern is also a cubic crystal seen along <111>)")
    elif orientation == "quaternion":
        frame = ("the volume frame: x = last array axis, y = second-to-last, z = first, right-handed" if ndim == 3
                 else "the EBSD map's sample frame as stored (.ang files: brought to Oxford's frame, phi1 - 90 deg)")
        conventions["orientation"] = (
            f"mean_q*: unit quaternion (w, x, y, z) rotating crystal vectors into {frame}. phi1, Phi, phi2: Bunge "
            "Euler angles (degrees, ZXZ) of the same orientation in the convention of EBSD files, MTEX and orix: "
            "the passive sample -> crystal rotation g = Z(phi2) X(Phi) Z(phi1), whose inverse is the quaternion. "
            "MTEX: orientation.byEuler(phi1*degree, Phi*degree, phi2*degree, cs); orix: "
            "Orientation.from_euler(np.radians([phi1, Phi, phi2]), symmetry). Not reduced to a fundamental zone")
    doc = {
        "table": "micro_sym grain table",
        "csv": csv_name,
        "command": command,
        "dimensions": ndim,
        "n_grains": len(np.asarray(table["grain"])),
        "pixel_size": [float(p) for p in np.broadcast_to(np.asarray(1.0 if pixel_size is None else pixel_size,
                                                                    float), (ndim,))],
        "unit": unit or "px",
        "symmetry": symmetry,
        "phases": phase_list(symmetry, phases) if orientation else None,
        "grain_rule": _rule(grain_rule),
        "conventions": conventions,
        "not_computed": list(not_computed),
        "columns": cols,
    }
    return doc


def _rule(rule: dict | None) -> dict | None:
    """The grain rule's parameters plus a one-line name of the rule."""
    if rule is None:
        return None
    rule = {k: _plain(v) for k, v in rule.items()}
    inner = rule.get("grain_rule") if isinstance(rule.get("grain_rule"), dict) else rule
    if "core_radius" in inner:
        seeded = inner.get("core_radius") is not None
        rule["name"] = ("seeded: grains grow from seeds well inside the predicted boundaries" if seeded else
                        "neighbour pair: neighbours within the misorientation threshold join one grain")
    return rule


def _plain(v):
    """JSON-ready values (numpy scalars and arrays, tuples; non-finite floats as None)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def sidecar_path(csv_path) -> Path:
    """Where the column documentation of ``csv_path`` goes: ``NAME_grains.csv`` -> ``NAME_grains.json``."""
    return Path(csv_path).with_suffix(SIDECAR_SUFFIX)


def write_sidecar(csv_path, doc: dict) -> Path:
    """Write ``doc`` beside ``csv_path`` atomically (a temporary file moved into place)."""
    path = sidecar_path(csv_path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(_plain(doc), indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise MicroSymError(f"{path}: cannot write the grain-table description ({err.strerror or err})") from None
    return path
