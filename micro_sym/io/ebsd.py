"""EBSD map import: Oxford ``.cpr/.crc`` (binary) and ``.ctf`` (text), EDAX/TSL ``.ang`` (text).

Every reader returns an :class:`EBSDMap` whose ``quaternions`` are ``(4, y, x)`` float64 (scalar
first, NaN at non-indexed points) from :func:`micro_sym.orientation.euler_bunge_to_quat`.

Conventions and frames
----------------------
* Euler angles are Bunge ZXZ ``(φ1, Φ, φ2)``, the passive sample -> crystal rotation stored by the
  acquisition software; the quaternion is its inverse (crystal -> sample), micro_sym's convention.
* Units on disk: ``.crc`` radians, ``.ctf`` degrees, ``.ang`` radians (all converted).
* Map layout: row 0 of the arrays is the first scan line, i.e. the top of the map as the
  acquisition software displays it; x runs along the columns.
* Sample frame: quaternions refer to the instrument's sample frame *as stored* (Oxford CS0); no
  rotation to micro_sym's y-up display frame is applied. Misorientations, and therefore grains and
  all grain statistics except IPF colours and the reported mean orientations, do not depend on this
  choice. For ``.ang`` files the TSL frame is brought to the Oxford one by ``φ1 -> φ1 - 90°``
  (the same correction DefDAP applies; disable with ``tsl_to_oxford=False``).
* Non-indexed points: phase 0 (Oxford), or CI < 0 / the 4π Euler marker (TSL). They get NaN
  quaternions and ``mask = False``.

Errors in files raise :class:`~micro_sym.errors.MicroSymError` with one line naming the file.
"""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation import euler_bunge_to_quat

EBSD_SUFFIXES = (".cpr", ".crc", ".ctf", ".ang")

# Oxford .cpr field ids -> (name, dtype) of the per-point .crc record (AZtec's channel ids).
OXFORD_FIELDS = {
    1: ("index", "<i4"),
    2: ("x", "<f4"),
    3: ("phi1", "<f4"),
    4: ("Phi", "<f4"),
    5: ("phi2", "<f4"),
    6: ("mad", "<f4"),
    7: ("band_contrast", "u1"),
    8: ("band_slope", "u1"),
    10: ("bands", "u1"),
    11: ("afi", "u1"),
    12: ("ib6", "<f4"),
}
# Laue group ids used by Oxford (and numbered the same way by DefDAP): 9 = 6/mmm, 11 = m-3m.
LAUE_SYMMETRY = {11: "cubic", 10: "cubic", 9: "hexagonal", 8: "hexagonal"}
# Hermann-Mauguin symbols of the 11 Laue groups -> Oxford ids (some exports write the symbol, e.g.
# ``LaueGroup=m-3m``); also accepted without the bar's minus sign and as the proper point group where
# that cannot be read as an id (1, 2, 3, 4 and 6 are ids).
LAUE_SYMBOLS = {
    "-1": 1, "2/m": 2, "mmm": 3, "222": 3, "4/m": 4, "4/mmm": 5, "422": 5, "-3": 6, "-3m": 7, "3m": 7,
    "32": 7, "6/m": 8, "6/mmm": 9, "622": 9, "m-3": 10, "m3": 10, "23": 10, "m-3m": 11, "m3m": 11, "432": 11,
}
_ANGLE_SLACK_DEG = 1e-3  # float32 storage rounds 2π up by a few 1e-7 rad


