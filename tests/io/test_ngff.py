"""Outputs are valid OME-Zarr (NGFF 0.5), and grain neighbours are counted across the boundary band.

Every kind of ``NAME.zarr`` micro_sym writes -- ``segment`` (2D bundled network, 3D toy network),
``classical``, ``grains`` and the napari plugin's ``save_result`` -- is checked with ``ome-zarr-models``
(the whole group, each map's image group, ``labels`` and the ``labels/grains`` label image), with
``ome_zarr.reader.Reader`` (finds the images and the labels), for NGFF unit names and
``dimension_names``, and opened by napari's own reader without ``plugin=`` (docs/design.md §1.7).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from micro_sym.grains import grain_table
from micro_sym.io.images import map_path, ngff_unit, output_array, short_unit, write_ome_zarr

from _helpers import quaternion_net_3d, smooth_image

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_2D = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"
#: UDUNITS-2 length names NGFF lists; micro_sym writes these (or no unit for pixels).
NGFF_LENGTHS = {"angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
                "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter",
                "nanometer", "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter",
                "zeptometer", "zettameter"}


# ------------------------------------------------------------------------------------ checks


def check_ngff(path, maps=("boundary", "orientation"), labels=("grains",), unit=None) -> zarr.Group:
    """Assert that ``path`` is a valid NGFF 0.5 output holding ``maps`` and label images ``labels``."""
    ome_zarr_models = pytest.importorskip("ome_zarr_models")  # the dev extra (pyproject.toml)
    pytest.importorskip("ome_zarr")
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    path = Path(path)
    root = zarr.open_group(str(path), mode="r")
    assert isinstance(ome_zarr_models.open_ome_zarr(root), Image)  # the whole group: no error at all
    for name in maps:
        assert isinstance(ome_zarr_models.open_ome_zarr(root[name]), Image), name
    if labels:
        assert isinstance(ome_zarr_models.open_ome_zarr(root["labels"]), Labels)
        assert sorted(root["labels"].attrs["ome"]["labels"]) == sorted(labels)
        for name in labels:
            assert isinstance(ome_zarr_models.open_ome_zarr(root[f"labels/{name}"]), ImageLabel), name
    # Every multiscale: axes typed, NGFF unit names, arrays named like the axes.
    groups = [root] + [root[m] for m in maps] + [root[f"labels/{n}"] for n in labels]
    for group in groups:
        ome = group.attrs["ome"]
        assert ome["version"] == "0.5"
        for ms in ome["multiscales"]:
            axes = ms["axes"]
            assert all(a["type"] in ("space", "channel") for a in axes)
            units = {a.get("unit") for a in axes if a["type"] == "space"}
            assert units == {unit}, (group.path, units)
            assert unit is None or unit in NGFF_LENGTHS
            arr = group[ms["datasets"][0]["path"]]
            assert tuple(arr.metadata.dimension_names) == tuple(a["name"] for a in axes)
    # ome-zarr-py's reader: the group's image and its labels; each map on its own.
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(path)))())
    found = {(n.zarr.basename(), bool(n.data)) for n in nodes}
    assert (path.name, True) in found
    for name in labels:
        assert (name, True) in found, found
    for name in maps:
        (node, *_) = list(Reader(parse_url(str(path / name)))())
        assert node.data and node.data[0].shape == output_array(root, name).shape
    return root


def open_in_napari(path) -> list:
    """Layers napari's own reader (``viewer.open`` without ``plugin=``) makes of ``path``."""
    pytest.importorskip("napari")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(path))
    return list(viewer.layers)


@pytest.fixture(scope="module")
def crop_tif(tmp_path_factory):
    """A 192 x 192 crop of the sample micrograph, 0.05 nm pixels (ImageJ metadata)."""
    img = tifffile.imread(SAMPLE_2D)[:192, :192]
    path = tmp_path_factory.mktemp("crop") / "crop.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(20.0, 20.0), metadata={"unit": "nm"})
    return path


@pytest.fixture(scope="module")
def segmented_2d(tmp_path_factory, crop_tif):
    from micro_sym.inference import segment

    out = tmp_path_factory.mktemp("seg2d")
    (res,) = segment([crop_tif], out, model="default-2d", workers=1)
    assert res.status == "complete", res.error
    return Path(res.zarr)


# --------------------------------------------------------------------------------- unit names


