"""FlyModel's Kenyon-cell code: the notebook's quantile, projection and code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.models.fly import kenyon_cells, kept_cells, random_projection


def notebook_kc(p, R, thresh=0.0):
    """``get_KC`` of FlyModel/TestingFlyModel.ipynb, in numpy (R: [n_kc, n_orn])."""
    kc = R @ p
    kc[kc <= thresh] = 0
    kc[kc < np.quantile(kc, 0.99)] = 0
    return kc / np.max(kc)


@pytest.mark.parametrize("n,kept", [(10000, 100), (1000, 10), (100, 1), (101, 2)])
def test_kept_cells_matches_numpy_quantile(n, kept):
    assert kept_cells(n) == kept
    values = np.random.default_rng(n).permutation(n).astype(float)  # distinct values
    assert (values >= np.quantile(values, 0.99)).sum() == kept


@pytest.mark.parametrize("num_cells", [1000, 300])
def test_kenyon_cells_match_the_notebook(num_cells):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 40)).astype(np.float32)
    x[:, :5] = 255  # ties, as saturated MNIST pixels give
    R = np.asarray(
        random_projection(jax.random.PRNGKey(1), input_dim=40, num_cells=num_cells, n_response=8)
    )
    got = np.asarray(kenyon_cells(jnp.asarray(x), jnp.asarray(R)))
    for i in range(6):
        p = (x[i] - x[i].min()) / (x[i].max() - x[i].min())  # sklearn minmax_scale(axis=1)
        np.testing.assert_allclose(
            got[i], notebook_kc(p.astype(np.float64), R.T.astype(np.float64)), atol=1e-6
        )


def test_random_projection_has_n_response_distinct_inputs_per_cell():
    R = random_projection(jax.random.PRNGKey(0), input_dim=30, num_cells=50, n_response=7)
    assert R.shape == (30, 50)
    np.testing.assert_array_equal(R.sum(0), 7)
    assert set(np.unique(np.asarray(R))) == {0.0, 1.0}