@dataclass
class EBSDMap:
    """One EBSD map.

    Attributes
    ----------
    quaternions : ndarray, (4, y, x) float64
        Crystal -> sample rotations, scalar first; NaN where not indexed.
    euler : ndarray, (3, y, x) float64
        Bunge Euler angles in degrees as read (after the ``.ang`` frame correction).
    phase : ndarray, (y, x) int32
        Phase id, 1-based; 0 = not indexed.
    mask : ndarray, (y, x) bool
        True at indexed points.
    step : tuple of float
        Step size ``(y, x)`` in ``unit``.
    unit : str
        Step-size unit (``"µm"``).
    phases : list of dict
        Per phase: ``name``, ``symmetry`` ("cubic", "hexagonal" or the raw code), ``laue_group``.
    path : Path
    extra : dict of ndarray
        Other per-point fields (band contrast, MAD, CI, IQ, ...).
    """

    quaternions: np.ndarray
    euler: np.ndarray
    phase: np.ndarray
    mask: np.ndarray
    step: tuple
    unit: str
    phases: list
    path: Path
    extra: dict = field(default_factory=dict)

    @property
    def shape(self):
        return self.phase.shape

    @property
    def symmetry(self) -> str:
        """Symmetry of the first phase (the one micro_sym's grain reconstruction uses)."""
        return self.phases[0]["symmetry"] if self.phases else "cubic"