def test_unit_names():
    assert [ngff_unit(u) for u in ("nm", "µm", "\u03bcm", "um", "micron", "Å", "\u212b", "mm", "px", None, "")] == [
        "nanometer", "micrometer", "micrometer", "micrometer", "micrometer", "angstrom", "angstrom", "millimeter",
        None, None, None]
    assert ngff_unit("micrometer") == "micrometer" and short_unit("micrometer") == "µm" and short_unit("nanometer") == "nm"
    assert map_path("boundary") == "boundary/0" and map_path("grains") == "labels/grains/0"


# ------------------------------------------------------------------------------ output kinds


def test_segment_2d_output_is_valid_ngff(segmented_2d):
    root = check_ngff(segmented_2d, unit="nanometer")
    assert [ms["name"] for ms in root.attrs["ome"]["multiscales"]] == ["boundary", "orientation"]
    assert root.attrs["micro_sym"]["n_grains"] >= 2  # the run's record sits beside the NGFF metadata
    ms = root["boundary"].attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx([0.05, 0.05])
    grains = output_array(root, "grains")
    assert grains.dtype == np.uint32 and grains.shape == (192, 192) and int(grains[...].max()) >= 2
    assert output_array(root, "boundary").dtype == np.float32


def test_segment_3d_output_is_valid_ngff(tmp_path):
    from micro_sym.inference import segment

    vol = smooth_image((20, 24, 16), seed=2, sigma=2.0)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, vol, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 0.5, "unit": "um",
                                                                              "axes": "ZYX"})
    (res,) = segment([path], tmp_path / "out", model=quaternion_net_3d(), block=16, chunk=16, threshold=20.0,
                     min_size=0)
    assert res.status == "complete", res.error
    root = check_ngff(res.zarr, unit="micrometer")
    ori = root["orientation"].attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ori["axes"]] == ["c", "z", "y", "x"] and ori["axes"][0]["type"] == "channel"
    assert output_array(root, "orientation").shape == (4, 20, 24, 16)
    layers = open_in_napari(res.zarr)
    assert layers and layers[0].data.shape == (20, 24, 16)


def test_classical_and_grains_cli_outputs_are_valid_ngff(tmp_path, crop_tif, segmented_2d):
    from micro_sym.cli import main

    def run(args):
        try:
            return main([str(a) for a in args])
        except SystemExit as exc:
            return exc.code or 0

    assert run(["classical", crop_tif, "--out", tmp_path / "cls"]) == 0
    root = check_ngff(tmp_path / "cls" / "crop.zarr", maps=("boundary", "orientation", "confidence"), unit="nanometer")
    assert output_array(root, "grains").dtype == np.uint32
    # `micro-sym grains` reads a segmentation output (this layout) and writes one of its own.
    assert run(["grains", segmented_2d, "--out", tmp_path / "gr"]) == 0
    check_ngff(tmp_path / "gr" / "crop.zarr", maps=("orientation", "kam", "boundary"), unit="nanometer")
    csv = (tmp_path / "gr" / "crop_grains.csv").read_text().splitlines()[0]
    assert "area_nm2" in csv  # NGFF's "nanometer" is read back as micro_sym's short unit


def test_save_result_and_napari_open_without_plugin(tmp_path, segmented_2d):
    from micro_sym_napari._reader import napari_get_reader

    from micro_sym.inference.interactive import SegmentResult, save_result

    src = zarr.open_group(str(segmented_2d), mode="r")
    maps = {k: output_array(src, k)[...] for k in ("boundary", "orientation", "grains")}
    table = grain_table(maps["grains"], maps["orientation"], symmetry="square", pixel_size=(0.05, 0.05), unit="µm")
    result = SegmentResult(maps["grains"], maps["boundary"], maps["orientation"], table, "square", "test",
                           pixel_size=(0.05, 0.05), unit="µm")
    zpath, _ = save_result(result, tmp_path, "saved")
    check_ngff(zpath, unit="micrometer")
    for path in (zpath, segmented_2d):
        (layer, *_) = open_in_napari(path)
        assert layer.data.shape == (192, 192)  # napari's built-in reader: the first image (boundary)
        # The micro-sym plugin's reader finds every map of the layout, grains as labels.
        layers = {kw["name"]: kind for _, kw, kind in napari_get_reader(str(path))(str(path))}
        name = Path(path).name[:-5]
        assert layers[f"{name} grains"] == "labels" and f"{name} P(boundary)" in layers


