"""Tests for jaxcl.metrics: hand-computed 3×3 matrices, variants, T = 1, seeds, CIs."""

import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import metrics

# R[i, j]: accuracy on task j after training through task i. Chosen so the variants differ:
# R[1, 0] > R[0, 0] (max over earlier rows matters), R[2, 1] > R[1, 1] (the off-by-one: the
# last row must not enter Chaudhry's max) and R[0, 1] is large (rows l < j must not count).
R3 = np.array(
    [
        [0.90, 0.90, 0.20],
        [0.95, 0.80, 0.30],
        [0.50, 0.85, 0.95],
    ]
)
B3 = np.array([0.1, 0.05, 0.2])

EXPECTED = {
    "average_accuracy": (0.50 + 0.85 + 0.95) / 3,
    "average_incremental_accuracy": (0.9 + 0.875 + 2.3 / 3) / 3,
    "backward_transfer": ((0.50 - 0.90) + (0.85 - 0.80)) / 2,  # −0.175
    "forgetting": ((0.95 - 0.50) + (0.80 - 0.85)) / 2,  # 0.2: max over l ∈ [j, T−2]
    "forgetting_from_diagonal": ((0.90 - 0.50) + (0.80 - 0.85)) / 2,  # 0.175
    "forgetting_max_all": ((0.95 - 0.50) + (0.85 - 0.85)) / 2,  # 0.225: includes last row
    "learning_accuracy": (0.90 + 0.80 + 0.95) / 3,
}


_MATRIX_METRICS = (*EXPECTED, "accuracy_after_each_task")


def _all_metrics(R, b=None):
    """Every matrix metric of R (and FWT if b is given) in one jitted call."""

    @jax.jit
    def run(R, b):
        out = {n: getattr(metrics, n)(R) for n in _MATRIX_METRICS}
        if b is not None:
            out["forward_transfer"] = metrics.forward_transfer(R, b)
        return out

    return run(jnp.asarray(R, jnp.float32), b)


def test_hand_computed_3x3():
    values = _all_metrics(R3, B3)
    for name, expected in EXPECTED.items():
        assert values[name].shape == (), name
        np.testing.assert_allclose(float(values[name]), expected, rtol=1e-6, err_msg=name)
    # A_k over seen tasks; FWT from R[0, 1] = 0.9, R[1, 2] = 0.3
    expected_a = [0.9, (0.95 + 0.8) / 2, (0.5 + 0.85 + 0.95) / 3]
    np.testing.assert_allclose(np.asarray(values["accuracy_after_each_task"]), expected_a, 1e-6)
    np.testing.assert_allclose(float(values["forward_transfer"]), (0.85 + 0.1) / 2, 1e-6)
    fwt = float(_all_metrics(R3, np.full(3, 0.1, np.float32))["forward_transfer"])
    np.testing.assert_allclose(fwt, (0.8 + 0.2) / 2, rtol=1e-6)
    # Avalanche forgetting is −BWT
    np.testing.assert_allclose(
        float(values["forgetting_from_diagonal"]), -float(values["backward_transfer"]), 1e-6
    )


def test_unseen_entries_are_ignored():
    upper_nan = np.where(np.triu(np.ones((3, 3)), 1) > 0, np.nan, R3)
    values = _all_metrics(upper_nan)
    np.testing.assert_allclose(
        np.asarray(values["accuracy_after_each_task"]),
        np.asarray(_all_metrics(R3)["accuracy_after_each_task"]),
        rtol=1e-6,
    )
    for name in EXPECTED:
        np.testing.assert_allclose(float(values[name]), EXPECTED[name], rtol=1e-6, err_msg=name)


def test_bad_b_refused():
    with pytest.raises(ValueError, match=r"b must be of shape \[..., T\] with T = 3, got \(2,\)"):
        metrics.forward_transfer(R3, np.zeros(2))


def test_two_tasks_all_forgetting_variants_agree():
    values = _all_metrics(np.array([[0.9, 0.2], [0.6, 0.8]]))
    for name in ("forgetting", "forgetting_max_all", "forgetting_from_diagonal"):
        np.testing.assert_allclose(float(values[name]), 0.3, rtol=1e-6, err_msg=name)


def test_single_task_edge_case():
    values = _all_metrics(np.array([[[0.7]], [[0.6]]]), np.array([0.1], np.float32))
    for name in ("average_accuracy", "learning_accuracy", "average_incremental_accuracy"):
        np.testing.assert_allclose(np.asarray(values[name]), [0.7, 0.6], rtol=1e-6)
    for name in (
        "backward_transfer",
        "forward_transfer",
        "forgetting",
        "forgetting_max_all",
        "forgetting_from_diagonal",
    ):
        np.testing.assert_array_equal(np.asarray(values[name]), [0.0, 0.0], err_msg=name)