def read_ebsd(path, *, tsl_to_oxford: bool = True) -> EBSDMap:
    """Read an EBSD map by its suffix (``.cpr``/``.crc``, ``.ctf``, ``.ang``).

    Parameters
    ----------
    path : str or Path
        The file; for Oxford binary either of the ``.cpr``/``.crc`` pair (both must exist).
    tsl_to_oxford : bool
        ``.ang`` only: subtract 90° from φ1 to express TSL orientations in the Oxford frame.

    Returns
    -------
    EBSDMap
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".cpr", ".crc"):
        return read_oxford_binary(path)
    if not path.is_file():
        raise MicroSymError(f"{path}: no such file")
    if suffix == ".ctf":
        return read_ctf(path)
    if suffix == ".ang":
        return read_ang(path, tsl_to_oxford=tsl_to_oxford)
    raise MicroSymError(f"{path}: unknown EBSD file type '{path.suffix}' (expected .cpr/.crc, .ctf or .ang)")


# ------------------------------------------------------------------------------- Oxford binary


def read_oxford_binary(path) -> EBSDMap:
    """Read an Oxford Instruments ``.cpr`` header plus ``.crc`` binary record file.

    The ``.cpr`` (INI style) gives the grid (``[Job] xCells, yCells, GridDistX/Y``), the phases and
    the ``[Fields]`` present in each ``.crc`` record: a uint8 phase followed by the listed fields
    (Euler angles in radians as float32, MAD, band contrast, ...), row-major, little-endian.
    """
    path = Path(path)
    cpr, crc = path.with_suffix(".cpr"), path.with_suffix(".crc")
    for p in (cpr, crc):
        if not p.is_file():
            raise MicroSymError(f"{p}: no such file (Oxford binary maps need both .cpr and .crc)")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in AZtec files
    try:
        parser.read_string(cpr.read_text(errors="replace"))
    except configparser.Error as err:
        raise MicroSymError(f"{cpr}: not an Oxford .cpr header ({type(err).__name__})") from None
    try:
        job = parser["Job"]
        nx, ny = int(job["xCells"]), int(job["yCells"])
        step = (float(job.get("GridDistY", job["GridDistX"])), float(job["GridDistX"]))
        n_fields = int(parser["Fields"]["Count"])
        field_ids = [int(parser["Fields"][f"Field{i + 1}"]) for i in range(n_fields)]
        n_phases = int(parser["Phases"]["Count"])
    except (KeyError, ValueError) as err:
        raise MicroSymError(f"{cpr}: not an Oxford .cpr header (missing or bad entry {err})") from None
    if nx <= 0 or ny <= 0:
        raise MicroSymError(f"{cpr}: bad grid size {nx} x {ny}")
    _check_step(cpr, step, "GridDistX/GridDistY")
    n_edx = int(parser["EDX Windows"].get("Count", 0)) if parser.has_section("EDX Windows") else 0
    fmt = [("phase", "u1")]
    for fid in field_ids:
        if fid in OXFORD_FIELDS:
            fmt.append(OXFORD_FIELDS[fid])
        elif 100 < fid <= 100 + n_edx:
            fmt.append((f"edx_{fid - 100}", "<f4"))
        else:
            raise MicroSymError(f"{cpr}: unknown field id {fid} in [Fields]; cannot decode the .crc record layout")
    names = [n for n, _ in fmt]
    if not {"phi1", "Phi", "phi2"} <= set(names):
        raise MicroSymError(f"{cpr}: [Fields] lists no Euler angles (field ids 3, 4, 5)")
    dtype = np.dtype(fmt)
    expected = nx * ny * dtype.itemsize
    size = crc.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than expected"
        raise MicroSymError(
            f"{crc}: {what}: {size} bytes, header says {nx} x {ny} points x {dtype.itemsize} bytes = {expected}"
        )
    rec = np.fromfile(crc, dtype=dtype).reshape(ny, nx)
    phases = []
    for i in range(n_phases):
        sec = parser[f"Phase{i + 1}"] if parser.has_section(f"Phase{i + 1}") else {}
        laue = _laue_group(sec.get("LaueGroup", ""), cpr, f"[Phase{i + 1}] LaueGroup")
        phases.append({"name": sec.get("StructureName", f"phase {i + 1}"), "laue_group": laue,
                       "symmetry": LAUE_SYMMETRY.get(laue, f"laue {laue}")})
    euler = np.rad2deg(np.stack([rec["phi1"], rec["Phi"], rec["phi2"]]).astype(np.float64))
    phase = rec["phase"].astype(np.int32)
    extra = {n: rec[n] for n in names if n not in ("phase", "phi1", "Phi", "phi2")}
    return _finish(crc, euler, phase, phase > 0, step, phases, extra)


# ----------------------------------------------------------------------------------- Oxford ctf


def read_ctf(path) -> EBSDMap:
    """Read an Oxford Channel Text File (``.ctf``): tab-separated header, then one line per point.

    Columns are named by the header line starting with ``Phase`` (``Phase X Y Bands Error Euler1
    Euler2 Euler3 MAD BC BS``); Euler angles in degrees; phase 0 = not indexed.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines or not lines[0].startswith("Channel Text File"):
        raise MicroSymError(f"{path}: not an Oxford .ctf file (first line is not 'Channel Text File')")
    head = {}
    phases = []
    i = 1
    while i < len(lines):
        parts = lines[i].rstrip("\r\n").split("\t")
        key = parts[0].strip()
        if key == "Phases":
            try:
                n = int(parts[1])
            except (IndexError, ValueError):
                raise MicroSymError(f"{path}: line {i + 1}: bad 'Phases' count") from None
            for j in range(n):
                cols = lines[i + 1 + j].rstrip("\r\n").split("\t") if i + 1 + j < len(lines) else []
                laue = _laue_group(cols[3] if len(cols) > 3 else "", path, f"line {i + 2 + j}: Laue group")
                phases.append({"name": cols[2] if len(cols) > 2 else f"phase {j + 1}", "laue_group": laue,
                                "symmetry": LAUE_SYMMETRY.get(laue, f"laue {laue}")})
            i += 1 + n
            continue
        if key == "Phase" and len(parts) > 3:
            columns = [c.strip() for c in parts]
            i += 1
            break
        if len(parts) > 1:
            head[key] = parts[1].strip()
        i += 1
    else:
        raise MicroSymError(f"{path}: no column header line ('Phase\\tX\\tY...') found")
    try:
        nx, ny = int(head["XCells"]), int(head["YCells"])
        step = (float(head.get("YStep", head["XStep"])), float(head["XStep"]))
    except (KeyError, ValueError) as err:
        raise MicroSymError(f"{path}: header lacks a valid {err} entry") from None
    _check_step(path, step, "XStep/YStep")
    need = ["Phase", "Euler1", "Euler2", "Euler3"]
    missing = [c for c in need if c not in columns]
    if missing:
        raise MicroSymError(f"{path}: data columns lack {', '.join(missing)}")
    table = _parse_table(path, lines[i:], len(columns), nx * ny, first_line=i + 1)
    col = {c: table[:, k].reshape(ny, nx) for k, c in enumerate(columns)}
    euler = np.stack([col["Euler1"], col["Euler2"], col["Euler3"]])
    phase = np.rint(col["Phase"]).astype(np.int32)
    extra = {c: col[c] for c in columns if c not in need}
    return _finish(path, euler, phase, phase > 0, step, phases, extra)


