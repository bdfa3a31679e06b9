"""Reading a hyperparameter's value for a construction-time check, shared by the modules."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_real(name: str, value: Any, allowed: str) -> np.ndarray | None:
    """``value`` as a float64 array, or None when it is known only at run time.

    Schedules (callables) and traced values (e.g. ``optax.inject_hyperparams`` builds under
    ``jit``) are not checked. Anything but real numbers is refused with a ``TypeError``
    ``"<name> must be <allowed>, got <value>"``: ``True`` would act as 1, ``"0.1"`` would
    fail deep inside a traced function, a complex number has no order.
    """
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    # jnp.issubdtype knows bfloat16 (numpy's dtype.kind calls it "V"); bool is no integer.
    if not (jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)):
        raise TypeError(f"{name} must be {allowed}, got {value!r}.")
    return array.astype(np.float64)
