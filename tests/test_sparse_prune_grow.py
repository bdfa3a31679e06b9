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


def test_unknown_growth_is_refused():
    with pytest.raises(ValueError, match=r"growth must be one of \('random', 'unfired', 'gradi"):
        sparse.growth_schedule("magic", 3)
    with pytest.raises(ValueError, match="one name per task"):
        sparse.growth_schedule(["random", "gradient"], 3)


def test_adaptive_growth_switches_halfway():
    assert sparse.adaptive_growth(10) == ("random",) * 5 + ("gradient",) * 5
    assert sparse.adaptive_growth(5, first="unfired", then="momentum", switch_at=1) == (
        ("unfired",) + ("momentum",) * 4
    )


def test_cosine_death_rate():
    rate = lambda s: float(sparse.cosine_death_rate(s, 100))  # noqa: E731
    np.testing.assert_allclose(
        [rate(0), rate(50), rate(100), rate(150)], [0.5, 0.2525, 0.005, 0.005], rtol=1e-6
    )