# -------------------------------------------------------------------------------------- TSL ang


def read_ang(path, *, tsl_to_oxford: bool = True) -> EBSDMap:
    """Read an EDAX/TSL ``.ang`` file: ``#`` header, then ``φ1 Φ φ2 x y IQ CI phase ...`` per line.

    Euler angles are in radians. Only square grids (``# GRID: SqrGrid``) are supported. Points with
    CI < 0 or the Euler marker 4π are non-indexed. The phase column is converted to 1-based ids
    (single-phase files write 0 for every point, indexed or not).
    """
    path = Path(path)
    lines = _read_lines(path)
    head, phases, n_head = {}, [], 0
    for n_head, line in enumerate(lines):
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body:
            continue
        key, _, value = body.partition(":") if ":" in body.split()[0] else (body.split()[0], "", " ".join(body.split()[1:]))
        key = key.strip()
        value = value.strip()
        if key == "Phase":
            phases.append({"name": f"phase {value}", "laue_group": None, "symmetry": "cubic"})
        elif key == "MaterialName" and phases:
            phases[-1]["name"] = value
        elif key == "Symmetry" and phases:
            phases[-1]["symmetry"] = {"43": "cubic", "m3m": "cubic", "62": "hexagonal", "6/mmm": "hexagonal"}.get(
                value, f"tsl {value}")
        else:
            head[key] = value
    else:
        n_head = len(lines)
    if "NCOLS_ODD" not in head or "NROWS" not in head or "XSTEP" not in head:
        raise MicroSymError(f"{path}: not an EDAX/TSL .ang file (header lacks NCOLS_ODD/NROWS/XSTEP)")
    if head.get("GRID", "SqrGrid") != "SqrGrid":
        raise MicroSymError(f"{path}: grid '{head['GRID']}' not supported (only SqrGrid)")
    try:
        nx, ny = int(head["NCOLS_ODD"]), int(head["NROWS"])
        step = (float(head.get("YSTEP", head["XSTEP"])), float(head["XSTEP"]))
    except ValueError:
        raise MicroSymError(f"{path}: bad NCOLS_ODD/NROWS/XSTEP in header") from None
    _check_step(path, step, "XSTEP/YSTEP")
    data_lines = lines[n_head:]
    ncol = len(data_lines[0].split()) if data_lines else 0
    if ncol < 8:
        raise MicroSymError(f"{path}: data lines have {ncol} columns; .ang needs at least 8 (φ1 Φ φ2 x y IQ CI phase)")
    table = _parse_table(path, data_lines, ncol, nx * ny, first_line=n_head + 1)
    col = table.T.reshape(ncol, ny, nx)
    rad = col[:3].astype(np.float64)
    ci = col[6]
    marker = np.isclose(rad, 4 * np.pi, atol=1e-3).all(axis=0)
    indexed = (ci >= 0) & ~marker
    euler = np.rad2deg(rad)
    euler[:, ~indexed] = 0.0
    # Checked before the TSL -> Oxford shift, whose modulo would wrap any φ1 into range.
    if np.isfinite(euler[0, indexed]).all() and (np.abs(euler[0, indexed]) > 360.0 + _ANGLE_SLACK_DEG).any():
        found = float(rad[0][indexed][np.abs(euler[0, indexed]) > 360.0 + _ANGLE_SLACK_DEG][0])
        raise MicroSymError(f"{path}: Euler angle phi1 out of range (found {found:.4g} rad, allowed 0..2π)")
    if tsl_to_oxford:
        euler[0] = np.mod(euler[0] - 90.0, 360.0)
    phase_col = np.rint(col[7]).astype(np.int32)
    phase = np.where(indexed, np.maximum(phase_col, 0) + (1 if phase_col.min() == 0 else 0), 0).astype(np.int32)
    extra = {"iq": col[5], "ci": ci}
    if ncol > 9:
        extra["fit"] = col[9]
    return _finish(path, euler, phase, indexed, step, phases or [{"name": "phase 1", "laue_group": None,
                                                                  "symmetry": "cubic"}], extra)


