"""Exact top-k masks, random initial masks with exact per-layer counts, mask checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import sparse

PARAMS = {"a": jnp.zeros((4, 5)), "b": {"kernel": jnp.zeros((2, 2, 3, 4))}, "c": jnp.zeros((7,))}


def test_top_k_mask_breaks_ties_by_lower_index():
    mask = sparse.top_k_mask(jnp.zeros((2, 3)), 4, k_max=5)
    np.testing.assert_array_equal(mask, [[True, True, True], [True, False, False]])


def test_top_k_mask_traced_count_and_excluded_entries():
    scores = jnp.array([0.3, -jnp.inf, 0.9, 0.1, -jnp.inf, 0.5])
    pick = jax.jit(lambda k: sparse.top_k_mask(scores, k, k_max=4))
    np.testing.assert_array_equal(pick(2), [False, False, True, False, False, True])
    np.testing.assert_array_equal(pick(0), np.zeros(6, bool))
    assert int(pick(4).sum()) == 4 and not bool(pick(4)[1] | pick(4)[4])


def test_random_masks_have_exact_counts_under_jit():
    counts = jnp.array([3, 17, 1])
    draw = jax.jit(sparse.random_masks)
    masks = draw(jax.random.PRNGKey(0), PARAMS, counts)
    np.testing.assert_array_equal(sparse.mask_counts(masks), counts)
    other = draw(jax.random.PRNGKey(1), PARAMS, counts)
    assert not np.array_equal(masks["a"], other["a"])


def test_bernoulli_masks_match_the_density_on_average():
    big = {"w": jnp.zeros((200, 200))}
    masks = sparse.random_masks(
        jax.random.PRNGKey(0), big, None, densities=jnp.array([0.1]), bernoulli=True
    )
    assert abs(float(masks["w"].mean()) - 0.1) < 0.005
    with pytest.raises(ValueError, match="densities must be given with bernoulli=True, got None"):
        sparse.random_masks(jax.random.PRNGKey(0), big, None, bernoulli=True)


def test_apply_masks_zeroes_masked_out_weights():
    params = {"w": jnp.arange(1.0, 5.0)}
    out = sparse.apply_masks(params, {"w": jnp.array([True, False, True, False])})
    np.testing.assert_array_equal(out["w"], [1.0, 0.0, 3.0, 0.0])


def test_masks_that_do_not_match_the_parameters_are_refused():
    good = jax.tree.map(lambda p: jnp.ones(p.shape, bool), PARAMS)
    sparse.check_masks(good, PARAMS)
    bad_shape = {**good, "c": jnp.ones((6,), bool)}
    with pytest.raises(
        ValueError, match=r"masks\['c'\] must be of the parameter's shape .*, got \(6,\)"
    ):
        sparse.apply_masks(PARAMS, bad_shape)
    with pytest.raises(ValueError, match="must have the parameters' structure"):
        sparse.apply_masks(PARAMS, {"a": good["a"]})


def _lexicographic_top_k(scores, ties, k):
    """Reference: the k first entries ordered by (score descending, tie key ascending)."""
    order = np.lexsort((np.asarray(ties).ravel(), -np.asarray(scores).ravel()))
    mask = np.zeros(np.size(scores), bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(scores))


def test_top_k_mask_with_tie_keys_is_the_lexicographic_order():
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.integers(0, 4, size=(6, 7)).astype(np.float32))  # many ties
    scores = scores.at[0, 0].set(-0.0).at[0, 1].set(0.0).at[1, 2].set(-jnp.inf)
    pick = jax.jit(lambda s, t, k: sparse.top_k_mask(s, k, k_max=30, ties=t))
    for seed in range(5):
        ties = sparse.random_bits_like(jax.random.PRNGKey(seed), scores)
        for k in (0, 1, 9, 30):
            np.testing.assert_array_equal(
                pick(scores, ties, k), _lexicographic_top_k(scores, ties, k)
            )


def test_random_tie_keys_choose_uniformly_among_equal_scores():
    # Index 0 scores highest; indices 1-8 tie at 0.5; 9 scores lowest. Pick 4: index 0
    # always, 9 never, and 3 of the 8 tied ones with probability 3/8 each.
    scores = jnp.array([2.0] + [0.5] * 8 + [0.1])
    pick = jax.jit(
        jax.vmap(
            lambda key: sparse.top_k_mask(
                scores, 4, k_max=5, ties=sparse.random_bits_like(key, scores)
            )
        )
    )
    chosen = np.asarray(pick(jax.random.split(jax.random.PRNGKey(0), 4000)))
    assert chosen[:, 0].all() and not chosen[:, 9].any()
    np.testing.assert_array_equal(chosen.sum(1), 4)
    freq = chosen[:, 1:9].mean(0)
    np.testing.assert_allclose(freq, 3 / 8, atol=0.04)  # 5 sigma of a binomial(4000, 3/8)
    # The lower-index rule (ties=None) always takes the three lowest tied indices.
    np.testing.assert_array_equal(
        np.flatnonzero(sparse.top_k_mask(scores, 4, k_max=5)), [0, 1, 2, 3]
    )


def test_tie_keys_of_the_wrong_shape_are_refused():
    with pytest.raises(
        ValueError, match=r"ties must be of shape \(2, 3\) \(the scores'\), got \(3,\)"
    ):
        sparse.top_k_mask(jnp.zeros((2, 3)), 1, k_max=2, ties=jnp.zeros(3, jnp.uint32))


def _sorted_top_k(scores, ties, k, k_max):
    """Reference: the first min(k, k_max) indices of a stable ``lax.sort`` by (−score, tie)."""
    flat = scores.reshape(-1)
    order = jnp.arange(flat.size)
    keys = (-flat,) if ties is None else (-flat, ties.reshape(-1))
    idx = jax.lax.sort((*keys, order), num_keys=len(keys))[-1][:k_max]
    chosen = jnp.arange(k_max) < k
    return jnp.zeros(flat.shape, bool).at[idx].set(chosen).reshape(scores.shape)


@pytest.mark.parametrize("tie_dtype", [None, np.uint32, np.int32])
def test_top_k_mask_selects_as_a_sort_would_under_vmap(tie_dtype):
    # Special values (±inf, NaN, −0.0 beside 0.0), many equal scores and equal tie keys.
    rng = np.random.default_rng(0)
    seeds, size, k_max = 3, 500, 400
    scores = np.round(rng.normal(size=(seeds, 20, 25)), 1).astype(np.float32)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    where = rng.random(scores.shape) < 0.3
    scores[where] = rng.choice(special, size=where.sum())
    ties = None
    if tie_dtype is not None:
        info = np.iinfo(tie_dtype)
        ties = jnp.asarray(rng.integers(info.min, info.max, size=scores.shape, dtype=tie_dtype))
        ties = ties.at[:, :10].set(ties[:, 10:20])  # some equal (score, tie) pairs
    for k in (0, 1, 37, 250, k_max, size):
        ks = jnp.full((seeds,), k)
        expected = jax.vmap(lambda s, t, k: _sorted_top_k(s, t, k, k_max))(scores, ties, ks)
        actual = jax.jit(jax.vmap(lambda s, t, k: sparse.top_k_mask(s, k, k_max=k_max, ties=t)))(
            scores, ties, ks
        )
        np.testing.assert_array_equal(actual, expected)
        assert int(actual[0].sum()) == min(k, k_max)


def test_wider_than_32_bit_order_keys_are_refused():
    with pytest.raises(TypeError, match="ties must be an array of at most 32-bit values"):
        sparse.top_k_mask(jnp.zeros(3), 1, k_max=2, ties=np.zeros(3, np.float64))


def test_top_k_masks_selects_in_each_array_as_top_k_mask_alone():
    rng = np.random.default_rng(2)
    shapes = [(3, 4), (50,), (2, 2, 5), (1,)]
    scores = [jnp.asarray(np.round(rng.normal(size=s), 1), jnp.float32) for s in shapes]
    ties = [jnp.asarray(rng.integers(0, 3, size=s, dtype=np.uint32)) for s in shapes]
    k_max = [6, 25, 20, 0]
    pick = jax.jit(lambda k: sparse.top_k_masks(scores, k, k_max=k_max, ties=ties))
    for k in ([0, 0, 0, 0], [1, 25, 7, 1], [6, 3, 20, 0], [9, 40, 1, 5]):
        together = pick(jnp.asarray(k))
        for i, mask in enumerate(together):
            alone = sparse.top_k_mask(scores[i], k[i], k_max=k_max[i], ties=ties[i])
            np.testing.assert_array_equal(mask, alone)
            assert int(mask.sum()) == min(k[i], k_max[i])


def test_top_k_masks_needs_a_bound_and_tie_keys_per_array():
    scores = [jnp.zeros(3), jnp.zeros(4)]
    with pytest.raises(ValueError, match=r"k_max must be one bound per array of scores \(2\)"):
        sparse.top_k_masks(scores, jnp.ones(2, jnp.int32), k_max=[1])
    with pytest.raises(ValueError, match=r"ties must be one array per array of scores \(2\)"):
        sparse.top_k_masks(scores, jnp.ones(2, jnp.int32), k_max=[1, 1], ties=[jnp.zeros(3)])
