"""``--method auto``: per input, the classical filter bank where it beats the network, else the network.

The bundled networks fail on very noisy micrographs (2-3 counts/px) where the training-free filter bank
still finds grains (``bench/studies/contest.py``). Before segmenting a 2D input, :class:`AutoMethod` measures the
signal-to-noise ratio of its lattice fringes, the first lattice ring of the power spectrum over the
white shot-noise floor (:func:`micro_sym.classical.fringe_snr`, dB; dose and blur lower it, grain size
does not), from at most 16 Welch tiles read lazily, so the choice costs little even for huge inputs.
Below :data:`CLASSICAL_BELOW_DB` the input runs through the classical method, otherwise through the
network.

The threshold comes from ``python bench/provenance/calibrate_method_choice.py`` (calibration seeds, disjoint from
the contest's held-out images): per image of every contest condition it scores both methods and picks
the threshold that maximizes the mean grain F1 of the choice (ties within half a point: the widest
margin). With robust-2d and the seeded grain rule of network maps (:mod:`micro_sym.grains.rules`)
that is 1.13 dB, between the 2 and 3 counts/px images: 2 counts/px goes to the classical method,
3 counts/px and everything above to the network (``bench/results/method_choice.json``; the scores
are in docs/results.md). The default-2d model, trained on clean images only, would need a far
higher threshold, so auto runs robust-2d unless a model is given (the threshold is the robust-2d one
either way).

The choice, the SNR and the threshold are recorded in the run manifest (``method.auto``); a
resumed run reuses the recorded choice. 3D inputs always run the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import SQUARE
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Fringe SNR (dB) below which the classical method segments the input (calibrated, see above).
CLASSICAL_BELOW_DB = 1.13
#: The network auto runs when no model is given (the one the threshold was calibrated for).
AUTO_MODEL = "robust-2d"


@dataclass(frozen=True)
class AutoMethod:
    """Chooses, per input, between a network and the classical method on the same lattice.

    Parameters
    ----------
    network : Network
        Runs when the fringe SNR is at least ``classical_below_db`` (and for 3D inputs).
    classical_below_db : float
        Threshold in dB.
    """

    network: object
    classical_below_db: float = CLASSICAL_BELOW_DB

    def choose(self, img, *, previous: dict | None = None, workers: int = 1):
        """``(method, record)`` for one opened input: the network or a :class:`~.classical.ClassicalMethod`.

        ``record`` (for the manifest) holds ``chose``, ``fringe_snr_db`` and ``classical_below_db``; a
        previous run's record (``previous`` = its manifest) is reused, so a resume never switches method.

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
        lattice = find_lattice(net.k, ndim=2, default=SQUARE).name
        old = ((previous or {}).get("method") or {}).get("auto")
        period = None  # on resume the classical method takes its period from the manifest
        if old and old.get("chose") in ("network", "classical"):
            record = dict(old)
        else:
            snr, period = self._snr(img, lattice, workers)
            chose = "classical" if snr < self.classical_below_db else "network"
            record = {"chose": chose, "fringe_snr_db": round(snr, 3), "classical_below_db": self.classical_below_db}
        if record["chose"] == "network":
            return net, record
        # The period comes from the same spectrum as the SNR, so the input is not sampled twice.
        return ClassicalMethod(lattice=lattice, period=period, period_source="estimated"), record

    @staticmethod
    def _snr(img, lattice: str, workers: int) -> tuple[float, float]:
        """:func:`micro_sym.classical.fringe_snr` of a lazily read input: ``(snr_db, period)``."""
        import dask

        from micro_sym.classical import fringe_snr

        try:
            # Local threads even under a distributed Client: the input's store need not be serializable.
            with dask.config.set(scheduler="threads"):
                return fringe_snr(img.data, lattice, workers=max(1, int(workers)))
        except MicroSymError as err:
            raise MicroSymError(f"{img.path}: {str(err).removeprefix('image: ')}; --method auto needs them to choose, "
                                f"--method network runs the network anyway") from None
        except Exception as err:  # a damaged chunk among the sampled tiles
            raise MicroSymError(f"{img.path}: cannot read the image to measure its lattice fringes "
                                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def auto_segment(image, *, model=None, threshold: float = 5.0, classical_below_db: float = CLASSICAL_BELOW_DB) -> dict:
    """In-memory ``--method auto`` for one 2D image: the maps and grains of the chosen method.

    ``model``: a loaded 2D model (default: :data:`AUTO_MODEL`, exported). The classical branch is the
    whole-image :func:`micro_sym.classical.classical_segment` (with its boundary closing, which the
    block engine cannot apply). The result has the keys of :func:`micro_sym.inference.whole_image.segment_image`
    plus ``method`` (the record of :meth:`AutoMethod.choose`).
    """
    from micro_sym.classical import classical_segment, fringe_snr
    from micro_sym.models import load_model
    from micro_sym.inference.whole_image import segment_image

    model = load_model(AUTO_MODEL, export=True) if model is None else model
    lattice = find_lattice(model.k, ndim=2, default=SQUARE).name
    snr, period = fringe_snr(image, lattice)
    chose = "classical" if snr < classical_below_db else "network"
    if chose == "classical":
        out = classical_segment(image, lattice=lattice, period=period, threshold=threshold)
    else:
        out = segment_image(model, image, threshold=threshold)
    out["method"] = {"chose": chose, "fringe_snr_db": round(snr, 3), "classical_below_db": classical_below_db}
    return out
