"""The one mask check shared by jaxcl.optim and jaxcl.sparse: structure, shapes, dtype."""

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxcl import sparse
from jaxcl.optim._masks import check_mask, subset_like

PARAMS = {"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
GOOD = {"dense": {"kernel": jnp.ones((2, 3), bool), "bias": jnp.ones(3, bool)}}


def test_a_matching_mask_passes_also_when_traced():
    check_mask(GOOD, PARAMS)
    check_mask(
        {"dense": {"kernel": GOOD["dense"]["kernel"], "bias": None}}, PARAMS, allow_none=True
    )
    jax.jit(lambda m: check_mask(m, PARAMS))(GOOD)
    jax.vmap(lambda m: check_mask(m, PARAMS))(jax.tree.map(lambda m: jnp.stack([m, m]), GOOD))


@pytest.mark.parametrize(
    "mask, kwargs, error, match",
    [
        (
            {"dense": {"kernel": jnp.ones(3, bool), "bias": jnp.ones(3, bool)}},
            {},
            ValueError,
            r"mask\['dense'\]\['kernel'\] must be of the parameter's shape \(2, 3\) "
            r"\(no broadcasting\), got \(3,\)",
        ),
        (
            {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3, bool)}},
            {},
            TypeError,
            r"mask\['dense'\]\['kernel'\] must be a boolean array, got dtype float32",
        ),
        (
            {"dense": {"kernel": jnp.ones((2, 3), bool), "bias": None}},
            {},
            ValueError,
            r"missing leaves \[\"\['dense'\]\['bias'\]\"\]",
        ),
        (
            {"dense": {"kernel": jnp.ones((2, 3), bool)}, "extra": jnp.ones(1, bool)},
            {"allow_none": True},
            ValueError,
            r"\(None leaves allowed\).*missing leaves .*bias.*unexpected leaves .*extra",
        ),
    ],
)
def test_mismatches_are_named(mask, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_mask(mask, PARAMS, **kwargs)


def test_sparse_check_masks_is_the_same_check():
    # On main sparse.check_masks accepted a float mask.
    float_mask = jax.tree.map(lambda m: m.astype(jnp.float32), GOOD)
    with pytest.raises(TypeError, match=r"masks\['dense'\]\['bias'\] must be a boolean array"):
        sparse.check_masks(float_mask, PARAMS)
    sparse.check_masks(float_mask, PARAMS, name="scores", boolean=False)
    with pytest.raises(ValueError, match=r"scores\['dense'\]\['bias'\] must be .*, got \(4,\)"):
        sparse.check_masks({"dense": {**GOOD["dense"], "bias": jnp.ones(4)}}, PARAMS, name="scores")


def test_subset_like_follows_optax_masked_nodes():
    like = {"dense": {"kernel": PARAMS["dense"]["kernel"], "bias": optax.MaskedNode()}}
    subset = subset_like(GOOD, like)
    assert subset["dense"]["bias"] == optax.MaskedNode()
    check_mask(subset, like)
    # A whole sub-tree hidden by a prefix mask, and a mask already subset, are handled too.
    assert subset_like(GOOD, {"dense": optax.MaskedNode()}) == {"dense": optax.MaskedNode()}
    assert subset_like(subset, like) == subset
    assert subset_like(GOOD, PARAMS) is GOOD