# ------------------------------------------------------------------------------------- helpers


def _laue_group(value, path, what: str) -> int:
    """Oxford Laue group id from a header entry: an id (1-11) or a Hermann-Mauguin symbol; empty: 11.

    Other whole numbers are kept (the phase's symmetry is then unsupported, which matters only if it is
    used); anything else is a one-line error.
    """
    text = str(value).strip()
    if not text:
        return 11  # the header omits it: Oxford's default phase is cubic
    key = text.lower().replace(" ", "").replace("−", "-")
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is not None and (1 <= number <= 11 or key not in LAUE_SYMBOLS):
        return number
    if key in LAUE_SYMBOLS:
        return LAUE_SYMBOLS[key]
    raise MicroSymError(f"{path}: {what} '{text}' is neither a Laue group id (1-11) nor a symbol such as m-3m "
                        "or 6/mmm")


def _check_step(path, step, what: str) -> None:
    """Grid steps must be finite and positive (they scale every size and length in the output)."""
    if not all(np.isfinite(s) and s > 0 for s in step):
        shown = ", ".join(f"{s:g}" for s in step)
        raise MicroSymError(f"{path}: grid step {what} must be a finite positive number, got {shown}")


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="latin-1") as f:  # headers hold µ and Å in legacy encodings
            return f.read().splitlines()
    except OSError as err:
        raise MicroSymError(f"{path}: cannot read ({err.strerror})") from None


