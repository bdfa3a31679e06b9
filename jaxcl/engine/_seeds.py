"""The seed axis: one PRNG key per seed, and its split over devices.

Seed ``s`` always runs from ``PRNGKey(s)``, whatever the other seeds of the call, so a
seed's run does not depend on how many seeds run beside it or on which device, up to the
float rounding of XLA's batched code for another number of seeds per device. Every
leaf of a seed-batched tree has the seed axis first; on several devices that axis is
sharded, one block of seeds per device. In a multi-process run (:mod:`jaxcl.processes`)
the devices are those of every process, so each process holds only its own blocks.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcl import _checks
from jaxcl.types import PyTree

__all__ = ["place", "seed_keys", "seed_sharding"]


def _seed(seed: Any) -> int:
    """``seed`` as an int in ``[0, 2**32)``, or raises.

    PRNGKey keeps a seed's low 32 bits, so outside that range distinct seeds share a key
    (-1 gives the key of 2**32 - 1, 2**32 that of 0).
    """
    try:
        if isinstance(seed, (bool, np.bool_)):
            raise TypeError
        value = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seeds must be ints in [0, 2**32), got {seed!r} of type {type(seed).__name__}"
        ) from None
    if not 0 <= value < 2**32:
        raise ValueError(f"seeds must be ints in [0, 2**32), got {seed!r}")
    return value


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """``[S, 2]`` keys, one ``PRNGKey(seed)`` per seed: a seed's key never depends on S.

    Raises:
      TypeError: a seed that is not an int (floats and bools are refused, not truncated).
      ValueError: no seeds, or a seed outside ``[0, 2**32)``.
    """
    values = [_seed(s) for s in seeds]
    if not values:
        raise ValueError("seeds must be a non-empty sequence of ints, got no seeds")
    return jnp.stack([jax.random.PRNGKey(v) for v in values])


def seed_sharding(num_seeds: int) -> NamedSharding | None:
    """The seed axis split over all devices, of every process (None on one device).

    Raises:
      ValueError: ``num_seeds`` is not a multiple of the device count (pad the seeds, as
        :func:`jaxcl.execution.run_seeds` does).
    """
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if num_seeds % len(devices):
        _checks.fail("num_seeds", f"a multiple of the device count {len(devices)}", num_seeds)
    return NamedSharding(Mesh(np.asarray(devices), ("seeds",)), PartitionSpec("seeds"))


def place(tree: PyTree, sharding: NamedSharding | None) -> PyTree:
    """``tree`` (seed axis first on every leaf) put on ``sharding``; as is without one."""
    return tree if sharding is None else jax.device_put(tree, sharding)
