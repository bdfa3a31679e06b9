"""Magnitude pruning, the four growth criteria, exact per-layer counts, the death rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import sparse

SHAPES = [(5,), (4, 5), (2, 9, 1), (2, 2, 4, 4)]


def test_magnitude_prune_hand_computed():
    w = jnp.array([0.5, -0.1, 0.3, 0.0, 0.9, -0.05, 0.2, 0.7])
    m = jnp.array([1, 1, 1, 0, 1, 0, 1, 1], bool)
    # Kept |w|: 0.5, 0.1, 0.3, 0.9, 0.2, 0.7 -> the two smallest are 0.1 (idx 1), 0.2 (idx 6).
    expected = [1, 0, 1, 0, 1, 0, 0, 1]
    np.testing.assert_array_equal(sparse.magnitude_prune(w, m, 2, k_max=4), expected)


def test_regrow_hand_computed():
    m = jnp.array([1, 0, 1, 0, 0, 1], bool)
    scores = jnp.array([9.0, 0.2, 8.0, 0.7, 0.5, 7.0])  # in-mask scores are ignored
    np.testing.assert_array_equal(sparse.regrow(m, scores, 2, k_max=3), [1, 0, 1, 1, 1, 1])


def _tree(values):
    return {f"l{i}": v for i, v in enumerate(values)}


@jax.jit
def _topology_update(weights, masks, fired, frozen, growth, rate, key):
    scores = sparse.growth_scores(
        growth, key, grads=weights, momentum=weights, fired=fired, frozen=frozen
    )
    return sparse.prune_and_regrow(weights, masks, scores, rate)


def test_prune_and_regrow_keeps_every_layer_count():
    rng = np.random.default_rng(0)
    weights = _tree([rng.normal(size=s).astype(np.float32) for s in SHAPES])
    counts = np.array([2, 10, 9, 32])

    def exact(n):  # n random positions per layer
        return _tree(
            [
                rng.permutation(np.arange(np.prod(s)) < k).reshape(s)
                for s, k in zip(SHAPES, n, strict=True)
            ]
        )

    masks, fired, frozen = exact(counts), exact(counts), exact([1, 3, 2, 5])
    for growth in range(len(sparse.GROWTH)):
        for rate in (0.0, 0.3, 0.5):
            update = _topology_update(
                weights, masks, fired, frozen, growth, rate, jax.random.PRNGKey(growth)
            )
            np.testing.assert_array_equal(sparse.mask_counts(update.masks), counts)
            np.testing.assert_array_equal(update.removed, np.ceil(rate * np.asarray(counts)))
            for old, new, k in zip(
                jax.tree.leaves(masks), jax.tree.leaves(update.masks), update.removed, strict=True
            ):
                left, entered = int((old & ~new).sum()), int((new & ~old).sum())
                assert left == entered <= int(k)  # just-pruned weights may grow back


def test_growth_scores_rank_as_documented():
    mask = {"w": jnp.array([1, 0, 0, 0, 0, 0], bool)}
    frozen = {"w": jnp.array([0, 0, 0, 1, 0, 0], bool)}
    fired = {"w": jnp.array([1, 1, 0, 0, 1, 0], bool)}
    grad = {"w": jnp.array([5.0, -0.4, 0.1, -9.0, 0.3, 0.2])}  # frozen idx 3 scores 0
    mom = {"w": jnp.array([0.0, 0.1, -0.6, 9.0, 0.5, 0.0])}
    key = jax.random.PRNGKey(0)

    def grown(name, k=2):
        s = sparse.growth_scores(name, key, grads=grad, momentum=mom, fired=fired, frozen=frozen)
        return np.flatnonzero(sparse.regrow(mask["w"], s["w"], k, k_max=k) & ~mask["w"])

    np.testing.assert_array_equal(grown("gradient"), [1, 4])
    np.testing.assert_array_equal(grown("momentum"), [2, 4])
    assert set(grown("unfired", 3)) == {2, 3, 5}  # the unfired positions go first
    assert 0 not in grown("random", 5)
    for name in sparse.GROWTH:  # a traced index selects the same criterion
        by_name = sparse.growth_scores(
            name, key, grads=grad, momentum=mom, fired=fired, frozen=frozen
        )
        by_index = jax.jit(
            lambda i: sparse.growth_scores(
                i, key, grads=grad, momentum=mom, fired=fired, frozen=frozen
            )
        )(sparse.GROWTH.index(name))
        np.testing.assert_array_equal(by_name["w"], by_index["w"])


def test_cosine_death_rate():
    rate = lambda s: float(sparse.cosine_death_rate(s, 100))  # noqa: E731
    np.testing.assert_allclose(
        [rate(0), rate(50), rate(100), rate(150)], [0.5, 0.2525, 0.005, 0.005], rtol=1e-6
    )


@jax.jit
@jax.vmap
def _regrow_dead(key):
    """A topology update where every candidate scores 0 (dead units): the new mask."""
    weights = {"w": jnp.arange(1.0, 13.0).reshape(3, 4)}
    masks = {"w": jnp.arange(12).reshape(3, 4) >= 6}  # the last six weights are kept
    scores = {"w": jnp.zeros((3, 4))}
    return sparse.prune_and_regrow(weights, masks, scores, 0.5, key=key).masks["w"]


def test_equal_growth_scores_are_broken_at_random_not_by_position():
    # Pruned: the three smallest kept weights (flat 6, 7, 8); grown: three of the nine
    # zero-score candidates 0-8 (the just-pruned ones included). The lower-index rule grew
    # 0, 1, 2 every time.
    new = np.asarray(_regrow_dead(jax.random.split(jax.random.PRNGKey(0), 600)))
    new = new.reshape(600, 12)
    assert new[:, 9:].all()
    np.testing.assert_array_equal(new[:, :9].sum(1), 3)
    np.testing.assert_allclose(new[:, :9].mean(0), 3 / 9, atol=0.1)
    without_key = sparse.prune_and_regrow(
        {"w": jnp.arange(1.0, 13.0).reshape(3, 4)},
        {"w": jnp.arange(12).reshape(3, 4) >= 6},
        {"w": jnp.zeros((3, 4))},
        0.5,
    ).masks["w"]
    np.testing.assert_array_equal(np.flatnonzero(without_key), [0, 1, 2, 9, 10, 11])


def test_equal_magnitudes_are_pruned_at_random():
    # Eight kept weights still at zero: prune two of them, chosen at random.
    weights, mask = jnp.zeros(8), jnp.ones(8, bool)
    prune = jax.jit(jax.vmap(lambda t: sparse.magnitude_prune(weights, mask, 2, k_max=4, ties=t)))
    pruned = ~np.asarray(prune(jax.random.bits(jax.random.PRNGKey(0), (400, 8), jnp.uint32)))
    np.testing.assert_array_equal(pruned.sum(1), 2)
    np.testing.assert_allclose(pruned.mean(0), 2 / 8, atol=0.1)
    np.testing.assert_array_equal(
        np.flatnonzero(~sparse.magnitude_prune(weights, mask, 2, k_max=4)), [0, 1]
    )


def test_unequal_scores_keep_their_order_with_random_ties():
    weights = {"w": jnp.array([5.0, 4.0, 0.1, 0.2, 3.0, 2.0, 0.0, 0.0])}
    masks = {"w": jnp.array([1, 1, 1, 1, 1, 1, 0, 0], bool)}
    scores = {"w": jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7, 0.9])}
    update = jax.jit(
        jax.vmap(lambda k: sparse.prune_and_regrow(weights, masks, scores, 0.34, key=k).masks)
    )
    new = np.asarray(update(jax.random.split(jax.random.PRNGKey(0), 300))["w"])
    # ceil(0.34 · 6) = 3 pruned, by magnitude: 0.1, 0.2, 2.0 (flat 2, 3, 5). Grown: 0.9 and
    # 0.7 always, then one of the three just pruned, tied at score 0, at random.
    np.testing.assert_array_equal(new[:, [0, 1, 4, 6, 7]], True)
    np.testing.assert_array_equal(new[:, [2, 3, 5]].sum(1), 1)
    np.testing.assert_allclose(new[:, [2, 3, 5]].mean(0), 1 / 3, atol=0.1)


@pytest.mark.parametrize("bad", ["fired", "frozen", "momentum"])
def test_growth_scores_refuse_trees_that_do_not_fit_the_gradients(bad):
    grads = {"w": jnp.ones((2, 3))}
    kwargs = dict(
        grads=grads,
        momentum=grads,
        fired={"w": jnp.ones((2, 3), bool)},
        frozen={"w": jnp.zeros((2, 3), bool)},
    )
    kwargs[bad] = {"w": kwargs[bad]["w"][0]}  # (3,): broadcast silently before
    with pytest.raises(ValueError, match=rf"{bad}\['w'\] must be of .*, got \(3,\)"):
        sparse.growth_scores("gradient", jax.random.PRNGKey(0), **kwargs)


def test_single_layer_prune_and_regrow_refuse_a_broadcast_mask():
    weights, mask = jnp.ones((2, 3)), jnp.ones(3, bool)
    with pytest.raises(ValueError, match=r"mask must be of .*, got \(3,\)"):
        sparse.magnitude_prune(weights, mask, 1, k_max=2)
    with pytest.raises(ValueError, match=r"mask must be of .*, got \(3,\)"):
        sparse.regrow(mask, weights, 1, k_max=2)
