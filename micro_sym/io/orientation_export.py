"""A ``micro-sym segment`` output's orientation map as an EBSD file MTEX, orix and DefDAP read (docs/design.md §1.8).

Formats, by the suffix of the file asked for:

* ``.ctf`` (Oxford Channel 5 / AZtec text) and ``.ang`` (EDAX/TSL text): 2D outputs only, written by
  :func:`micro_sym.io.ebsd.write_ctf_bands` / :func:`~micro_sym.io.ebsd.write_ang_bands` in bands of
  whole chunk rows, so the map is never held in memory at once.
* ``.h5`` (orix's HDF5 format, through :func:`orix.io.save` of a :class:`orix.crystal_map.CrystalMap`):
  2D and 3D. orix builds the whole map in memory, so maps above :data:`MAX_ORIX_POINTS` are refused.

What is written, per point (the per-pixel orientation map, not per-grain means):

* not indexed (phase 0 / CI -1 / orix phase -1) where the point has no grain (label 0: the boundary band a
  segmentation leaves, or no lattice) or no orientation (NaN); in a map of two phases (``--method auto`` on
  fringes, :mod:`micro_sym.inference.fusion`) also in the grains that show one set of fringes, whose plane
  normal is not a crystal orientation (the square phase's grains are written; a note says so);
* the orientation as Bunge Euler angles in the files' convention: the passive sample -> crystal rotation
  (the inverse of micro_sym's crystal -> sample quaternion, as ``micro_sym.grains.table`` writes them);
* the boundary probability ``p`` as the quality column: band contrast ``BC = round(255 (1 - p))`` in a
  ``.ctf``, image quality ``IQ`` the same in an ``.ang``, property ``boundary`` = ``p`` in an ``.h5``;
* the grain id: property ``grain_id`` in an ``.h5``. The text formats have fixed vendor column layouts with
  no grain column, so there the reading tool reconstructs grains (the not-indexed band separates them);
* the pixel size: ``.ctf``/``.ang`` store steps in µm (their fixed unit), converted from the output's unit;
  an ``.h5`` keeps the output's unit as orix's ``scan_unit``.

Frames. The files' sample frame is x along the columns, y along the rows (downwards as displayed, row 0
first, as EBSD maps are stored) and z = x × y. For a 3D output this is micro_sym's volume frame (docs/design.md
§1.1), so the quaternion map is written as it is. A 2D micrograph's frame has y *up*: its in-plane angle θ,
counter-clockwise as displayed, is a rotation by -θ about the file's z (into the screen, along the beam), so
the crystal -> sample rotation is ``Z(-θ)``, i.e. Bunge ``(φ1, Φ, φ2) = (-θ mod 360/k, 0, 0)`` (one of the
k equivalent descriptions). That assumes the beam runs along the crystal's [001] (square lattice, cubic
Laue group m-3m) or [0001] (hexagonal lattice, 6/mmm), which one image cannot show (see the note in
``micro_sym.grains.table``): treat a 2D export's out-of-plane orientation as nominal; misorientations
between grains are the in-plane ones.

``.ang`` files carry the TSL frame, turned by 90° about z from the map's (``φ1 + 90°``, as
:func:`~micro_sym.io.ebsd.write_ang` writes and :func:`~micro_sym.io.ebsd.read_ang` undoes); apply your
tool's usual TSL correction (MTEX ``'convertEuler2SpatialReferenceFrame'``, DefDAP does it itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import CUBIC, Lattice
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Suffixes :func:`export_orientation_map` writes.
FORMATS = (".ctf", ".ang", ".h5")
#: Largest map written through orix, which holds all points in memory at once (512³ voxels).
MAX_ORIX_POINTS = 2**27
#: Peak memory per point of an .h5 export (measured: the map, orix's CrystalMap and its HDF5 writer).
ORIX_BYTES_PER_POINT = 300
#: Points per band of rows streamed into a text file.
_BAND_POINTS = 2**20
#: Length units -> micrometres, the step unit of .ctf and .ang files.
_TO_MICROMETRE = {"pm": 1e-6, "Å": 1e-4, "\u212b": 1e-4, "nm": 1e-3, "µm": 1.0, "\u03bcm": 1.0, "um": 1.0,
                  "mm": 1e3, "cm": 1e4, "m": 1e6}
#: The Laue group files name for each lattice: (Oxford id, orix point group).
_LAUE = {"square": (11, "m-3m"), "cubic": (11, "m-3m"), "hexagonal": (9, "6/mmm")}


@dataclass
class SegmentOutput:
    """An opened, complete ``micro-sym segment`` output (arrays are read lazily).

    Attributes
    ----------
    path : Path
        ``OUT/NAME.zarr``.
    lattice : Lattice
        Square or hexagonal for 2D angle maps, cubic for 3D quaternion maps.
    shape : tuple of int
        Spatial shape ``(y, x)`` or ``(z, y, x)``.
    pixel_size : tuple of float or None
        Spatial pixel size per axis, in ``unit``; None when the input had none.
    unit : str or None
        Short length unit (``nm``, ``µm``), None for pixels.
    orientation, grains, boundary : zarr.Array
        ``orientation`` ``(y, x)`` degrees or ``(4, z, y, x)`` quaternions, ``grains`` the labels,
        ``boundary`` the probability map (None if absent).
    grain_range : tuple of int, optional
        ``(first, last)``: only these grains carry ``lattice`` orientations (a map of several phases,
        whose other grains show one set of fringes: they are written as not indexed).
    note : str, optional
        What the export leaves out, for the user.
    """

    path: Path
    lattice: Lattice
    shape: tuple
    pixel_size: tuple | None
    unit: str | None
    orientation: object
    grains: object
    boundary: object
    grain_range: tuple | None = None
    note: str | None = None

    def indexed(self, theta, labels) -> np.ndarray:
        """Points written with an orientation: finite angle (or quaternion) and a grain of the exported phase."""
        keep = np.isfinite(theta) & (labels > 0)
        if self.grain_range is not None:
            keep &= (labels >= self.grain_range[0]) & (labels <= self.grain_range[1])
        return keep

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape))

    def phases(self) -> list[dict]:
        """The one phase, named after the lattice, in :class:`~micro_sym.io.ebsd.EBSDMap` form."""
        laue, _ = _LAUE[self.lattice.name]
        return [{"name": self.lattice.name, "symmetry": "hexagonal" if laue == 9 else "cubic", "laue_group": laue}]


def open_segment_output(path, *, lattice: str | None = None) -> SegmentOutput:
    """Open ``OUT/NAME.zarr`` written by ``micro-sym segment`` (or ``micro-sym classical``) and check it is complete.

    Parameters
    ----------
    path : str or Path
        The output's Zarr group.
    lattice : str, optional
        ``square`` or ``hexagonal``: the lattice of a 2D output, where the output does not record it.

    Raises
    ------
    MicroSymError
        Not a segmentation output, an incomplete one (its run manifest is not ``complete``), or a 2D output
        whose lattice is neither recorded nor given.
    """
    import zarr

    from micro_sym.io.images import ngff_scale, output_array

    path = Path(path)
    if not path.exists():
        raise MicroSymError(f"{path}: no such file or directory")
    what = "not a micro-sym segment output"
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception:
        raise MicroSymError(f"{path}: {what} (expected the OUT/NAME.zarr group it writes)") from None
    try:
        orientation = output_array(root, "orientation")
        grains = output_array(root, "grains")
    except KeyError as err:
        raise MicroSymError(f"{path}: {what} ({str(err).strip(chr(39))})") from None
    try:
        boundary = output_array(root, "boundary")
    except KeyError:
        boundary = None
    attrs = dict(root.attrs)
    _check_complete(path, attrs)
    shape = tuple(grains.shape)
    quaternions = orientation.ndim == grains.ndim + 1
    if (orientation.shape[1:] if quaternions else orientation.shape) != shape or (quaternions and orientation.shape[0] != 4):
        raise MicroSymError(f"{path}: orientation map {tuple(orientation.shape)} does not fit the grain labels {shape}")
    if boundary is not None and tuple(boundary.shape) != shape:
        boundary = None  # not this output's map: write no quality rather than a wrong one
    grain_range, note = None, None
    phases = recorded_phases(attrs)
    if quaternions:
        lat = CUBIC
    elif len(phases) > 1 and lattice is None:  # a fused map: its crystal phase, fringes grains not indexed
        crystal = [p for p in phases if p.get("symmetry") in _LAUE]
        if not crystal:
            raise MicroSymError(f"{path}: none of its phases ({', '.join(p['name'] for p in phases)}) gives a crystal "
                                f"orientation, so no .ctf/.ang/orix file can hold it (its grain table CSV has the angles)")
        lat, grain_range = find_lattice(crystal[0]["symmetry"], ndim=2), tuple(crystal[0]["grains"])
        left = [p["name"] for p in phases if p is not crystal[0]]
        note = (f"the grains of phase {', '.join(left)} show one set of lattice planes (a plane normal, not a crystal "
                f"orientation): written as not indexed; the grain table CSV has their angles")
    else:
        recorded = recorded_lattice(attrs)
        if lattice is not None and recorded is not None and find_lattice(lattice, ndim=2, where="--lattice").name != recorded:
            raise MicroSymError(f"--lattice {lattice}: {path} records a {recorded} lattice")
        name = lattice or recorded
        if name is None:
            raise MicroSymError(f"{path}: the output does not record its lattice; give --lattice square or hexagonal")
        lat = find_lattice(name, ndim=2, where="--lattice" if lattice else str(path))
        if lat.name not in _LAUE:
            raise MicroSymError(f"{path}: a {lat.name} map gives each grain one plane normal, not a crystal orientation, "
                                f"so no .ctf/.ang/orix file can hold it (its grain table CSV has the angles)")
    pixel_size, unit = ngff_scale(attrs, len(shape))
    return SegmentOutput(path, lat, shape, pixel_size, unit, orientation, grains, boundary, grain_range, note)


def _is_2d_lattice(name) -> bool:
    return isinstance(name, str) and find_lattice(name, ndim=2, default=None) is not None


def recorded_phases(attrs: dict) -> list[dict]:
    """The phases a segment output records (a fused map's two, each with its grain ids), else []."""
    record = attrs.get("micro_sym")
    return list(record.get("phases") or []) if isinstance(record, dict) else []


def recorded_lattice(attrs: dict) -> str | None:
    """The 2D lattice an output records: ``micro-sym classical``'s ``lattice`` attribute, else the segment
    run's angle symmetry, else its method (classical method, measured or given lattice); None if it
    records none."""
    if _is_2d_lattice(attrs.get("lattice")):
        return attrs["lattice"]
    record = attrs.get("micro_sym")
    if isinstance(record, dict) and _is_2d_lattice(record.get("symmetry")):
        return record["symmetry"]  # the symmetry of the output's angles
    method = record.get("method") if isinstance(record, dict) else None
    if not isinstance(method, dict):
        return None
    for where in (method, method.get("scale") or {}, method.get("auto") or {}):
        if isinstance(where, dict) and where.get("lattice") in ("square", "hexagonal"):
            return where["lattice"]
    return None


def _check_complete(path: Path, attrs: dict) -> None:
    """A segment run writes its ``micro_sym`` attributes last and marks its manifest ``complete``: an output
    with either missing, or a manifest saying otherwise, is unfinished."""
    name = path.name.removesuffix(".zarr").removesuffix(".ome")
    manifest = path.parent / f".{name}.run" / "manifest.json"
    status = None
    if manifest.is_file():
        try:
            status = json.loads(manifest.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            status = "unreadable"
    if (status is not None and status != "complete") or not isinstance(attrs.get("micro_sym"), dict):
        said = f"run status '{status}'" if status not in (None, "complete") else "no completed-run record"
        raise MicroSymError(f"{path}: incomplete segment output ({said}); rerun micro-sym segment on its input "
                            f"with the same --out to finish it")


# ------------------------------------------------------------------------------------- orientations


def in_plane_euler(theta_deg, lattice: Lattice) -> np.ndarray:
    """Bunge angles ``(3, ...)`` in degrees of 2D in-plane angles in the files' frame: ``(-θ mod 360/k, 0, 0)``.

    θ is counter-clockwise as displayed with y up (docs/design.md §1.2); the files' y runs down the rows,
    so the same turn is -θ about their z. The angle is reduced modulo the lattice period, a rotation
    about the beam in the crystal's symmetry group (4-fold in m-3m, 6-fold in 6/mmm). NaN stays NaN.
    """
    phi1 = np.mod(-np.asarray(theta_deg, dtype=np.float64), lattice.period)
    phi1 = np.where(phi1 >= lattice.period, 0.0, phi1)  # -tiny wraps to the period, which is 0
    zero = np.zeros_like(phi1)
    return np.stack([phi1, zero, zero])


def orix_quaternions(q) -> np.ndarray:
    """orix's quaternion of micro_sym's crystal -> sample quaternions ``(..., 4)``: its conjugate.

    orix stores the passive sample -> crystal rotation (``Orientation.from_euler`` of the Bunge angles);
    micro_sym the active crystal -> sample one, its inverse (tests/orientation/test_orix_crosscheck.py).
    """
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


# ------------------------------------------------------------------------------------------ export


def export_orientation_map(output: SegmentOutput, dest, *, overwrite: bool = False) -> dict:
    """Write ``output``'s orientation map to ``dest`` (``.ctf``, ``.ang`` or ``.h5``, by suffix).

    The file is written beside ``dest`` under a temporary name and renamed when complete, so an error
    leaves no partial file.

    Returns
    -------
    dict
        ``path``, ``points``, ``indexed`` (points written with an orientation), ``step`` and ``unit`` as
        written (µm for the text formats; None where the output has no pixel size).
    """
    dest = Path(dest)
    suffix = check_destination(dest, overwrite=overwrite)
    if suffix in (".ctf", ".ang") and output.ndim != 2:
        raise MicroSymError(f"{dest}: {suffix} holds 2D maps only and {output.path} is 3D "
                            f"{'x'.join(map(str, output.shape))}; write .h5 (orix HDF5) instead")
    if suffix == ".h5":
        size = f"{'x'.join(map(str, output.shape))} = {output.n_points} points"
        if output.n_points > MAX_ORIX_POINTS:
            raise MicroSymError(f"{output.path}: {size} is above the {MAX_ORIX_POINTS} that .h5 export holds in memory "
                                f"(orix writes whole maps)")
        need, have = output.n_points * ORIX_BYTES_PER_POINT, _physical_memory()
        if have and need > have:
            raise MicroSymError(f"{output.path}: {size} needs about {need / 2**30:.1f} GiB in memory for .h5 export; "
                                f"this machine has {have / 2**30:.1f} GiB")
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp{suffix}")
    try:
        info = _write_text(output, tmp, suffix) if suffix in (".ctf", ".ang") else _write_orix(output, tmp)
        os.replace(tmp, dest)
    except OSError as err:
        raise MicroSymError(f"{dest}: cannot write ({err.strerror or err})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": dest, **info}


def _physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_destination(dest: Path, *, overwrite: bool) -> str:
    """The format suffix of ``dest``; a one-line error for an unknown one or an existing file without ``overwrite``."""
    suffix = dest.suffix.lower()
    if suffix not in FORMATS:
        raise MicroSymError(f"{dest}: unknown orientation-map format '{dest.suffix}' (expected .ctf, .ang or .h5)")
    if dest.is_dir():
        raise MicroSymError(f"{dest}: is a directory")
    if dest.exists() and not overwrite:
        raise MicroSymError(f"{dest}: already exists (pass --overwrite to replace it)")
    if not dest.parent.is_dir():
        raise MicroSymError(f"{dest.parent}: no such directory")
    return suffix


def _steps_um(output: SegmentOutput) -> tuple[tuple, str | None, str | None]:
    """Grid steps ``(y, x)`` for the text formats, their unit (µm; None for pixels), and a note when not µm."""
    if output.pixel_size is None or output.unit is None:
        return (1.0, 1.0), None, "no pixel size in the output: steps written as 1 (pixels)"
    factor = _TO_MICROMETRE.get(output.unit)
    if factor is None:
        return tuple(output.pixel_size), output.unit, (f"unit '{output.unit}' is not a length micro_sym converts to "
                                                       f"µm: steps written in {output.unit}")
    return tuple(s * factor for s in output.pixel_size), "µm", None


def _write_text(output: SegmentOutput, path: Path, suffix: str) -> dict:
    """Stream a 2D output into a .ctf or .ang file, a band of whole chunk rows at a time."""
    from micro_sym.io.ebsd import EBSDMap, write_ang_bands, write_ctf_bands

    ny, nx = output.shape
    step, unit, note = _steps_um(output)
    phases = output.phases()
    chunk_rows = int(output.grains.chunks[0])
    rows = max(chunk_rows, _BAND_POINTS // max(nx, 1) // chunk_rows * chunk_rows)
    counted = {"indexed": 0}

    def bands():
        for r0 in range(0, ny, rows):
            sl = slice(r0, min(r0 + rows, ny))
            theta = np.asarray(output.orientation[sl], dtype=np.float64)
            labels = np.asarray(output.grains[sl])
            indexed = output.indexed(theta, labels)
            counted["indexed"] += int(indexed.sum())
            quality = _quality(output, sl)
            extra = {"BC" if suffix == ".ctf" else "iq": np.rint(255 * quality)}
            euler = np.where(indexed, in_plane_euler(np.where(indexed, theta, 0.0), output.lattice), 0.0)
            yield EBSDMap(None, euler, indexed.astype(np.int32), indexed, step, "µm", phases, path, extra)

    write = write_ctf_bands if suffix == ".ctf" else write_ang_bands
    write(path, output.shape, step, phases, bands())
    note = "; ".join(n for n in (note, output.note) if n) or None
    return {"points": output.n_points, "indexed": counted["indexed"], "step": step, "unit": unit, "note": note}


def _quality(output: SegmentOutput, sl) -> np.ndarray:
    """``1 - boundary probability`` in [0, 1] (0 where unknown): high inside grains, as band contrast is."""
    if output.boundary is None:
        return np.zeros(np.asarray(output.grains[sl]).shape)
    p = np.asarray(output.boundary[sl], dtype=np.float64)
    return np.where(np.isfinite(p), 1.0 - np.clip(p, 0.0, 1.0), 0.0)


def _write_orix(output: SegmentOutput, path: Path) -> dict:
    """The whole output as an orix CrystalMap saved to HDF5.

    orix 0.15 maps are 2D, so a volume's planes are stacked along y: the map is ``(z·y, x)``, row
    ``z·ny + r`` holds plane z, row r, at ``y = (z·ny + r)·dy``, and property ``z`` gives each point's plane
    coordinate; ``xmap.rotations.reshape(nz, ny, nx)`` (all points are in the data) recovers the volume.
    """
    import orix.io
    from orix.crystal_map import CrystalMap, PhaseList
    from orix.quaternion import Rotation

    n = output.n_points
    labels = np.asarray(output.grains[...]).reshape(-1)
    orient = np.asarray(output.orientation[...])  # float32 as stored; float64 only where indexed
    rotations = np.zeros((n, 4))
    rotations[:, 0] = 1.0  # identity where not indexed (orix's convention)
    if output.ndim == 2:
        theta = orient.reshape(-1)
        indexed = output.indexed(theta, labels)
        euler = in_plane_euler(theta[indexed], output.lattice)
        rotations[indexed] = Rotation.from_euler(euler.T, degrees=True).data
    else:
        q = orient.reshape(4, -1)
        indexed = np.isfinite(q).all(axis=0) & (labels > 0)
        rotations[indexed] = orix_quaternions(q[:, indexed].T)
    del orient
    step = output.pixel_size or (1.0,) * output.ndim
    ny, nx = output.shape[-2:]
    flat = np.arange(n)
    prop = {"grain_id": labels}
    if output.boundary is not None:
        prop["boundary"] = np.asarray(output.boundary[...], dtype=np.float64).reshape(-1)
    if output.ndim == 3:
        prop["z"] = (flat // (ny * nx)) * float(step[0])
    _, point_group = _LAUE[output.lattice.name]
    xmap = CrystalMap(
        rotations=Rotation(rotations),
        phase_id=np.where(indexed, 1, -1),
        x=(flat % nx) * float(step[-1]),
        y=(flat // nx) * float(step[-2]),  # the map's row: plane * ny + row for a volume
        phase_list=PhaseList(ids=[1], names=[output.lattice.name], point_groups=[point_group]),
        prop=prop,
        scan_unit=output.unit or "px",
    )
    orix.io.save(str(path), xmap, overwrite=True)
    return {"points": output.n_points, "indexed": int(indexed.sum()), "step": tuple(step), "unit": output.unit,
            "note": "; ".join(n for n in (None if output.unit else "no pixel size in the output: scan unit px",
                                          output.note) if n) or None}
