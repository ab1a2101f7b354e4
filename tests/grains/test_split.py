"""Splitting a grain that holds two lattice orientations (:mod:`micro_sym.grains.split`)."""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym.grains.split import SPLIT_RULE, apply_pieces, grain_pieces, split_ids, split_labels, two_means
from micro_sym.synth.lattice2d import render_lattice_2d

PERIOD = 8.0


def joined_pair(second_angle=28.0, shape=(160, 160)):
    """One label over two square-lattice regions (20° left, ``second_angle`` right of column 96) and a
    grain of its own at 60° in the bottom rows: ``(image, labels, angles)``, the angles as a network's map
    would give them (each region's angle plus 0.3° of noise)."""
    truth = np.ones(shape, np.int64)
    truth[:, 96:] = 2
    truth[128:] = 3
    angle = {1: 20.0, 2: second_angle, 3: 60.0}
    image = render_lattice_2d(truth, angle, period=PERIOD, rng=np.random.default_rng(0))
    image = image + np.random.default_rng(1).normal(0, 0.05, shape)
    labels = np.where(truth == 3, 2, 1).astype(np.uint32)
    angles = np.vectorize(angle.get)(truth).astype(np.float32) + np.random.default_rng(2).normal(0, 0.3, shape)
    return image.astype(np.float32), labels, (angles % 90).astype(np.float32)


@pytest.mark.parametrize("k, a, b", [(4, 10.0, 16.0), (4, 88.0, 4.0), (2, 175.0, 9.0), (6, 58.0, 5.0)])
def test_two_means_finds_two_groups_on_the_k_fold_circle(k, a, b):
    rng = np.random.default_rng(0)
    angles = np.r_[a + rng.normal(0, 0.5, 300), b + rng.normal(0, 0.5, 100)] % (360.0 / k)
    labels, separation = two_means(angles, k)
    full = 360.0 / k
    expected = min(abs(a - b) % full, full - abs(a - b) % full)
    assert separation == pytest.approx(expected, abs=0.3)
    assert len(set(labels[:300])) == 1 and len(set(labels[300:])) == 1 and labels[0] != labels[-1]


def test_a_grain_holding_two_lattices_is_split_where_the_image_shows_them():
    image, labels, angles = joined_pair()
    boxes, pieces, parents = split_labels(labels, angles, image, k_of=lambda g: 4, lattice_of=lambda g: "square",
                                          period=PERIOD)
    assert parents == [1] and int(pieces[0].max()) == 1
    piece = np.zeros(labels.shape, bool)
    piece[boxes[0]] = pieces[0] == 1
    right = (labels == 1) & (np.arange(160) >= 96)[None, :]
    # The smaller group (the 28° region) is split off, give or take the smoothing at its edge.
    assert (piece & right).sum() / right.sum() > 0.95 and (piece & ~right).sum() < 0.05 * piece.sum()


def test_no_split_without_two_angle_groups_or_without_the_image_showing_them():
    image, labels, angles = joined_pair(second_angle=20.0)  # one lattice: the angles form one group
    assert split_labels(labels, angles, image, k_of=lambda g: 4, lattice_of=lambda g: "square", period=PERIOD)[2] == []
    image, labels, angles = joined_pair()
    same, _, _ = joined_pair(second_angle=20.0)  # the network's angles differ, the image's lattice does not
    assert split_labels(labels, angles, same, k_of=lambda g: 4, lattice_of=lambda g: "square", period=PERIOD)[2] == []
    close = dict(SPLIT_RULE, sep=10.0)  # groups 8° apart: under a 10° separation nothing splits
    assert split_labels(labels, angles, image, k_of=lambda g: 4, lattice_of=lambda g: "square", period=PERIOD,
                        rule=close)[2] == []


def test_a_grain_too_large_is_not_split(monkeypatch):
    from micro_sym.grains import split

    image, labels, angles = joined_pair()
    monkeypatch.setattr(split, "MAX_SIDE", 128)
    mine = labels == 1
    assert grain_pieces(mine, angles, image, k=4, lattice="square", period=PERIOD, **SPLIT_RULE) is None


def test_new_ids_keep_each_phase_contiguous():
    lut, ids, ranges = split_ids(5, [2, 2, 4])
    assert list(lut) == [0, 1, 2, 3, 4, 5] and list(ids) == [6, 7, 8] and ranges is None
    # Phases 1-3 and 4-5: grain 2's pieces follow phase 1's grains, grain 4's phase 2's.
    lut, ids, ranges = split_ids(5, [2, 2, 4], [(1, 3), (4, 5)])
    assert list(lut) == [0, 1, 2, 3, 6, 7] and list(ids) == [4, 5, 8] and ranges == [(1, 5), (6, 8)]


def test_pieces_written_block_by_block_equal_the_whole_map():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (40, 50)).astype(np.uint32)
    boxes = [(slice(5, 30), slice(10, 45)), (slice(0, 12), slice(0, 9))]
    pieces = [rng.integers(0, 3, (25, 35)).astype(np.uint16), rng.integers(0, 2, (12, 9)).astype(np.uint16)]
    lut = np.array([0, 1, 2, 3], np.uint32)
    whole = apply_pieces(labels, (0, 0), lut, boxes, pieces, [4, 6])
    tiled = np.zeros_like(whole)
    for r in range(0, 40, 16):
        for c in range(0, 50, 16):
            core = (slice(r, min(r + 16, 40)), slice(c, min(c + 16, 50)))
            tiled[core] = apply_pieces(labels[core], (r, c), lut, boxes, pieces, [4, 6])
    assert np.array_equal(whole, tiled)
    assert set(np.unique(whole[boxes[0]][pieces[0] > 0])) <= {4, 5} and (whole[5:30, 10:45][pieces[0] == 2] == 5).all()


def test_one_stray_angle_takes_the_farthest_centre_but_not_a_percentile():
    rng = np.random.default_rng(0)
    angles = np.r_[20 + rng.normal(0, 0.3, 700), 28 + rng.normal(0, 0.3, 300), [60.0]]
    labels, _ = two_means(angles, 4)  # the stray 60° is the farthest angle: a centre, and a group, of its own
    assert np.bincount(labels).min() == 1
    labels, separation = two_means(angles, 4, init="q90")
    assert sorted(np.bincount(labels)) == [301, 700] and separation == pytest.approx(8.0, abs=0.5)


def test_two_means_gives_the_same_groups_for_a_float32_map_and_its_float64_copy():
    rng = np.random.default_rng(5)
    angles = (np.r_[20 + rng.normal(0, 2.0, 700), 26 + rng.normal(0, 2.0, 300)] % 180).astype(np.float32)
    for init in ("farthest", "q90"):
        a, b = two_means(angles, 2, init=init), two_means(angles.astype(np.float64), 2, init=init)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
