"""Synthetic polycrystal micrographs and tomography volumes with exact ground truth.

Public API::

    synth_2d(config, seed) -> Synth2DSample          # micrograph + grains, boundary, orientation
    synth_3d(config, seed) -> Synth3DSample          # volume + grains, boundary, quaternions (4, z, y, x)
    render_lattice_2d(grain_ids, angles, ...)        # lattice image of a GIVEN grain map
    micrograph_from_grains(grain_ids, angles, imaging=..., seed=...)
    render_lattice_3d(grain_ids, quaternions, ...)
    synth_atoms3d(config, seed) -> Synth3DSample     # atomistic volume (ASE atoms), truth from the atoms
    build_polycrystal / build_particle(config, rng) -> AtomStructure; render_structure(structure, config, rng)
    apply_imaging_2d / apply_imaging_3d / scan_positions
    write_dataset(out, samples, ...) / generate_dataset(out, config, n, seed)
    save_figure_2d(sample, path)
    load_config(path, dim, **overrides), Synth2DConfig, Synth3DConfig, Imaging2D, Imaging3D, Microstructure
    load_atoms3d_config(path_or_bundled_name, **overrides), Atoms3DConfig
    synth_atoms2d(config, seed) -> Synth2DSample     # HAADF-STEM / HRTEM (abTEM) of an ASE film, truth from the atoms
    load_atoms2d_config(path_or_bundled_name, **overrides), Atoms2DConfig
"""

from micro_sym.synth.atoms2d import Atoms2DConfig, load_atoms2d_config, synth_atoms2d
from micro_sym.synth.atoms3d import (AtomStructure, Atoms3DConfig, build_particle, build_polycrystal, load_atoms3d_config,
                                     render_structure, synth_atoms3d)
from micro_sym.synth.config import Imaging2D, Imaging3D, Microstructure, Synth2DConfig, Synth3DConfig, load_config
from micro_sym.synth.imaging import apply_imaging_2d, apply_imaging_3d, scan_positions
from micro_sym.synth.lattice2d import (Synth2DSample, Synth3DSample, SynthSample, micrograph_from_grains, render_lattice_2d,
                                       synth_2d)
from micro_sym.synth.microstructure import power_diagram, seed_cells
from micro_sym.synth.volume3d import render_lattice_3d, synth_3d

__all__ = [
    "AtomStructure",
    "Atoms2DConfig",
    "Atoms3DConfig",
    "Imaging2D",
    "Imaging3D",
    "Microstructure",
    "Synth2DConfig",
    "Synth3DConfig",
    "Synth2DSample",
    "Synth3DSample",
    "SynthSample",
    "apply_imaging_2d",
    "apply_imaging_3d",
    "build_particle",
    "build_polycrystal",
    "load_atoms2d_config",
    "load_atoms3d_config",
    "load_config",
    "micrograph_from_grains",
    "power_diagram",
    "render_lattice_2d",
    "render_lattice_3d",
    "render_structure",
    "scan_positions",
    "seed_cells",
    "synth_2d",
    "synth_3d",
    "synth_atoms2d",
    "synth_atoms3d",
]
