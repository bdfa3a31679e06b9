"""Evaluations the engine does not do, as final diagnostics of the trained learners.

The engine (:mod:`jaxcl.engine`) scores ``learner.predict`` on the test sets after every
task. A measurement of the trained learners that differs from that (another split,
another mode of the model) is a :data:`jaxcl.execution.FinalDiagnostics`: pass it to
:func:`jaxcl.execution.run_seeds` (``final_diagnostics=``) or return it from an
:class:`~jaxcl.experiment.Experiment`'s ``final_diagnostics``; its arrays land in
``Results.diagnostics`` and are saved with the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcl import _checks
from jaxcl.engine import EngineState, Run
from jaxcl.execution import FinalDiagnostics
from jaxcl.losses import mask_logits
from jaxcl.scenarios import Scenario
from jaxcl.types import PyTree

__all__ = ["train_mode", "training_accuracy"]

# (learner state, inputs [B, D], PRNG key) -> logits [B, C]
Apply = Callable[[PyTree, jax.Array, jax.Array], jax.Array]


def train_mode(model: Any) -> Apply:
    """The ``apply`` of :func:`training_accuracy` for a :func:`jaxcl.learners.supervised`
    learner's flax ``model`` in training mode: ``model.apply({"params": ..., **model_state},
    x, train=True, rngs={"dropout": key})`` (dropout on, as a PyTorch model evaluated
    without ``model.eval()``).
    """

    def apply(state: PyTree, x: jax.Array, key: jax.Array) -> jax.Array:
        variables = {"params": state.params, **state.model_state}
        return model.apply(variables, x, train=True, rngs={"dropout": key})

    return apply


def training_accuracy(
    run: Run,
    apply: Apply,
    *,
    stream: int = 0,
    batch_size: int = 1000,
    name: str = "train_acc",
) -> FinalDiagnostics:
    """Accuracy of the trained learners on each task's *training* examples.

    For every seed and task ``t``, the task's training examples (in their stored order,
    in batches of ``batch_size``; the last batch is padded and its padding not counted)
    go through the task's input transform and ``apply(learner_state, x, key)``; logits
    outside the task's head are masked out (:meth:`jaxcl.scenarios.Scenario.logit_mask`)
    and ``accuracy[t] = correct / examples``. Batch ``b`` of task ``t`` gets the key
    ``fold_in(fold_in(k, stream), t · num_batches + b)``, ``k`` being the seed's final
    engine key and ``num_batches = ⌈longest task / batch_size⌉``, so a stochastic
    ``apply`` (e.g. the model in training mode, dropout on) draws its own masks for every
    seed, task and batch, reproducibly; ``stream`` tells measurements of one run apart.

    This is how the CLASSP authors report accuracy: on the training sets with the model
    left in training mode (``oswaldoludwig/CLASSP`` ``experiment_CV.py``): for a
    :func:`jaxcl.learners.supervised` learner whose module takes ``train`` (dropout),
    ``apply = train_mode(model)`` (:func:`train_mode`).

    Args:
      run: the compiled run whose trained states the result measures.
      apply: ``(learner state, x [B, D], key) -> logits [B, C]`` for one seed.
      stream: an integer in ``[0, 2³²)`` folded into each seed's final key.
      batch_size: examples per evaluation batch.
      name: the key of the measurement in ``Results.diagnostics``.

    Returns:
      A :data:`jaxcl.execution.FinalDiagnostics` giving ``{name: [S, T] float32}``.
    """
    if not 0 <= _checks.integer("stream", stream) < 2**32:
        _checks.fail("stream", "in [0, 2**32)", stream)
    _checks.positive_int("batch_size", batch_size)
    scenario = run.scenario
    num_batches = math.ceil(scenario.train_idx.shape[1] / batch_size)

    def per_seed(lstate: PyTree, key: jax.Array, sc: Scenario) -> jax.Array:
        def task_accuracy(t):
            def body(total, b):
                pos = b * batch_size + jnp.arange(batch_size)
                rows = sc.train_idx[t].at[pos].get(mode="fill", fill_value=0)
                x = sc.inputs(sc.train_x[rows], t)
                logits = apply(lstate, x, jax.random.fold_in(key, t * num_batches + b))
                logits = mask_logits(logits, sc.logit_mask(t))
                hit = (jnp.argmax(logits, -1) == sc.train_y[rows]) & (pos < sc.train_count[t])
                return total + jnp.sum(hit, dtype=jnp.int32), None

            total = jax.lax.scan(body, jnp.int32(0), jnp.arange(num_batches))[0]
            return total / sc.train_count[t]

        return jax.lax.map(task_accuracy, jnp.arange(sc.num_tasks))

    # The scenario is an argument, not a closed-over constant (no giant literals).
    evaluate = jax.jit(jax.vmap(per_seed, in_axes=(0, 0, None)))

    def final(state: EngineState) -> dict[str, jax.Array]:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, stream))(state.key)
        return {name: evaluate(state.learner, keys, scenario)}

    return final
