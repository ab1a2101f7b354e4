"""The lattices micro_sym maps, as objects: one :class:`Lattice` per crystal symmetry (docs/design.md §1.2-§1.3).

A lattice is named by a string wherever users and files meet it (``--lattice``, ``dataset.json``, run
manifests, model configs) and by its rotational order ``k`` inside models; :func:`lattice` turns either
into the one object, which carries what the code needs (``k``, ``ndim``, the angle ``period``).

>>> lattice("hexagonal").period
60.0
>>> lattice(4) is SQUARE, CUBIC.is_angle
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass

from micro_sym.errors import MicroSymError

__all__ = ["CUBIC", "FRINGES", "HEXAGONAL", "LATTICES", "SQUARE", "Lattice", "lattice"]


@dataclass(frozen=True)
class Lattice:
    """A crystal lattice as micro_sym maps it.

    Attributes
    ----------
    name : str
        ``"square"``, ``"hexagonal"``, ``"fringes"`` or ``"cubic"``: the name used by the CLI,
        ``dataset.json``, manifests and model configs. ``"fringes"`` is one set of lattice planes seen
        edge-on (a crystal off its zone axis, or planes finer than the resolution): the angle is that of
        the plane normal.
    k : int or None
        Rotational order of the 2D pattern (4 square, 6 hexagonal, 2 fringes): the in-plane angle is
        defined modulo ``360/k`` (docs/design.md §1.2). None for cubic, whose orientations are quaternions
        (point group 432, §1.3).
    ndim : int
        2 for in-plane angle maps of micrographs, 3 for quaternion maps of volumes.

    Examples
    --------
    >>> SQUARE.k, SQUARE.period, SQUARE.is_angle
    (4, 90.0, True)
    """

    name: str
    k: int | None
    ndim: int

    @property
    def is_angle(self) -> bool:
        """Orientations are one in-plane angle modulo :attr:`period` (2D lattices), not quaternions."""
        return self.k is not None

    @property
    def period(self) -> float:
        """Period of the in-plane angle in degrees, ``360/k`` (90 square, 60 hexagonal).

        Raises
        ------
        ValueError
            For cubic, whose orientations are quaternions.
        """
        if self.k is None:
            raise ValueError(f"{self.name} orientations are quaternions, not angles with a period")
        return 360.0 / self.k


SQUARE = Lattice("square", 4, 2)
HEXAGONAL = Lattice("hexagonal", 6, 2)
FRINGES = Lattice("fringes", 2, 2)
CUBIC = Lattice("cubic", None, 3)
#: Every lattice micro_sym maps, in the order error messages list them.
LATTICES = (SQUARE, HEXAGONAL, FRINGES, CUBIC)

_RAISE = object()


def lattice(name_or_k, *, ndim: int | None = None, where: str = "", what: str = "lattice", default=_RAISE):
    """The :class:`Lattice` of a name or of a 2D rotational order ``k``.

    Parameters
    ----------
    name_or_k : str, int or Lattice
        ``"square"``, ``"hexagonal"``, ``"fringes"`` or ``"cubic"`` (exact spelling), or ``k`` = 4, 6
        or 2; a :class:`Lattice` is returned as it is (after the ``ndim`` check).
    ndim : int, optional
        Accept only lattices of this dimension (2: square, hexagonal or fringes).
    where : str, optional
        Start of the error message: the file, option or parameter the value came from.
    what : str
        What the value is called in the error message.
    default : optional
        Returned instead of raising, for an unknown value or a lattice of another dimension.

    Returns
    -------
    Lattice

    Raises
    ------
    MicroSymError
        An unknown name or ``k``, or a lattice of another dimension than ``ndim`` (a one-line message).

    Examples
    --------
    >>> lattice("square").k, lattice(6).name
    (4, 'hexagonal')
    >>> lattice("cubic", ndim=2, where="model config")
    Traceback (most recent call last):
    ...
    micro_sym.errors.MicroSymError: model config: lattice 'cubic' is not a 2D lattice (expected square, hexagonal or fringes)
    >>> lattice("fcc", where="--lattice")
    Traceback (most recent call last):
    ...
    micro_sym.errors.MicroSymError: --lattice: unknown lattice 'fcc' (expected square, hexagonal, fringes or cubic)
    """
    allowed = [lat for lat in LATTICES if ndim is None or lat.ndim == ndim]
    if isinstance(name_or_k, Lattice):
        found = name_or_k
    elif isinstance(name_or_k, str):
        found = next((lat for lat in LATTICES if lat.name == name_or_k), None)
    else:
        found = next((lat for lat in LATTICES if lat.k is not None and lat.k == name_or_k), None)
    if found is not None and found in allowed:
        return found
    if default is not _RAISE:
        return default
    prefix = f"{where}: " if where else ""
    names = _or([lat.name for lat in allowed])
    if found is not None:
        raise MicroSymError(f"{prefix}{what} '{found.name}' is not a {ndim}D lattice (expected {names})")
    if isinstance(name_or_k, str):
        raise MicroSymError(f"{prefix}unknown {what} '{name_or_k}' (expected {names})")
    orders = _or([str(lat.k) for lat in allowed if lat.k is not None]) or names
    raise MicroSymError(f"{prefix}unknown {what} order k={name_or_k} (expected {orders})")


def _or(words: list) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)