def test_pooled_accuracy():
    correct = np.array([[90, 5, 0], [80, 70, 0], [50, 60, 100]])
    count = np.array([100, 80, 200])
    pooled, pooled_seen = jax.jit(
        lambda c, n: (
            metrics.pooled_accuracy(c, n),
            metrics.pooled_accuracy(c, n, seen_only=True),
        )
    )(correct, count)
    np.testing.assert_allclose(np.asarray(pooled), [95 / 380, 150 / 380, 210 / 380], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled_seen), [0.9, 150 / 180, 210 / 380], rtol=1e-6)
    # sample-pooled differs from the task mean when test sets differ in size
    assert abs(210 / 380 - float(metrics.average_accuracy(correct / count))) > 0.02


def test_broadcasting_over_seeds_matches_vmap():
    R_b = np.stack([R3, R3[::-1, ::-1], np.full((3, 3), 0.5)]).astype(np.float32)
    batched = _all_metrics(R_b, B3)  # b shared by all seeds
    mapped = jax.jit(jax.vmap(lambda R: {n: getattr(metrics, n)(R) for n in _MATRIX_METRICS}))(R_b)
    for name in _MATRIX_METRICS:
        assert batched[name].shape[0] == 3, name
        np.testing.assert_allclose(np.asarray(batched[name]), np.asarray(mapped[name]), 1e-6)
    for name, expected in EXPECTED.items():
        np.testing.assert_allclose(float(batched[name][0]), expected, rtol=1e-6, err_msg=name)
    assert float(batched["backward_transfer"][2]) == 0.0
    assert batched["forward_transfer"].shape == (3,)
    np.testing.assert_allclose(float(batched["forward_transfer"][0]), 0.475, rtol=1e-6)


def test_bad_shapes_refused():
    for shape in [(2, 3), (3,), (), (2, 0, 0)]:
        with pytest.raises(ValueError, match=r"R must be of shape .* got " + re.escape(str(shape))):
            metrics.average_accuracy(np.zeros(shape))
    with pytest.raises(ValueError, match=r"correct must be of shape \[..., T, T\]"):
        metrics.summarize(np.zeros((2, 2)), correct=np.zeros(2), count=np.ones(2))


# ----------------------------------------------------------------------------- seeds and CI


@pytest.mark.parametrize(
    ("dof", "t"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (100, 1.9840)],
)
def test_t_quantile_known_values(dof, t):
    assert abs(metrics.t_quantile_975(dof) - t) < 1e-4


def test_t_quantile_limit_and_errors():
    assert abs(metrics.t_quantile_975(10**6) - 1.959964) < 1e-5
    assert abs(metrics.t_quantile_975(1000) - metrics.t_quantile_975(1001)) < 1e-5
    with pytest.raises(ValueError, match="dof must be a positive integer, got 0"):
        metrics.t_quantile_975(0)


def test_mean_ci95():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # s = √2.5, n = 5, t_{0.975,4} = 2.7764
    mean, half = metrics.mean_ci95(x)
    assert float(mean) == 3.0
    np.testing.assert_allclose(float(half), 2.776445 * math.sqrt(2.5) / math.sqrt(5), rtol=1e-6)
    mean, half = metrics.mean_ci95(np.stack([x, 2 * x], axis=1), axis=0)  # per column
    np.testing.assert_allclose(mean, [3.0, 6.0])
    np.testing.assert_allclose(half[1], 2 * half[0])
    mean, half = metrics.mean_ci95(np.array([0.5]))
    assert float(mean) == 0.5 and np.isnan(half)  # n = 1: no CI


