"""Chunk-aligned OME-Zarr output, atomic per-block markers and the run manifest (docs/design.md §1, §5).

Layout of one input ``NAME`` under ``OUT``::

    OUT/NAME.zarr/            OME-Zarr (NGFF 0.5) image group (docs/design.md §1.7):
        boundary/0, orientation/0 maps, each an NGFF image of its own
        labels/grains/0       grain ids, an NGFF label image
    OUT/NAME_grains.csv       one row per grain (written last)
    OUT/.NAME.run/            run state (kept small; scratch removed when the input completes)
        manifest.json         input fingerprint, weights hash, block/halo, code version, status
        labels.zarr           scratch: per-block local grain labels (uint32)
        field.zarr            scratch: a 3D network's unit harmonic field (float32), read by the grain passes
        flooded.zarr          scratch: a 2D network's grains before those showing no lattice are left out
        blocks/ID.npz         per-block statistics and face planes (pass 1 result)
        final/ID.npz          per-block statistics of the final grains (seeded rule, pass 3 result)
        lattice/sums.npz      each final grain's lattice sums (2D, where the lattice ring is known)
        grain_sums.npz        those sums of the output's grains, as renumbered (kept)
        done1/ID, done2/ID    atomic markers: pass 1 (maps + local labels), pass 3 (grains) done
        done3/ID              atomic marker: the block's grains written from flooded.zarr, renumbered

    OUT/.NAME.lock            locked (``flock``) by the run writing NAME; the file stays when it is free

A block's data is written first, then its marker is created atomically (write + ``os.replace``), so
a marker always means "this block's chunks are complete". Completion is decided from markers only:
an all-background chunk leaves no file, so chunk files cannot tell.

One run at a time per output (:class:`OutputLock`): a second run on the same input and ``--out``
would resume the same markers and scratch, and the first to finish deletes scratch labels the
other still reads, leaving an output marked complete but wrong.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError

MANIFEST_VERSION = 1
# Keys that must match for a run to be resumed (everything that changes the output bytes).
IDENTITY_KEYS = ("input", "model", "shape", "ndim", "block", "chunk", "halo", "stride", "threshold", "grain_rule",
                 "min_size", "boundary_threshold", "orientation_map", "split_grains", "code_version")
#: The maps of ``NAME.zarr``; :func:`open_array` finds each in the OME-Zarr layout (docs/design.md §1.7).
OUTPUT_MAPS = ("boundary", "orientation", "grains")


def os_error(path, err: OSError, doing: str) -> MicroSymError:
    """One-line user error for a filesystem failure (permission, disk full, ...)."""
    what = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
            errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded"}.get(err.errno, err.strerror or str(err))
    return MicroSymError(f"{path}: cannot {doing} ({what})")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that it either exists complete or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise os_error(path, err, "write") from None


class RunState:
    """Markers, per-block results and the manifest of one input's run directory."""

    def __init__(self, out_dir: Path, name: str):
        self.out_dir = Path(out_dir)
        self.name = name
        self.root = self.out_dir / f".{name}.run"
        self.zarr_path = self.out_dir / f"{name}.zarr"
        self.csv_path = self.out_dir / f"{name}_grains.csv"
        self.labels_path = self.root / "labels.zarr"
        self.field_path = self.root / "field.zarr"
        self.flooded_path = self.root / "flooded.zarr"

    # -- manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise MicroSymError(f"{self.manifest_path}: unreadable run manifest; delete {self.root} to start over") from None

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def check_compatible(self, manifest: dict) -> str:
        """``"new"``, ``"resume"`` or ``"complete"``; raises if the output belongs to a different run.

        Without a manifest, an existing ``NAME.zarr`` or ``NAME_grains.csv`` is someone else's file
        (only a segment run writes the manifest, and it writes it before either output), so it is
        never replaced silently: the user chooses ``--overwrite`` or another ``--out``.
        """
        old = self.read_manifest()
        if old is None:
            for p in (self.zarr_path, self.csv_path):
                if p.exists():
                    raise MicroSymError(f"{p}: exists but was not written by a micro-sym segment run here; "
                                        f"choose another --out, or rerun with --overwrite to replace it")
            return "new"
        differ = [k for k in IDENTITY_KEYS if _canon(old.get(k)) != _canon(manifest.get(k))]
        if differ:
            raise MicroSymError(f"{self.zarr_path}: output of a different run (differs in {', '.join(differ)}); "
                                f"refusing to resume: rerun with --overwrite to start {self.name} afresh, "
                                f"or choose another --out")
        if old.get("status") == "complete" and self.zarr_path.exists() and self.csv_path.exists():
            return "complete"
        return "resume"

    # -- markers
    def marker(self, stage: str, block_id: str) -> Path:
        return self.root / stage / block_id

    def done(self, stage: str) -> set:
        d = self.root / stage
        return {p.name for p in d.iterdir() if not p.name.startswith(".")} if d.is_dir() else set()

    def mark(self, stage: str, block_id: str) -> None:
        atomic_write_bytes(self.marker(stage, block_id), b"")

    def save_block(self, block_id: str, arrays: dict, kind: str = "blocks") -> None:
        """Per-block arrays of pass 1 (``kind="blocks"``), of the seeded flood (``"final"``) or the grains'
        lattice sums (``"lattice"``)."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)  # uncompressed: np.load reads single members without the rest
        atomic_write_bytes(self.root / kind / f"{block_id}.npz", buf.getvalue())

    def load_block(self, block_id: str, kind: str = "blocks"):
        return np.load(self.root / kind / f"{block_id}.npz")

    def save_grain_sums(self, sums: dict) -> None:
        """The final grains' lattice sums (``grain_sums.npz``, kept with the manifest: a fused input
        reuses its fringes run's, :mod:`.fusion`, and a split input its run's for the grains it does not split)."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **sums)
        atomic_write_bytes(self.root / "grain_sums.npz", buf.getvalue())

    def load_grain_sums(self) -> dict:
        with np.load(self.root / "grain_sums.npz") as f:
            return dict(f)

    def prepare(self) -> None:
        try:
            for sub in ("done1", "done2", "done3", "blocks", "final", "lattice"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise os_error(self.out_dir, err, "create output directory") from None

    def remove_outputs(self) -> None:
        """Delete this input's outputs and run state (``--overwrite``: start the input afresh).

        Only the three paths that belong to ``NAME``; the lock file stays (the caller holds it).
        """
        try:
            for d in (self.zarr_path, self.root):
                if d.is_dir() and not d.is_symlink():
                    shutil.rmtree(d)
                elif d.exists() or d.is_symlink():
                    d.unlink()
            self.csv_path.unlink(missing_ok=True)
        except OSError as err:
            raise os_error(self.out_dir, err, f"remove the previous output of {self.name}") from None
        forget_arrays(self.zarr_path)
        forget_arrays(self.labels_path)
        forget_arrays(self.field_path)
        forget_arrays(self.flooded_path)

    def cleanup_scratch(self) -> None:
        """Drop scratch data of a completed input (keeps manifest and markers)."""
        shutil.rmtree(self.labels_path, ignore_errors=True)
        shutil.rmtree(self.field_path, ignore_errors=True)
        shutil.rmtree(self.flooded_path, ignore_errors=True)
        shutil.rmtree(self.root / "blocks", ignore_errors=True)
        shutil.rmtree(self.root / "final", ignore_errors=True)
        shutil.rmtree(self.root / "lattice", ignore_errors=True)
        shutil.rmtree(self.root / "split", ignore_errors=True)


class OutputLock:
    """Exclusive lock of one input's outputs under ``OUT``: ``OUT/.NAME.lock``, held for the whole run.

    ``fcntl.flock`` (``msvcrt.locking`` on Windows), taken without waiting: a second run on the same
    input fails at once with one line instead of interleaving with the first. The kernel drops the
    lock when its holder exits, however it exits, so a killed run never leaves a stale lock behind,
    and the file itself is kept: deleting it would let a later run lock a new file while an older
    one still holds the unlinked one.

    Examples
    --------
    >>> with OutputLock(out_dir, "a"):                # doctest: +SKIP
    ...     run()
    """

    def __init__(self, out_dir, name: str):
        self.out_dir = Path(out_dir)
        self.name = name
        self.path = self.out_dir / f".{name}.lock"
        self._fh = None

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`MicroSymError` naming the output and the lock file."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+b")
        except OSError as err:
            raise os_error(self.out_dir, err, f"create lock file {self.path.name}") from None
        try:
            _lock_nonblocking(fh)
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                # A file system without locks (some network and FUSE mounts): run unprotected rather
                # than refuse every run there.
                import warnings

                warnings.warn(f"{self.path}: file locks are not supported here; a second run on this output "
                              f"would not be detected", stacklevel=2)
                self._fh = fh
                return self
            fh.close()
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                raise os_error(self.path, err, "lock") from None
            raise MicroSymError(f"{self.name}: another micro-sym run is writing {self.out_dir / (self.name + '.zarr')} "
                                f"(lock file {self.path}{_holder(self.path)}); wait for it or choose another --out") from None
        # Who holds it: for the refusal message of a second run, and for a person looking at the file.
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {_hostname()}\n".encode())
            fh.flush()
        except OSError:
            pass
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            try:
                _unlock(self._fh)
            except OSError:  # never locked (no lock support) or already gone with the descriptor
                pass
            finally:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(path: Path) -> str:
    """``", held by pid N on HOST"`` from a lock file's text (advisory: reading it is allowed), or ``""``."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f", held by {text}" if text.startswith("pid ") and "\n" not in text and len(text) < 200 else ""


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _lock_nonblocking(fh) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock on the first byte does the same job
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fh) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _canon(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def read_chunks(write_unit) -> tuple:
    """Inner chunk of a write unit (a shard): half of it per axis where it splits evenly.

    The seeded grain rule's last pass reads each block's maps with a halo of a few points from its
    neighbours; zarr decodes whole chunks, so with chunk = block that read decoded 27 full blocks in
    3D (0.86 s per 146³ region of 4-channel float32); with 64³ chunks inside 128³ shards, 0.25 s,
    while writing whole shards costs the same (random data, ``bench/bench_seeded_parts.py``).
    """
    return tuple(c // 2 if c % 2 == 0 and c >= 32 else c for c in write_unit)


def _layout(write_unit, lead=()) -> dict:
    """``create_array`` keywords: shards of the write unit made of :func:`read_chunks` (or plain chunks)."""
    inner = read_chunks(write_unit)
    if inner == tuple(write_unit):
        return {"chunks": tuple(lead) + tuple(write_unit)}
    return {"chunks": tuple(lead) + inner, "shards": tuple(lead) + tuple(write_unit)}


def create_outputs(state: RunState, shape, ndim: int, chunk, *, pixel_size=None, unit=None,
                   field_channels: int | None = None, flooded: bool = False) -> None:
    """Create the empty output arrays (shard grid = write unit) if they do not exist yet.

    ``field_channels``: also the scratch array of a 3D network's unit harmonic field
    (:mod:`micro_sym.grains.field`), which the grain passes read in place of the orientation map.
    ``flooded``: also the scratch array of the flooded grains, before those showing no lattice are left
    out (the renumbering reads it, so a resumed renumbering never renumbers a block twice).

    NGFF 0.5 layout (docs/design.md §1.7, :func:`micro_sym.io.images.create_ngff_maps`): ``boundary/0``,
    ``orientation/0`` and ``labels/grains/0``, each in an image (label image) group of its own, the
    output group an image listing boundary and orientation. :func:`open_array` finds them by name.
    """
    import zarr

    from micro_sym.io.images import create_ngff_maps

    spatial = tuple(shape)
    try:
        root = zarr.open_group(str(state.zarr_path), mode="a", zarr_format=3)
        if any(isinstance(root.get(name), zarr.Array) for name in OUTPUT_MAPS):
            # Arrays at the top of the group: an output of an older micro_sym (flat layout).
            raise MicroSymError(f"{state.zarr_path}: written by an older micro-sym (arrays not in the OME-Zarr "
                                f"layout); rerun with --overwrite to start {state.name} afresh")
        specs = {"boundary": ((), "float32"), "orientation": ((4,) if ndim == 3 else (), "float32"),
                 "grains": ((), "uint32")}
        create_ngff_maps(root, {name: {"shape": lead + spatial, **_layout(chunk, lead), "dtype": dtype,
                                       "fill_value": float("nan") if dtype == "float32" else 0,
                                       "compressors": _compressor()}
                                for name, (lead, dtype) in specs.items()},
                         ndim, pixel_size=pixel_size, unit=unit)
        if not state.labels_path.exists():
            zarr.create_array(str(state.labels_path), shape=spatial, **_layout(chunk), dtype="uint32",
                              fill_value=0, zarr_format=3, compressors=_compressor())
        if flooded and not state.flooded_path.exists():
            zarr.create_array(str(state.flooded_path), shape=spatial, **_layout(chunk), dtype="uint32",
                              fill_value=0, zarr_format=3, compressors=_compressor())
        if field_channels and not state.field_path.exists():
            zarr.create_array(str(state.field_path), shape=(field_channels,) + spatial, **_layout(chunk, (field_channels,)),
                              dtype="float32", fill_value=float("nan"), zarr_format=3, compressors=_compressor())
    except OSError as err:
        raise os_error(state.out_dir, err, "create output") from None


def _compressor():
    """Blosc LZ4 with byte shuffle: ~3x faster to write than zarr's default zstd on float maps
    (compression took half the engine's per-block time outside the network), a standard Zarr codec."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


_ARRAYS: dict = {}

#: The codec pipeline of the arrays the engine writes and reads back (:func:`open_array`): zarrs-python's,
#: which encodes and decodes a region's chunks in Rust threads that do not hold the GIL. zarr's own
#: pipeline runs every chunk through one Python event loop, which two workers then wait on in turn
#: (docs/design.md §5). The files are standard Zarr v3 either way. None: zarr's configured pipeline.
CODEC_PIPELINE: str | None = "zarrs.ZarrsCodecPipeline"


def open_array(path, name: str | None = None):
    """A writable zarr array, opened once per process (tasks run many blocks), with :data:`CODEC_PIPELINE`.

    ``name``: one of :data:`OUTPUT_MAPS` (``boundary``, ``orientation``, ``grains``), found where
    :func:`create_outputs` put it (:func:`micro_sym.io.images.map_path`); without it ``path`` is the array.
    """
    import zarr

    key = (str(path), name)
    arr = _ARRAYS.get(key)
    if arr is None:
        if name is not None and name in OUTPUT_MAPS:
            from micro_sym.io.images import map_path

            name = map_path(name)
        arr = _with_pipeline(zarr.open_array(str(path) if name is None else f"{path}/{name}", mode="r+"))
        _ARRAYS[key] = arr
    return arr


def _with_pipeline(arr):
    """``arr`` reading and writing through :data:`CODEC_PIPELINE`. Set on the array, not through
    ``zarr.config``: that is process-wide, and worker threads open arrays (inputs too) side by side."""
    if not CODEC_PIPELINE:
        return arr
    import importlib

    module, _, name = CODEC_PIPELINE.rpartition(".")
    pipeline = getattr(importlib.import_module(module), name)
    async_array = arr.async_array
    # A frozen dataclass; zarr sets the field the same way when it makes the array.
    object.__setattr__(async_array, "codec_pipeline", pipeline.from_array_metadata_and_store(
        array_metadata=async_array.metadata, store=async_array.store_path.store))
    return arr


def forget_arrays(path) -> None:
    """Drop cached handles under ``path`` (after an output is finished or removed)."""
    for key in [k for k in _ARRAYS if k[0] == str(path)]:
        del _ARRAYS[key]
