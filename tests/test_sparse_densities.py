"""ERK and uniform per-layer densities, exact integer counts, and refused densities."""

import math
import re

import numpy as np
import pytest

from jaxcl import sparse

# The paper's ResNet-18 for CIFAR-100 (HWIO conv kernels, [in, out] head): 11,218,112 weights.
RESNET18_SHAPES = (
    [(7, 7, 3, 64)]
    + [(3, 3, 64, 64)] * 4
    + [(3, 3, 64, 128), (3, 3, 128, 128), (1, 1, 64, 128), (3, 3, 128, 128), (3, 3, 128, 128)]
    + [(3, 3, 128, 256), (3, 3, 256, 256), (1, 1, 128, 256), (3, 3, 256, 256), (3, 3, 256, 256)]
    + [(3, 3, 256, 512), (3, 3, 512, 512), (1, 1, 256, 512), (3, 3, 512, 512), (3, 3, 512, 512)]
    + [(512, 100)]
)


def test_erk_hand_computed_without_dense_layers():
    # r = (20/100, 110/1000); ε = 0.2·1100 / (0.2·100 + 0.11·1000) = 220/130.
    eps = 220 / 130
    np.testing.assert_allclose(
        sparse.erk_densities([(10, 10), (100, 10)], 0.2), [0.2 * eps, 0.11 * eps], rtol=1e-12
    )


def test_erk_hand_computed_with_a_layer_made_dense():
    # First pass: ε = 52/24, ε·r = 2.17 > 1 for (2, 2) (r = 1), which becomes dense.
    # Re-solved: ε·0.2·100 = 0.5·100 − 0.5·4 = 48, so the (10, 10) layer has density 0.48.
    np.testing.assert_allclose(sparse.erk_densities([(2, 2), (10, 10)], 0.5), [1.0, 0.48])


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5, 0.9, 1.0])
def test_erk_keeps_the_overall_density_exact(density):
    d = np.asarray(sparse.erk_densities(RESNET18_SHAPES, density))
    sizes = np.asarray([math.prod(s) for s in RESNET18_SHAPES])
    assert np.all((d > 0) & (d <= 1))
    np.testing.assert_allclose((d * sizes).sum(), density * sizes.sum(), rtol=1e-12)
    counts = sparse.layer_counts(RESNET18_SHAPES, d)
    assert sum(counts) == round(density * sizes.sum())
    assert np.all(np.abs(np.asarray(counts) - d * sizes) < 1)


def test_erk_gives_small_layers_more_density_than_large_ones():
    d = sparse.erk_densities(RESNET18_SHAPES, 0.1)
    assert d[0] > d[1] > d[-3]  # stem > 64-wide 3x3 > 512-wide 3x3
    assert sparse.uniform_densities(RESNET18_SHAPES, 0.1) == [0.1] * len(RESNET18_SHAPES)


def test_layer_counts_largest_remainder():
    # 0.5·3 = 1.5 and 0.5·5 = 2.5 -> floors 1 + 2, total round(4.0) = 4: one more to the first.
    assert sparse.layer_counts([(3,), (5,)], [0.5, 0.5]) == [2, 2]
    assert sparse.layer_counts([(4,), (6,)], [1.0, 0.5]) == [4, 3]


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_outside_unit_interval_is_refused(density):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        sparse.erk_densities([(3, 3)], density)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        sparse.densities([(3, 3)], density, init="uniform")


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be one of 'erk', 'uniform', got 'xavier'"):
        sparse.densities([(3, 3)], 0.5, init="xavier")


def test_a_layer_left_without_weights_is_refused_with_the_density_that_keeps_one():
    # 0.01 · 20 = 0.2 rounds to 0: the (4, 5) layer would keep no weight.
    with pytest.raises(
        ValueError,
        match=r"the density of layer 0 \(shape \(4, 5\), 20 weights\) must be at least "
        r"1/20 = 0.05 to keep one weight, got 0.01",
    ):
        sparse.layer_counts([(4, 5), (10,)], [0.01, 0.5])
    assert sparse.layer_counts([(4, 5), (10,)], [0.05, 0.5]) == [1, 5]


@pytest.mark.parametrize("init", ["erk", "uniform"])
def test_min_density_keeps_a_weight_in_every_layer(init):
    shapes = [(3, 3, 1, 8), (200, 64), (64, 10)]
    sizes = np.asarray([math.prod(s) for s in shapes])
    d = sparse.min_density(shapes, init=init)
    assert np.all(np.asarray(sparse.densities(shapes, d, init=init)) * sizes >= 1)
    below = np.asarray(sparse.densities(shapes, 0.999 * d, init=init)) * sizes
    assert below.min() < 1  # the smallest such density
    if init == "uniform":
        np.testing.assert_allclose(d, 1 / sizes.min())
    _, counts = sparse.density_counts(shapes, d, init=init)
    assert min(counts) >= 1
    with pytest.raises(ValueError, match="to keep a weight in every layer") as error:
        sparse.density_counts(shapes, d / 50, init=init)
    stated = float(re.search(r"density must be at least ([\d.e-]+)", str(error.value))[1])
    assert d <= stated <= 1.01 * d  # rounded up: the stated density still keeps them all


@pytest.mark.parametrize("density", ["0.5", True, None, [0.5]])
def test_density_that_is_not_a_real_number_is_refused(density):
    with pytest.raises(TypeError, match=r"density must be a real number in \(0, 1\], got"):
        sparse.densities([(3, 3)], density, init="erk")
