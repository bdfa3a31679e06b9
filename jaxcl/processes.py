"""The processes of a run spread over several hosts (``jax.distributed``).

A sweep larger than one machine runs as one process per host, every process running the
same command. Once ``jax.distributed.initialize`` has joined them, ``jax.devices()`` lists
the devices of every process (the global mesh), and a jitted program whose inputs are
sharded over them runs on all hosts at once, its collectives going over the network (on
CPU through Gloo over TCP). JAX documentation, "Multi-process environments" /
"Distributed arrays and automatic parallelization".

Each process addresses only its own devices. An array sharded over the global mesh is
read back by gathering it from every process (:func:`host_array`), and a value that only
one process knows (its free memory, a signal it received) is shared with
:func:`each_process`. Both are collectives: every process must make the same calls in
the same order. A file that all processes would write with the same content is written by
process 0 alone (:func:`is_main`). With one process every function here is a plain local
operation.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["each_process", "host_array", "is_main"]


def is_main() -> bool:
    """Whether this is process 0, the one that writes the files shared by all."""
    return jax.process_index() == 0


def host_array(x: Any) -> np.ndarray:
    """``x`` as a host numpy array, gathered from every process if it spans several.

    Collective for an array that is not fully addressable: every process calls it for it.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def each_process(value: int) -> np.ndarray:
    """``[P]`` int32: every process's ``value``, in process order (collective).

    E.g. ``each_process(n)[0]`` is process 0's choice, ``each_process(flag).max()`` says
    whether any process raised ``flag``.
    """
    if jax.process_count() == 1:
        return np.asarray([value], np.int32)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)