def test_mean_ci95_nan_handling():
    x = np.array([[1.0, np.nan], [2.0, 3.0], [3.0, 4.0]])
    mean, half = metrics.mean_ci95(x)
    assert np.isnan(mean[1]) and np.isnan(half[1])
    mean, half = metrics.mean_ci95(x, ignore_nan=True)
    np.testing.assert_allclose(mean, [2.0, 3.5])
    s = math.sqrt(0.5)  # column 1: values 3, 4, n = 2, t_{0.975,1}
    np.testing.assert_allclose(half[1], 12.706205 * s / math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(half[0], 4.302653 / math.sqrt(3), rtol=1e-6)


def test_summarize_and_summary_table():
    R_b = np.stack([R3, np.full((3, 3), 0.5)])
    correct = np.broadcast_to(np.array([50, 60, 100]), (2, 3, 3))
    per_seed = metrics.summarize(R_b, b=B3, correct=correct, count=np.array([100, 80, 200]))
    assert set(per_seed) == {
        "acc",
        "avg_incremental_acc",
        "bwt",
        "forgetting",
        "learning_acc",
        "fwt",
        "pooled_acc",
    }
    for values in per_seed.values():
        assert values.shape == (2,) and values.dtype == np.float64
    np.testing.assert_allclose(per_seed["acc"][0], EXPECTED["average_accuracy"], rtol=1e-6)
    np.testing.assert_allclose(per_seed["forgetting"][0], EXPECTED["forgetting"], rtol=1e-6)
    np.testing.assert_allclose(per_seed["pooled_acc"], 210 / 380, rtol=1e-6)
    per_seed["acc"][1] = np.nan  # writable: callers mark diverged seeds in place
    assert set(metrics.summarize(R3)) == {
        "acc",
        "avg_incremental_acc",
        "bwt",
        "forgetting",
        "learning_acc",
    }

    table = metrics.summary_table({"acc": np.array([0.7, np.nan, 0.9]), "bwt": [0.1, 0.3]})
    assert table["acc"]["n_excluded"] == 1
    np.testing.assert_allclose(table["acc"]["mean"], 0.8)
    np.testing.assert_allclose(table["acc"]["ci95"], 12.706205 * math.sqrt(0.02) / math.sqrt(2))
    assert table["acc"]["per_seed"] == [0.7, None, 0.9]
    assert "n_excluded" not in table["bwt"]
    assert all(type(v) is float for v in (table["bwt"]["mean"], table["bwt"]["ci95"]))
    assert metrics.summary_table({"acc": [0.5]})["acc"]["ci95"] is None


def test_difference_ci95_is_welchs_interval():
    a, b = np.array([1.0, 2.0, 3.0, np.nan]), np.array([0.0, 0.5, 1.0])
    diff, half = metrics.difference_ci95(a, b)  # NaN seeds are dropped
    va, vb = 1.0 / 3, 0.25 / 3
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # 2.94 -> 2
    assert diff == 1.5 and int(dof) == 2
    np.testing.assert_allclose(half, metrics.t_quantile_975(2) * np.sqrt(va + vb))
    assert np.isnan(metrics.difference_ci95([1.0], b)[1])
    assert metrics.difference_ci95([1.0, 1.0], [0.0, 0.0]) == (1.0, 0.0)


def test_new_task_accuracy_is_the_diagonal_in_float64_with_nan_for_diverged_seeds():
    R = np.stack([R3, R3 / 3])  # [2 seeds, 3, 3]
    curves = metrics.new_task_accuracy(R)
    assert curves.dtype == np.float64 and curves.shape == (2, 3)
    np.testing.assert_array_equal(curves[0], [0.90, 0.80, 0.95])  # bit for bit, no float32
    assert np.all(np.isnan(metrics.new_task_accuracy(R, diverged=[False, True])[1]))
    np.testing.assert_array_equal(
        metrics.new_task_accuracy(R, diverged=[False, True])[0], curves[0]
    )
    with pytest.raises(ValueError, match=re.escape("R must be of shape [..., T, T] with T >= 1")):
        metrics.new_task_accuracy(np.zeros((2, 3)))


def test_plasticity_loss_compares_the_first_and_the_last_window():
    curves = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.5, 0.5, 0.5, np.nan]])
    out = metrics.plasticity_loss(curves, window=2)
    np.testing.assert_allclose(out["first"], [0.85, 0.5])
    np.testing.assert_allclose(out["last"][0], 0.55)  # tasks 4 and 5, not 3 and 4
    np.testing.assert_allclose(out["plasticity_loss"][0], 0.3)
    assert np.isnan(out["last"][1]) and np.isnan(out["plasticity_loss"][1])
    whole = metrics.plasticity_loss(curves[:1], window=5)
    assert whole["plasticity_loss"][0] == 0.0
    for window, error in [(0, ValueError), (6, ValueError), (1.0, TypeError)]:
        with pytest.raises(error, match="window must be"):
            metrics.plasticity_loss(curves, window=window)


def test_nanmean_leaves_nan_out_and_is_nan_without_a_warning_where_all_are():
    values = np.array([[1.0, np.nan, np.nan], [3.0, 5.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would raise here
        np.testing.assert_array_equal(metrics.nanmean(values, axis=0), [2.0, 5.0, np.nan])
        np.testing.assert_array_equal(metrics.nanmean(values, axis=1), [1.0, 4.0])
        assert metrics.nanmean(values) == 3.0
        assert np.isnan(metrics.nanmean([np.nan, np.nan]))
