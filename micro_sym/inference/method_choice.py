"""``--method auto``: per input, the classical filter bank where it beats the network, else the network.

Before segmenting a 2D input, :class:`AutoMethod` measures its lattice once
(:func:`micro_sym.classical.measure_lattice`, at most 16 Welch tiles read lazily, so the choice costs
little even for huge inputs): the family, the period and the signal-to-noise ratio of the lattice
fringes (the first ring of the power spectrum over the white shot-noise floor, dB; dose and blur lower
it, grain size does not). Each lattice family has its network: the square robust-2d, and for a
hexagonal lattice atoms-2d-hex (:data:`AUTO_MODELS_BY_LATTICE`, loaded only when an input needs it);
with ``--model`` only that model's lattice has one. A lattice no network maps runs through the
classical method on that lattice. So does a very noisy micrograph (2-3 counts/px),
where the networks fail and the training-free filter bank still finds grains
(``bench/studies/contest.py``): below :data:`CLASSICAL_BELOW_DB`. Everything else runs through the
network (at its training period, :mod:`.rescale`).

The threshold comes from ``python bench/provenance/calibrate_method_choice.py`` (calibration seeds, disjoint from
the contest's held-out images): per image of every contest condition it scores both methods and picks
the threshold that maximizes the mean grain F1 of the choice (ties within half a point: the widest
margin). With robust-2d and the seeded grain rule of network maps (:mod:`micro_sym.grains.rules`)
that is 1.13 dB, between the 2 and 3 counts/px images: 2 counts/px goes to the classical method,
3 counts/px and everything above to the network (``bench/results/method_choice.json``; the scores
are in docs/results.md). The default-2d model, trained on clean images only, would need a far
higher threshold, so auto runs robust-2d unless a model is given (the threshold is the robust-2d one
either way).

The choice, its reason, the measurement and the threshold are recorded in the run manifest
(``method.auto``); a resumed run reuses the recorded choice. 3D inputs always run the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import SQUARE
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Fringe SNR (dB) below which the classical method segments the input (calibrated, see above).
CLASSICAL_BELOW_DB = 1.13
#: The network auto runs when no model is given (the one the threshold was calibrated for).
AUTO_MODEL = "robust-2d"
#: The networks auto runs, when no model is given, on the lattices :data:`AUTO_MODEL` does not map.
AUTO_MODELS_BY_LATTICE = {"hexagonal": "atoms-2d-hex"}
#: On an image that measures as one set of fringes, auto runs this network beside :data:`AUTO_MODEL` and
#: fuses their grains (:mod:`.fusion`), when no model is given.
AUTO_FRINGES_MODEL = "fringes-2d"
#: A bundled network for each lattice family (what an error about the wrong family suggests).
NETWORK_FOR_LATTICE = {"square": AUTO_MODEL, **AUTO_MODELS_BY_LATTICE}


@dataclass(frozen=True)
class AutoMethod:
    """Chooses, per input, between a network and the classical method.

    Parameters
    ----------
    network : Network
        Runs when the image's lattice is one it maps and the fringe SNR is at least
        ``classical_below_db`` (and for 3D inputs).
    other_networks : dict, optional
        Lattice family -> ``(model name, loader)`` of the network for that lattice (e.g. hexagonal);
        the loader (no arguments, returns a Network) runs once, when an input first needs it.
    classical_below_db : float
        Threshold in dB.
    lattice, period : optional
        The user's lattice (``--lattice``) and lattice constant (``--period``) instead of the measured ones.
    fringes_network : tuple, optional
        ``(model name, loader)`` of a network that maps one set of fringes: on an image measured as
        fringes (and no ``--lattice``) it runs beside ``network`` and the two maps are fused
        (:mod:`.fusion`); the record says so as ``fused_with``.
    """

    network: object
    classical_below_db: float = CLASSICAL_BELOW_DB
    lattice: str | None = None
    period: float | None = None
    other_networks: dict = field(default_factory=dict)
    fringes_network: tuple | None = None

    def __post_init__(self):
        loaders = {lat: (name, cache(load)) for lat, (name, load) in self.other_networks.items()}
        object.__setattr__(self, "other_networks", loaders)
        if self.fringes_network:
            name, load = self.fringes_network
            object.__setattr__(self, "fringes_network", (name, cache(load)))

    @property
    def network_lattice(self) -> str:
        return find_lattice(self.network.k, ndim=2, default=SQUARE).name

    def network_for(self, lattice: str):
        """The network that maps ``lattice`` (loaded on first use), or None."""
        if lattice == self.network_lattice:
            return self.network
        return self.other_networks[lattice][1]() if lattice in self.other_networks else None

    def fused_network(self):
        """The fringes network a record's ``fused_with`` names (loaded on first use)."""
        return self.fringes_network[1]()

    def choose(self, img, *, previous: dict | None = None, workers: int = 1):
        """``(method, record)`` for one opened input: the network or a :class:`~.classical.ClassicalMethod`.

        The input's lattice is measured once (:func:`micro_sym.classical.measure_lattice`): a lattice no
        network maps goes to the classical method on that lattice, as does a fringe SNR below the
        threshold; else the network for that lattice runs. ``record`` (for the manifest) holds ``chose``,
        ``fringe_snr_db``, ``classical_below_db``, ``reason`` and the ``measured`` lattice; a previous run's
        record (``previous`` = its manifest) is reused, so a resume never switches method.

        Raises
        ------
        MicroSymError
            A 2D input with no measurable lattice fringes (neither method can map it; ``--method
            network`` forces the network).
        """
        from micro_sym.inference.classical import ClassicalMethod

        net = self.network
        if img.ndim != 2 or net.ndim != 2:
            return net, {"chose": "network", "fringe_snr_db": None, "classical_below_db": self.classical_below_db,
                         "reason": "3D input: the classical method is 2D only"}
        old = ((previous or {}).get("method") or {}).get("auto")
        if old and old.get("chose") in ("network", "classical"):
            record = dict(old)
        else:
            try:
                record = self.decide(img.data, where=str(img.path), workers=workers)
            except MicroSymError:
                raise
            except Exception as err:  # a damaged chunk among the sampled tiles: name it
                from micro_sym.io.images import locate_bad_chunk

                whole = tuple(slice(0, n) for n in img.data.shape)
                raise MicroSymError(f"{img.path}: {locate_bad_chunk(img, whole, err)}") from None
        if record["chose"] == "network":
            return self.network_for(record["lattice"]), record
        # On resume the classical method takes its period from the manifest.
        period = None if old else record.get("period_px")
        return ClassicalMethod(lattice=record["lattice"], period=period,
                               period_source="given" if self.period else "estimated"), record

    def decide(self, image, *, where: str = "image", workers: int = 1) -> dict:
        """The record of :meth:`choose` for a 2D array (or lazy array): measure its lattice, then choose."""
        return self._decide(self._measure(image, where, workers))

    def _decide(self, measured) -> dict:
        net_lattice = self.network_lattice
        names = {net_lattice: self.network.name} | {lat: name for lat, (name, _) in self.other_networks.items()}
        # Fringes (one set of planes) go to the fringes network where there is one, else they are mapped
        # on the network's lattice.
        lattice = self.lattice or measured.family(fringes="fringes" if "fringes" in names else net_lattice)
        snr = float(measured.snr_db)
        record = {"fringe_snr_db": round(snr, 3), "classical_below_db": self.classical_below_db, "lattice": lattice,
                  "measured": measured.as_dict()}
        if lattice not in names:
            mapped = " or ".join(sorted(names))
            record |= {"chose": "classical", "reason": f"{lattice} lattice; the network maps {mapped} only"}
        elif snr < self.classical_below_db:
            record |= {"chose": "classical", "reason": "fringe SNR below the threshold"}
        else:
            record |= {"chose": "network", "network": names[lattice], "reason": "fringe SNR at or above the threshold"}
            if self.fringes_network and not self.lattice and measured.family(fringes="fringes") == "fringes":
                record["fused_with"] = self.fringes_network[0]
        from micro_sym.classical import lattice_constant

        # The image's lattice constant in ``lattice``'s convention: the classical method's period, and
        # what the network is resampled by.
        record["period_px"] = self.period or lattice_constant(measured.ring_frequency, lattice)
        return record

    @staticmethod
    def _measure(image, where: str, workers: int):
        """:func:`micro_sym.classical.measure_lattice` of a (lazily read) image."""
        import dask

        from micro_sym.classical import measure_lattice

        try:
            # Local threads even under a distributed Client: the input's store need not be serializable.
            with dask.config.set(scheduler="threads"):
                return measure_lattice(image, workers=max(1, int(workers)))
        except MicroSymError as err:
            raise MicroSymError(f"{where}: {str(err).removeprefix('image: ')}; --method auto needs them to choose, "
                                f"--method network runs the network anyway") from None


