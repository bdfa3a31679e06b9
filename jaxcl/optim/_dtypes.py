"""Dtypes of optimizer state: accumulate in float32 (or wider) whatever the parameters' dtype."""

from typing import Any

import jax
import jax.numpy as jnp

from jaxcl._checks import fail


def check_accumulator_dtype(dtype: Any) -> None:
    """Raises unless ``dtype`` is None or a floating dtype."""
    if dtype is None:
        return
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        fail("accumulator_dtype", "None or a floating dtype", dtype)


def accumulator_dtype(param: jax.typing.ArrayLike, requested: Any) -> jnp.dtype:
    """``requested``, or by default (None) the parameter's dtype promoted to float32 at least.

    A bfloat16 or float16 accumulator stops growing once an increment falls below half its
    spacing (after ~256 unit increments for bfloat16), so low-precision parameters get a
    float32 state; float64 parameters keep float64.
    """
    if requested is not None:
        return jnp.dtype(requested)
    return jnp.promote_types(jnp.result_type(param), jnp.float32)


def accumulator_like(params: Any, value: jax.typing.ArrayLike, requested: Any) -> Any:
    """A per-parameter buffer filled with ``value`` in :func:`accumulator_dtype`."""
    return jax.tree.map(
        lambda p: jnp.full(jnp.shape(p), value, accumulator_dtype(p, requested)), params
    )