def _parse_table(path: Path, lines, ncol: int, npoints: int, first_line: int):
    body = [ln for ln in lines if ln.strip()]
    if len(body) != npoints:
        what = "truncated" if len(body) < npoints else "has extra lines"
        raise MicroSymError(f"{path}: {what}: {len(body)} data lines, header grid says {npoints} points")
    try:
        table = np.loadtxt(io.StringIO("\n".join(body)), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise MicroSymError(f"{path}: malformed data line after line {first_line} ({str(err).splitlines()[0]})") from None
    if table.shape[1] < ncol:
        raise MicroSymError(f"{path}: data lines have {table.shape[1]} columns, expected {ncol}")
    return table[:, :ncol]


def _finish(path, euler, phase, indexed, step, phases, extra) -> EBSDMap:
    """Range checks, quaternions, mask: shared by all readers."""
    euler = np.asarray(euler, dtype=np.float64)
    if not np.isfinite(euler[:, indexed]).all():
        raise MicroSymError(f"{path}: non-finite Euler angles at indexed points")
    lim = np.array([360.0, 180.0, 360.0]) + _ANGLE_SLACK_DEG
    e = euler[:, indexed]
    bad = (e < -_ANGLE_SLACK_DEG) | (e > lim[:, None])
    if bad.any():
        k = int(np.argmax(bad.any(axis=1)))
        name = ("phi1", "Phi", "phi2")[k]
        raise MicroSymError(
            f"{path}: Euler angle {name} out of range at {int(bad[k].sum())} points "
            f"(found {float(e[k][bad[k]][0]):.4g}°, allowed 0..{lim[k] - _ANGLE_SLACK_DEG:g}°)"
        )
    if not indexed.any():
        raise MicroSymError(f"{path}: no indexed points (every point has phase 0 / is non-indexed)")
    ids = np.unique(np.asarray(phase)[indexed])
    undeclared = ids[(ids < 1) | (ids > len(phases))]
    if undeclared.size:
        raise MicroSymError(f"{path}: phase id {int(undeclared[0])} is used by "
                            f"{int(np.isin(np.asarray(phase)[indexed], undeclared).sum())} points but the header "
                            f"declares phases 1..{len(phases)}")
    q = np.moveaxis(euler_bunge_to_quat(euler[0], euler[1], euler[2]), -1, 0)
    q[:, ~indexed] = np.nan
    _check_step(path, step, "(y, x)")
    return EBSDMap(
        quaternions=q,
        euler=euler,
        phase=np.asarray(phase, np.int32),
        mask=np.asarray(indexed, bool),
        step=tuple(float(s) for s in step),
        unit="µm",
        phases=phases,
        path=Path(path),
        extra=extra,
    )


# ------------------------------------------------------------------------------------- writers
#
# Both writers take the map as consecutive bands of whole rows (``write_ctf_bands``, ``write_ang_bands``),
# so a map larger than memory streams through; ``write_ctf`` / ``write_ang`` write one band, the whole map.
# Optional per-point columns come from ``EBSDMap.extra`` under the names the readers give them
# (``.ctf``: ``Bands``, ``MAD``, ``BC``, ``BS``; ``.ang``: ``iq``, ``fit``); absent ones are written as 0.

#: Column of a ``.ctf`` data line -> the ``extra`` key that fills it (others are 0).
_CTF_EXTRA = {"Bands": 3, "MAD": 8, "BC": 9, "BS": 10}
#: Column of an ``.ang`` data line -> the ``extra`` key that fills it (others are 0).
_ANG_EXTRA = {"iq": 5, "fit": 9}


def _step_decimals(step, least: int) -> int:
    """Decimals that keep the grid steps (and so every X/Y coordinate, a multiple of them) exact to 1e-6
    relative: ``least`` for usual steps (0.5 µm), more for small ones (a 0.05 nm pixel is 5e-5 µm, which
    4 decimals would write as 0, an invalid step)."""
    for d in range(least, 13):
        if all(abs(round(s, d) - s) <= 1e-6 * abs(s) for s in step):
            return d
    return 12


def _extra_columns(band: EBSDMap, columns: dict, cols: np.ndarray) -> None:
    """Fill ``cols`` (``(rows, x, n)``) from the band's ``extra`` arrays named in ``columns``."""
    for key, k in columns.items():
        value = band.extra.get(key)
        if value is not None and np.shape(value) == band.shape:
            cols[..., k] = value


def write_ctf(path, ebsd: EBSDMap) -> Path:
    """Write a map as an Oxford ``.ctf`` text file (Euler angles in degrees, 4 decimals).

    Used to exchange maps with other tools and to test :func:`read_ctf`.
    """
    return write_ctf_bands(path, ebsd.shape, ebsd.step, ebsd.phases, [ebsd])


def write_ctf_bands(path, shape, step, phases, bands) -> Path:
    """:func:`write_ctf` from consecutive bands of rows: ``bands`` yields :class:`EBSDMap` objects holding
    whole rows, top to bottom, ``shape[0]`` rows in all (their ``quaternions`` are not used)."""
    path = Path(path)
    ny, nx = shape
    d = _step_decimals(step, 4)
    out = ["Channel Text File", "Prj\tmicro_sym export", "Author\tmicro_sym", "JobMode\tGrid",
           f"XCells\t{nx}", f"YCells\t{ny}", f"XStep\t{step[1]:.{d}f}", f"YStep\t{step[0]:.{d}f}",
           "AcqE1\t0.0000", "AcqE2\t0.0000", "AcqE3\t0.0000",
           "Euler angles refer to Sample Coordinate system (CS0)!\tMag\t0\tCoverage\t100\tDevice\t0\tKV\t0",
           f"Phases\t{len(phases)}"]
    for ph in phases:
        laue = ph.get("laue_group") or (11 if ph.get("symmetry") == "cubic" else 9)
        out.append(f"1.0000;1.0000;1.0000\t90.0000;90.0000;90.0000\t{ph['name']}\t{laue}\t0")
    out.append("Phase\tX\tY\tBands\tError\tEuler1\tEuler2\tEuler3\tMAD\tBC\tBS")
    fmt = ["%d", f"%.{d}f", f"%.{d}f", "%d", "%d", "%.4f", "%.4f", "%.4f", "%.4f", "%d", "%d"]

    def lines(band: EBSDMap, row0: int) -> str:
        rows = band.shape[0]
        yy, xx = np.mgrid[row0:row0 + rows, 0:nx]
        e = np.where(band.mask, band.euler, 0.0)
        cols = np.stack([band.phase, xx * step[1], yy * step[0], np.zeros_like(xx),
                         np.where(band.mask, 0, 3), e[0], e[1], e[2], np.zeros_like(xx), np.zeros_like(xx),
                         np.zeros_like(xx)], -1).astype(np.float64)
        _extra_columns(band, _CTF_EXTRA, cols)
        buf = io.StringIO()
        np.savetxt(buf, cols.reshape(-1, 11), fmt=fmt, delimiter="\t")
        return buf.getvalue()

    return _write_text(path, "\n".join(out) + "\n", bands, lines, shape)


def write_ang(path, ebsd: EBSDMap, *, oxford_to_tsl: bool = True) -> Path:
    """Write a map as an EDAX/TSL ``.ang`` text file (radians; φ1 + 90° into the TSL frame)."""
    return write_ang_bands(path, ebsd.shape, ebsd.step, ebsd.phases, [ebsd], oxford_to_tsl=oxford_to_tsl)


def write_ang_bands(path, shape, step, phases, bands, *, oxford_to_tsl: bool = True) -> Path:
    """:func:`write_ang` from consecutive bands of rows (as :func:`write_ctf_bands`)."""
    path = Path(path)
    ny, nx = shape
    sym = {"cubic": "43", "hexagonal": "62"}
    d_step, d_xy = _step_decimals(step, 6), _step_decimals(step, 5)
    out = ["# TEM_PIXperUM          1.000000", "# x-star                0.5", "# y-star                0.5",
           "# z-star                0.5", "# WorkingDistance       15.0", "#"]
    for i, ph in enumerate(phases, 1):
        out += [f"# Phase {i}", f"# MaterialName  \t{ph['name']}", f"# Symmetry              {sym.get(ph['symmetry'], '43')}",
                "# LatticeConstants      1.000 1.000 1.000  90.000  90.000  90.000", "#"]
    out += ["# GRID: SqrGrid", f"# XSTEP: {step[1]:.{d_step}f}", f"# YSTEP: {step[0]:.{d_step}f}",
            f"# NCOLS_ODD: {nx}", f"# NCOLS_EVEN: {nx}", f"# NROWS: {ny}", "#", "# OPERATOR: micro_sym", "#"]
    fmt = ["%.6f"] * 3 + [f"%.{d_xy}f", f"%.{d_xy}f", "%.1f", "%.3f", "%d", "%.1f", "%.3f"]

    def lines(band: EBSDMap, row0: int) -> str:
        rows = band.shape[0]
        e = band.euler.copy()
        if oxford_to_tsl:
            e[0] = np.mod(e[0] + 90.0, 360.0)
        rad = np.deg2rad(e)
        rad[:, ~band.mask] = 4 * np.pi
        yy, xx = np.mgrid[row0:row0 + rows, 0:nx]
        ci = np.where(band.mask, 1.0, -1.0)
        ph = np.where(band.mask, np.maximum(band.phase - 1, 0), 0)
        cols = np.stack([rad[0], rad[1], rad[2], xx * step[1], yy * step[0], np.zeros_like(ci), ci, ph,
                         np.zeros_like(ci), np.zeros_like(ci)], -1)
        _extra_columns(band, _ANG_EXTRA, cols)
        buf = io.StringIO()
        np.savetxt(buf, cols.reshape(-1, 10), fmt=fmt, delimiter=" ")
        return buf.getvalue()

    return _write_text(path, "\n".join(out) + "\n", bands, lines, shape)


def _write_text(path: Path, header: str, bands, lines, shape) -> Path:
    """Header, then each band's data lines; checks that the bands add up to the header's grid."""
    row0 = 0
    with open(path, "w", encoding="latin-1", newline="\n") as f:
        f.write(header)
        for band in bands:
            if band.shape[1] != shape[1]:
                raise ValueError(f"band of {band.shape[1]} columns in a map of {shape[1]}")
            f.write(lines(band, row0))
            row0 += band.shape[0]
    if row0 != shape[0]:
        raise ValueError(f"bands hold {row0} rows, the header says {shape[0]}")
    return path
