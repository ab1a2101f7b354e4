"""Generator parameters as pydantic models, loadable from YAML (``configs/synth_2d.yaml``, ``configs/synth_3d.yaml``).

Every field has a physically motivated default, so a YAML file only lists what it changes. A sample is
fully determined by (config, seed, index): the models are frozen and dumped into ``dataset.json``.

>>> cfg = Synth2DConfig(size=(256, 256))
>>> cfg.imaging.dose, cfg.lattice
(200.0, 'square')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micro_sym.config_files import read_yaml_mapping, validate_model


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt YAML key must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Microstructure(_Model):
    """Grain tessellation and the boundary population."""

    grain_size: float = Field(80.0, gt=2, description="mean equivalent-circle (2D) / sphere (3D) diameter of the tessellation cells, pixels")
    size_spread: float = Field(0.35, ge=0, le=1.5, description="log-normal sigma of the cell radii (power-diagram weights); 0 = nearly uniform equiaxed grains")
    relax_iterations: int = Field(2, ge=0, le=10, description="centroidal (Lloyd) relaxation steps: equiaxed grains, as after short grain growth")
    twin_fraction: float = Field(0.2, ge=0, le=1, description="fraction of cells given an annealing-twin band/slab")
    twin_width: tuple[float, float] = Field((0.15, 0.35), description="twin band width as a fraction of grain_size (min, max)")
    subgrain_fraction: float = Field(0.1, ge=0, le=1, description="fraction of cells only a few degrees from a neighbour (below the grain threshold: same grain)")
    subgrain_angle: tuple[float, float] = Field((1.0, 4.0), description="misorientation range of sub-grain boundaries, degrees")
    low_angle_fraction: float = Field(0.15, ge=0, le=1, description="fraction of cells given a low-angle boundary (above the threshold) to a neighbour")
    low_angle_angle: tuple[float, float] = Field((6.0, 14.0), description="misorientation range of low-angle grain boundaries, degrees")
    threshold_deg: float = Field(5.0, gt=0, description="grain rule (docs/design.md §3): neighbouring cells closer than this are one grain")
    disorder_width: float = Field(1.5, ge=0, description="half-width of the disordered layer at general high-angle boundaries, pixels")

    @field_validator("twin_width", "subgrain_angle", "low_angle_angle")
    @classmethod
    def _ordered(cls, v):
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"need 0 <= min <= max, got {tuple(v)}")
        return v


class Imaging2D(_Model):
    """Imaging model of a (S)TEM micrograph: the knobs a benchmark sweeps."""

    dose: float = Field(200.0, gt=0, description="mean electron counts per pixel (Poisson shot noise)")
    psf_sigma: float = Field(1.0, ge=0, description="Gaussian core of the point-spread function, pixels")
    psf_tail: float = Field(0.15, ge=0, lt=1, description="weight of the Lorentzian (Cauchy) tail of the PSF")
    psf_tail_width: float = Field(4.0, gt=0, description="half-width of the Lorentzian tail, pixels")
    read_noise: float = Field(2.0, ge=0, description="Gaussian detector read noise, counts")
    background: float = Field(0.3, ge=0, description="mean background level relative to the peak atom contrast")
    background_variation: float = Field(0.3, ge=0, le=1, description="relative amplitude of the slow background gradient")
    thickness_variation: float = Field(0.25, ge=0, lt=1, description="relative amplitude of the slow contrast (thickness) variation")
    contrast: Literal["dark_field", "bright_field", "random"] = Field("dark_field", description="dark_field: bright atoms (HAADF); bright_field: inverted")
    jitter: float = Field(0.0, ge=0, description="row-wise scan jitter, pixels (rms of the x offset of each scan line)")
    drift: float = Field(0.0, ge=0, description="slow scan drift: the x offset wanders by this many pixels over the image height")
    shear: float = Field(0.0, ge=-0.2, le=0.2, description="linear scan shear (x offset per row)")


class Synth2DConfig(_Model):
    """Everything that defines a 2D sample except the seed."""

    size: tuple[int, int] = Field((512, 512), description="(rows, cols)")
    lattice: Literal["square", "hexagonal", "fringes"] = "square"
    period: float = Field(8.0, ge=3, description="lattice constant (nearest-column spacing), pixels")
    atom_sigma: float = Field(0.18, gt=0.05, le=0.3, description="Gaussian width of an atomic column as a fraction of the period")
    pixel_size: float = Field(0.05, gt=0, description="physical pixel size in `unit` (0.05 nm x 8 px = 0.4 nm)")
    unit: str = "nm"
    dtype: Literal["uint16", "float32"] = Field("uint16", description="uint16 keeps detector counts exact and files small")
    microstructure: Microstructure = Microstructure()
    imaging: Imaging2D = Imaging2D()

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if min(v) < 16 or max(v) > 16384:
            raise ValueError(f"each side must be between 16 and 16384 pixels, got {tuple(v)}")
        return v


class Imaging3D(_Model):
    """Tomographic reconstruction artefacts."""

    psf_sigma: float = Field(0.7, ge=0, description="isotropic Gaussian resolution, voxels")
    elongation: float = Field(1.5, ge=1, description="extra Gaussian blur factor along z (beam axis)")
    tilt_range: float = Field(65.0, gt=0, le=90, description="maximum tilt angle (degrees) about the y axis; < 90 gives a missing wedge")
    noise: float = Field(0.05, ge=0, description="Gaussian reconstruction noise, relative to the atom contrast")
    background_variation: float = Field(0.2, ge=0, le=1, description="relative amplitude of a slow intensity gradient")


class Synth3DConfig(_Model):
    """Everything that defines a 3D sample except the seed."""

    size: tuple[int, int, int] = Field((96, 96, 96), description="(z, y, x)")
    lattice: Literal["cubic"] = "cubic"
    period: float = Field(6.0, ge=3, description="cubic lattice constant, voxels")
    atom_sigma: float = Field(0.18, gt=0.05, le=0.3, description="Gaussian width of an atom as a fraction of the period")
    pixel_size: float = Field(0.08, gt=0)
    unit: str = "nm"
    dtype: Literal["uint8", "float32"] = Field("uint8", description="uint8 as usual for reconstructions; float32 keeps everything")
    microstructure: Microstructure = Microstructure(grain_size=40.0, disorder_width=1.0)
    imaging: Imaging3D = Imaging3D()

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if min(v) < 8 or max(v) > 2048:
            raise ValueError(f"each side must be between 8 and 2048 voxels, got {tuple(v)}")
        return v

    @model_validator(mode="after")
    def _grain_vs_period(self):
        if self.microstructure.grain_size < 2 * self.period:
            raise ValueError("grain_size must be at least two lattice periods")
        return self


def load_config(path=None, dim: int = 2, **overrides):
    """Build a :class:`Synth2DConfig` or :class:`Synth3DConfig` from an optional YAML file plus overrides.

    Parameters
    ----------
    path : str or Path, optional
        YAML file with any subset of the fields (nested sections ``microstructure:``, ``imaging:``).
    dim : {2, 3}
        Which generator the config is for.
    **overrides
        Top-level fields that win over the file (e.g. ``size=(256, 256)``); ``None`` values are ignored.

    Raises
    ------
    MicroSymError
        Unreadable YAML or invalid values, as one line naming the file and the field.
    """
    cls = {2: Synth2DConfig, 3: Synth3DConfig}[dim]
    data = {} if path is None else read_yaml_mapping(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_model(cls, data, "config" if path is None else str(Path(path)))
