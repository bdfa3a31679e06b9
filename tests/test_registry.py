"""Registry: a read-only mapping whose build refuses unknown names and keywords first."""

import functools
import re

import pytest

from jaxcl import activations, regularizers, scenarios
from jaxcl._registry import Registry
from jaxcl.optim import OPTIMIZERS


def _scale(x, /, *, factor, offset=0.0, _private=None):
    return factor * x + offset


REGISTRY = Registry("scaler", {"scale": _scale, "double": functools.partial(_scale, factor=2.0)})


def test_a_read_only_mapping_in_registration_order():
    assert list(REGISTRY) == ["scale", "double"] and len(REGISTRY) == 2
    assert REGISTRY["scale"] is _scale and "double" in REGISTRY and "halve" not in REGISTRY
    with pytest.raises(TypeError):
        REGISTRY["halve"] = _scale  # no item assignment


def test_hyperparameters_are_the_keyword_parameters_but_private_ones():
    assert REGISTRY.hyperparameters("scale") == ("factor", "offset")
    assert REGISTRY.hyperparameters("double") == ("factor", "offset")  # a preset is a default


def test_build_calls_the_factory_with_inputs_and_hyperparameters():
    assert REGISTRY.build("scale", 3.0, factor=2.0, offset=1.0) == 7.0
    assert REGISTRY.build("double", 3.0) == 6.0
    assert REGISTRY.lookup("scale", factor=1.0) is _scale


@pytest.mark.parametrize(
    "name, hparams, error, message",
    [
        ("halve", {}, ValueError, "scaler must be one of 'double', 'scale', got 'halve'"),
        (
            "scale",
            {"factor": 1.0, "bias": 0.0, "_private": 1},
            TypeError,
            "hyperparameters of scaler 'scale' must be among 'factor', 'offset', got '_private', "
            "'bias'",
        ),
        (
            "scale",
            {"offset": 1.0},
            TypeError,
            "hyperparameters of scaler 'scale' must include 'factor', got 'offset'",
        ),
    ],
)
def test_refusals_name_the_valid_choices_sorted(name, hparams, error, message):
    with pytest.raises(error, match=re.escape(message)):
        REGISTRY.build(name, 1.0, **hparams)


def test_a_factory_hiding_its_keywords_is_refused():
    with pytest.raises(TypeError, match="scaler 'any' must be a factory without \\*\\*kwargs"):
        Registry("scaler", {"any": lambda x, **kwargs: x})


@pytest.mark.parametrize(
    "registry, kind",
    [
        (OPTIMIZERS, "optimizer"),
        (activations.ACTIVATIONS, "activation"),
        (regularizers.REGULARIZERS, "regularizer"),
        (scenarios.SCENARIOS, "scenario"),
    ],
)
def test_every_library_registry_is_one(registry, kind):
    assert isinstance(registry, Registry)
    with pytest.raises(ValueError, match=f"^{kind} must be one of "):
        registry.lookup("nothing")
    for name in registry:
        registry.hyperparameters(name)  # every signature is readable