def test_write_ome_zarr_layout_and_old_outputs_still_read(tmp_path):
    labels = np.repeat(np.arange(1, 5, dtype=np.uint32), 8).reshape(4, 8)
    quats = np.ones((4, 3, 4, 8), np.float32) * 0.5
    out = write_ome_zarr(tmp_path / "w.zarr", {"image": np.zeros((3, 4, 8), np.uint16), "grains": np.stack([labels] * 3),
                                                "orientation": quats}, pixel_size=(1.0, 0.5, 0.5), unit="nm")
    root = check_ngff(out, maps=("image", "orientation"), unit="nanometer")
    assert [ms["name"] for ms in root.attrs["ome"]["multiscales"]] == ["image", "orientation"]
    np.testing.assert_array_equal(output_array(out, "orientation")[...], quats)
    # An output of the flat layout (arrays at the top) still reads by name.
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    old.create_array("grains", data=labels)
    np.testing.assert_array_equal(output_array(old, "grains")[...], labels)
    with pytest.raises(KeyError):
        output_array(old, "boundary")


# ------------------------------------------------------------------------------ n_neighbours


def test_neighbours_across_a_two_pixel_band():
    """Four grains in a 2 x 2 layout, separated by 2-px bands of label 0, plus a grain 6 px away."""
    lab = np.zeros((40, 60), np.uint32)
    lab[:15, :20] = 1
    lab[:15, 22:40] = 2
    lab[17:, :20] = 3
    lab[17:, 22:40] = 4
    lab[10:30, 46:] = 5  # 6 px from grain 2 and 4: too far
    # 1-2, 1-3, 2-4, 3-4 across the bands; the diagonal pairs only meet at a point (a quadruple junction).
    assert grain_table(lab)["n_neighbours"].tolist() == [2, 2, 2, 2, 0]
    lab[10:30, 44:46] = 5  # now 4 px from grains 2 and 4: within reach
    assert grain_table(lab)["n_neighbours"].tolist() == [2, 3, 2, 3, 2]
    # Grains that touch are still neighbours.
    touching = np.array([[1, 1, 2, 2], [3, 3, 2, 2]], np.uint32)
    assert grain_table(touching)["n_neighbours"].tolist() == [2, 2, 2]


@pytest.mark.parametrize("shape,block", [((45, 37), 8), ((45, 37), 16), ((13, 17, 11), 5)])
def test_blockwise_neighbours_equal_the_whole_map(shape, block):
    """The engine's per-block pairs (halo reach + 1) give grain_table's counts for any block size."""
    import itertools

    from scipy import ndimage

    from micro_sym.grains.reconstruct import consecutive_ids
    from micro_sym.grains.blockwise import neighbour_counts, neighbour_pairs

    rng = np.random.default_rng(len(shape) * block)
    seeds = rng.random(shape) < 0.03
    ids, _ = ndimage.label(seeds)
    _, (idx) = ndimage.distance_transform_edt(ids == 0, return_indices=True)
    voronoi = ids[tuple(idx)]
    edges = np.zeros(shape, bool)
    for ax in range(len(shape)):  # a band of 1-3 px between grains, with some unassigned blobs
        edges |= np.diff(voronoi, axis=ax, prepend=np.take(voronoi, [0], axis=ax)) != 0
    band = ndimage.binary_dilation(edges, iterations=1) | (rng.random(shape) < 0.02)
    lab = consecutive_ids(np.where(band, 0, voronoi)).astype(np.uint32)
    n = int(lab.max())
    ref = grain_table(lab)["n_neighbours"]
    assert ref.max() >= 2 and (ref > 0).mean() > 0.8
    cores = [tuple(slice(o, min(o + block, s)) for o, s in zip(origin, shape))
             for origin in itertools.product(*[range(0, s, block) for s in shape])]
    np.testing.assert_array_equal(neighbour_counts([neighbour_pairs(lab, c, shape) for c in cores], n), ref)


def test_sample_micrograph_grains_have_neighbours(tmp_path):
    """The bundled network's grains on the sample: a median of at least 4 neighbours, and the engine's
    CSV agrees with the whole-map table."""
    import csv

    from micro_sym.inference import segment

    (res,) = segment([SAMPLE_2D], tmp_path, model="default-2d", workers=1)
    assert res.status == "complete", res.error
    grains = output_array(res.zarr, "grains")[...]
    ref = grain_table(grains)["n_neighbours"]
    assert np.median(ref) >= 4 and (ref == 0).sum() <= 1
    with open(res.csv) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["n_neighbours"]) for r in rows] == ref.tolist()
