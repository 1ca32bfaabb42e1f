"""SsdAnchorsCalculator centres: counts, order and known values for every teacher."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from blazedistill.anchors import generate_anchors
from blazedistill.specs import TEACHER_SPECS, teacher_spec


def test_front_layout():
    anchors = generate_anchors(teacher_spec("front").anchors)
    assert anchors.shape == (896, 2) and anchors.dtype == np.float32
    # 16x16 cells, 2 anchors each, row-major (x varies fastest), then 8x8 cells with 6 anchors each
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[32], [0.5 / 16, 1.5 / 16])
    assert np.allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_back_centres_equal_front():
    front = generate_anchors(teacher_spec("front").anchors)
    back = generate_anchors(teacher_spec("back").anchors)
    assert np.array_equal(front, back)


def test_full_range_layout():
    anchors = generate_anchors(teacher_spec("full_range").anchors)
    assert anchors.shape == (2304, 2)
    assert np.allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    assert np.allclose(anchors[1], [1.5 / 48, 0.5 / 48])
    assert np.allclose(anchors[48], [0.5 / 48, 1.5 / 48])
    assert np.allclose(anchors[-1], [47.5 / 48, 47.5 / 48])
    assert len(np.unique(anchors, axis=0)) == 2304  # one anchor per cell


@pytest.mark.parametrize("name", list(TEACHER_SPECS))
def test_counts_match_specs(name):
    spec = teacher_spec(name)
    assert len(generate_anchors(spec.anchors)) == spec.num_anchors


def test_interpolated_ratio_adds_one_anchor_per_layer():
    options = dataclasses.replace(teacher_spec("full_range").anchors, interpolated_scale_aspect_ratio=1.0)
    assert len(generate_anchors(options)) == 2 * 2304
    with pytest.raises(NotImplementedError):
        generate_anchors(dataclasses.replace(options, fixed_anchor_size=False))
