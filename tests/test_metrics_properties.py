"""Properties of jaxcl.metrics that hold for every accuracy matrix, on random ones.

Each case draws a stack of matrices ``R[S, T, T]`` with entries in [0, 1] (NumPy, one
seed per case) for T = 1..6; the identities below follow from the definitions in
metrics.py and must hold to float rounding whatever the values.
"""

import numpy as np
import pytest

from jaxcl import metrics

SEEDS = range(6)
ATOL = 1e-6


def _matrices(seed, num_seeds=4):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 7))
    return rng.uniform(size=(num_seeds, T, T)).astype(np.float32), rng


def _np(x):
    return np.asarray(x, np.float64)


@pytest.mark.parametrize("seed", SEEDS)
def test_forgetting_variants_are_ordered(seed):
    # max over l in [j, T-1] >= max over l in [j, T-2] >= R[j, j] (l = j is in both ranges).
    R, _ = _matrices(seed)
    chaudhry = _np(metrics.forgetting(R))
    mammoth = _np(metrics.forgetting_max_all(R))
    avalanche = _np(metrics.forgetting_from_diagonal(R))
    assert np.all(chaudhry <= mammoth + ATOL)
    assert np.all(avalanche <= chaudhry + ATOL)
    assert np.all(mammoth >= -ATOL)  # the last row is in Mammoth's max
    np.testing.assert_allclose(avalanche, -_np(metrics.backward_transfer(R)), atol=ATOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_last_average_accuracy_is_acc_and_their_mean_is_the_incremental_accuracy(seed):
    R, _ = _matrices(seed)
    a = _np(metrics.accuracy_after_each_task(R))
    np.testing.assert_allclose(a[:, -1], _np(metrics.average_accuracy(R)), atol=ATOL)
    np.testing.assert_allclose(a[:, 0], R[:, 0, 0], atol=ATOL)
    np.testing.assert_allclose(a.mean(-1), _np(metrics.average_incremental_accuracy(R)), atol=ATOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_matrix_without_change_down_its_columns_transfers_and_forgets_nothing(seed):
    # R[i, j] = c_j: a task's accuracy never moves after it is learned (nor before).
    _, rng = _matrices(seed)
    T = int(rng.integers(1, 7))
    R = np.broadcast_to(rng.uniform(size=(3, 1, T)), (3, T, T)).astype(np.float32)
    for name in ("backward_transfer", "forgetting", "forgetting_max_all"):
        np.testing.assert_allclose(_np(getattr(metrics, name)(R)), 0.0, atol=ATOL, err_msg=name)
    # ... so its final accuracy is its learning accuracy.
    np.testing.assert_allclose(
        _np(metrics.average_accuracy(R)), _np(metrics.learning_accuracy(R)), atol=ATOL
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_only_fwt_reads_above_the_diagonal(seed):
    R, rng = _matrices(seed)
    T = R.shape[-1]
    other = np.where(np.triu(np.ones((T, T), bool), 1), rng.uniform(size=R.shape), R)
    for name in (
        "average_accuracy",
        "accuracy_after_each_task",
        "average_incremental_accuracy",
        "backward_transfer",
        "forgetting",
        "forgetting_from_diagonal",
        "forgetting_max_all",
        "learning_accuracy",
    ):
        f = getattr(metrics, name)
        np.testing.assert_allclose(_np(f(other)), _np(f(R)), atol=ATOL, err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shift_of_every_accuracy_moves_only_the_levels(seed):
    R, rng = _matrices(seed)
    b, c = rng.uniform(size=R.shape[-1]).astype(np.float32), np.float32(0.25)
    for name in ("average_accuracy", "average_incremental_accuracy", "learning_accuracy"):
        f = getattr(metrics, name)
        np.testing.assert_allclose(_np(f(R + c)), _np(f(R)) + c, atol=ATOL, err_msg=name)
    for name in ("backward_transfer", "forgetting", "forgetting_max_all"):
        f = getattr(metrics, name)
        np.testing.assert_allclose(_np(f(R + c)), _np(f(R)), atol=ATOL, err_msg=name)
    # FWT compares R with b: shifting both leaves it unchanged.
    np.testing.assert_allclose(
        _np(metrics.forward_transfer(R + c, b + c)),
        _np(metrics.forward_transfer(R, b)),
        atol=ATOL,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_pooled_accuracy_with_equal_test_sets_is_the_task_mean(seed):
    R, rng = _matrices(seed)
    n = int(rng.integers(1, 50))
    correct = np.round(R * n)
    np.testing.assert_allclose(
        _np(metrics.pooled_accuracy(correct[:, -1], n)),
        _np(metrics.average_accuracy(correct / n)),
        atol=ATOL,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_summarize_is_the_individual_metrics_per_seed(seed):
    R, rng = _matrices(seed)
    b = rng.uniform(size=R.shape[-1]).astype(np.float32)
    per_seed = metrics.summarize(R, b=b)
    expected = {
        "acc": metrics.average_accuracy,
        "avg_incremental_acc": metrics.average_incremental_accuracy,
        "bwt": metrics.backward_transfer,
        "forgetting": metrics.forgetting,
        "learning_acc": metrics.learning_accuracy,
        "fwt": lambda R: metrics.forward_transfer(R, b),
    }
    assert set(per_seed) == set(expected)
    for s in range(R.shape[0]):
        for name, f in expected.items():
            np.testing.assert_allclose(per_seed[name][s], _np(f(R[s])), atol=ATOL, err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_confidence_intervals_follow_an_affine_change_of_units(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=int(rng.integers(2, 10))), rng.normal(size=int(rng.integers(2, 10)))
    scale, offset = float(rng.uniform(-3, 3)), float(rng.normal())
    mean, half = metrics.mean_ci95(x)
    mean2, half2 = metrics.mean_ci95(scale * x + offset)
    np.testing.assert_allclose([mean2, half2], [scale * mean + offset, abs(scale) * half])
    assert half > 0
    diff, half_d = metrics.difference_ci95(x, y)
    np.testing.assert_allclose(metrics.difference_ci95(y, x), (-diff, half_d))
    np.testing.assert_allclose(
        metrics.difference_ci95(scale * x + offset, scale * y + offset),
        (scale * diff, abs(scale) * half_d),
    )
