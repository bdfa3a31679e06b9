"""The authors' evaluation variant: label-shift maps and their forward transfer."""

import numpy as np
import pytest

from jaxcl import sparse


def test_label_shift_maps_send_task_i_classes_onto_task_j_classes():
    classes = np.zeros((3, 6), bool)
    classes[0, [0, 1]] = classes[1, [2, 3]] = classes[2, [1, 4]] = True
    maps = sparse.label_shift_maps(classes)
    for i in range(3):
        np.testing.assert_array_equal(maps[i, i], np.arange(6))
        for j in range(3):
            assert sorted(maps[i, j]) == list(range(6))  # a permutation
            src, dst = np.flatnonzero(classes[i]), np.flatnonzero(classes[j])
            np.testing.assert_array_equal(maps[i, j][dst], src)
    # Consecutive blocks: an argmax on task 0's k-th class hits task 1's k-th class.
    logits = np.array([0.1, 0.9, 0.0, 0.0, 0.0, 0.0])
    assert int(np.argmax(logits[maps[0, 1]])) == 3


def test_label_shift_needs_equal_task_sizes():
    classes = np.array([[1, 1, 0], [0, 0, 1]], bool)
    with pytest.raises(ValueError, match="classes per task must be the same in every task"):
        sparse.label_shift_maps(classes)


def test_authors_fwt_is_the_mean_above_the_diagonal_row_by_row():
    R = np.array([[0.9, 0.4, 0.6], [0.0, 0.8, 0.2], [0.0, 0.0, 0.7]])
    # Row 0: mean(0.4, 0.6) = 0.5; row 1: 0.2; average over rows 0..T−2.
    np.testing.assert_allclose(sparse.authors_fwt(R), 0.35)
    np.testing.assert_allclose(sparse.authors_fwt(np.stack([R, R])), [0.35, 0.35])
    assert float(sparse.authors_fwt(np.ones((1, 1)))) == 0.0
