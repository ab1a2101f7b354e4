"""What every atomistic generator's config shares: the crystal (element, lattice, lattice constant)
and per-sample variants drawn from one dataset's config (:mod:`.atoms2d`, :mod:`.atoms3d`).

Crystals are cubic (fcc, bcc, diamond, simple cubic; ``ase.build.bulk``) or, for micrographs only,
2D crystals one layer thick (:data:`TWO_D_CRYSTALS`: graphene and 2H-MoS2, ``ase.build.graphene``
and ``ase.build.mx2``), whose element is the one the structure names (C, Mo)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from micro_sym.synth.config import _Model

#: 2D crystals: lattice name -> (the element that names it, the default lattice constant in Å, measured values).
TWO_D_CRYSTALS = {"graphene": ("C", 2.46), "mos2": ("Mo", 3.16)}


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, nested mappings key by key."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_element(symbol: str, where: str = "") -> str:
    """``symbol`` if it is a chemical symbol, else a ValueError naming ``where``."""
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers:
        raise ValueError(f"{where}'{symbol}' is not a chemical symbol")
    return symbol


class MaterialConfig(_Model):
    """A cubic crystal of one element (or a 2D crystal), and variants of the config drawn per sample."""

    #: Fields a variant may not change: they are the same for every sample of a dataset.
    FIXED: ClassVar[frozenset] = frozenset({"size", "variants"})

    lattice: Literal["fcc", "bcc", "diamond", "sc", "graphene", "mos2"] = "fcc"
    element: str = Field("Au", description="chemical symbol of the crystal's atoms")
    lattice_constant: float | None = Field(None, gt=1, description="Å; none = ASE's reference value for the element (which must then have this lattice)")
    variants: tuple[dict, ...] = Field((), description="override mappings of the other fields; each sample draws one "
                                       "uniformly from its seed: one dataset of many materials")

    @field_validator("element")
    @classmethod
    def _element(cls, v):
        return check_element(v)

    @model_validator(mode="after")
    def _material_and_variants(self):
        from ase.data import atomic_numbers, reference_states

        if self.lattice in TWO_D_CRYSTALS:
            named = TWO_D_CRYSTALS[self.lattice][0]
            if self.element != named:
                raise ValueError(f"a {self.lattice} crystal is made of {named}, not {self.element}")
        elif self.lattice_constant is None:
            ref = reference_states[atomic_numbers[self.element]] or {}
            if ref.get("symmetry") != self.lattice or "a" not in ref:
                raise ValueError(f"{self.element} is not {self.lattice} in ASE's reference data: give lattice_constant")
        for i, v in enumerate(self.variants):
            fixed = self.FIXED & set(v)
            if fixed:
                raise ValueError(f"variants[{i}]: {', '.join(sorted(fixed))} must be the same for every sample of a dataset")
            try:
                self.variant(i)
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"variants[{i}]: {loc + ': ' if loc else ''}{first['msg']}") from None
        return self

    def variant(self, index: int):
        """This config with ``variants[index]`` merged in (nested sections merged key by key)."""
        return type(self).model_validate(deep_merge(self.model_dump(exclude={"variants"}), self.variants[index]))

    @property
    def a(self) -> float:
        """The lattice constant in Å (given, or ASE's reference value)."""
        if self.lattice_constant is not None:
            return float(self.lattice_constant)
        if self.lattice in TWO_D_CRYSTALS:
            return TWO_D_CRYSTALS[self.lattice][1]
        from ase.data import atomic_numbers, reference_states

        return float(reference_states[atomic_numbers[self.element]]["a"])


def load_material_config(cls, path=None, **overrides):
    """A ``cls`` config from an optional YAML file (a path or a bundled name) plus top-level overrides
    (``None`` values ignored).

    Raises
    ------
    MicroSymError
        Unknown file, invalid YAML or invalid values, as one line naming the file and the field.
    """
    from micro_sym.config_files import read_yaml_mapping, resolve_config_path, validate_model

    path = None if path is None else resolve_config_path(path)
    data = {} if path is None else read_yaml_mapping(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_model(cls, data, "config" if path is None else str(path))