def auto_segment(image, *, model=None, threshold: float = 5.0, classical_below_db: float = CLASSICAL_BELOW_DB) -> dict:
    """In-memory ``--method auto`` for one 2D image: the maps and grains of the chosen method.

    ``model``: a loaded 2D model (default: :data:`AUTO_MODEL`, exported, and on the other lattices
    :data:`AUTO_MODELS_BY_LATTICE`), run on the image resampled to its training period. The classical
    branch is the whole-image :func:`micro_sym.classical.classical_segment` (with its boundary
    closing, which the block engine cannot apply). The result has the keys of
    :func:`micro_sym.inference.whole_image.segment_image` plus ``method`` (the record of :meth:`AutoMethod.choose`).
    """
    from micro_sym.classical import classical_segment
    from micro_sym.inference.network import as_network
    from micro_sym.inference.whole_image import segment_image
    from micro_sym.models import load_model

    others = {}
    if model is None:
        model = load_model(AUTO_MODEL, export=True)
        others = {lat: (name, cache(lambda name=name: load_model(name, export=True)))
                  for lat, name in AUTO_MODELS_BY_LATTICE.items()}
    auto = AutoMethod(as_network(model, export=False), classical_below_db=classical_below_db,
                      other_networks={lat: (name, lambda load=load: as_network(load(), export=False))
                                      for lat, (name, load) in others.items()})
    record = auto.decide(image)
    if record["chose"] == "classical":
        out = classical_segment(image, lattice=record["lattice"], period=record["period_px"], threshold=threshold)
    else:
        chosen = others[record["lattice"]][1]() if record["lattice"] in others else model
        out = segment_image(chosen, image, threshold=threshold, period=record["period_px"])  # measured once
    out["method"] = record
    return out
