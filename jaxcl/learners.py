"""Learners: what the engine trains. A gradient learner wraps a Flax module and an optax chain.

A :class:`Learner` is a bundle of pure functions over an opaque per-seed state. The engine
(:mod:`jaxcl.engine`) calls ``init`` once per seed, ``update`` once per batch,
``begin_task``/``end_task`` at task boundaries and ``predict`` for evaluation, all inside
one ``jit(vmap(scan))``. Methods whose step is not a gradient step (e.g. FlyModel) are
learners too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcl.scenarios import mask_logits

PyTree = Any


class Batch(NamedTuple):
    """One training batch, padded to the batch size.

    Attributes:
      x: ``[B, D]`` inputs (the task's input transform already applied).
      y: ``[B]`` int32 labels.
      valid: ``[B]`` bool; False marks padding (the last partial batch of a task).
      task: int32 scalar, the task index.
      logit_mask: ``[C]`` bool, the logits that compete on this task (see Scenario.head).
      epoch: int32 scalar, the global epoch index (``task * epochs_per_task + e``), for
        schedules indexed by epoch (e.g. SDM's linear k annealing).
      index: int32 scalar, the batch's position in its task, ``e · batches_per_epoch + b``
        (for schedules within a task).
    """

    x: jax.Array
    y: jax.Array
    valid: jax.Array
    task: jax.Array
    logit_mask: jax.Array
    epoch: jax.Array
    index: jax.Array | int = 0


class Learner(NamedTuple):
    """Pure functions the engine drives; every state is per seed (the engine vmaps).

    Attributes:
      init: ``key -> state``.
      update: ``(state, batch, key) -> (state, loss)``; one training step.
      predict: ``(state, x, task) -> logits``; ``x`` is ``[B, D]``.
      begin_task: ``(state, task, key) -> state`` before a task's first batch.
      end_task: ``(state, batch, key) -> state`` after a task's last batch; ``batch`` holds
        ``boundary_examples`` random training examples of the finished task.
      boundary_examples: how many examples ``end_task`` receives (0: none needed).
      diagnostics: ``state -> dict of arrays`` recorded after every task, or None.
    """

    init: Callable[[jax.Array], PyTree]
    update: Callable[[PyTree, Batch, jax.Array], tuple[PyTree, jax.Array]]
    predict: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
    begin_task: Callable[[PyTree, jax.Array, jax.Array], PyTree] = lambda s, t, k: s
    end_task: Callable[[PyTree, Batch, jax.Array], PyTree] = lambda s, b, k: s
    boundary_examples: int = 0
    diagnostics: Callable[[PyTree], dict[str, jax.Array]] | None = None


class SupervisedState(NamedTuple):
    """State of :func:`supervised`: parameters, optimizer state, other model collections."""

    params: PyTree
    opt_state: optax.OptState
    model_state: PyTree


def masked_mean_cross_entropy(logits: jax.Array, batch: Batch) -> jax.Array:
    """Mean softmax cross-entropy over the batch's valid examples (padding excluded)."""
    logits = mask_logits(logits, batch.logit_mask)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
    valid = batch.valid.astype(losses.dtype)
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def supervised(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    input_dim: int,
    projection: Callable[[PyTree], PyTree] | None = None,
) -> Learner:
    """A learner trained by gradient steps of ``optimizer`` on masked cross-entropy.

    Each step computes ``g = ∇ L(w)`` on the batch, then
    ``u, s = optimizer.update(g, s, w, grad_fn=∇L)`` (``grad_fn`` lets SAM/GNP evaluate
    the gradient elsewhere), ``w ← projection(w + u)``.

    Args:
      model: a Flax linen module mapping ``[B, D]`` to ``[B, C]`` logits. Collections other
        than ``params`` (e.g. activation counters) are carried in the state and are
        mutable during training steps only.
      optimizer: any optax transformation; extra arguments are passed when it accepts them.
      input_dim: ``D``, to initialise the module.
      projection: applied to the parameters after every step (e.g. non-negativity and
        row normalisation for SDMLP, a sparse mask for DST).
    """
    optimizer = optax.with_extra_args_support(optimizer)
    project = projection or (lambda p: p)

    def init(key: jax.Array) -> SupervisedState:
        variables = model.init(key, jnp.zeros((1, input_dim), jnp.float32))
        params = project(variables["params"])
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return SupervisedState(params, optimizer.init(params), model_state)

    def update(state: SupervisedState, batch: Batch, key: jax.Array) -> tuple[Any, jax.Array]:
        del key
        mutable = list(state.model_state)

        def loss_fn(params):
            variables = {"params": params, **state.model_state}
            if mutable:
                logits, new_state = model.apply(variables, batch.x, mutable=mutable)
            else:
                logits, new_state = model.apply(variables, batch.x), {}
            return masked_mean_cross_entropy(logits, batch), new_state

        grad_fn = jax.grad(lambda p: loss_fn(p)[0])
        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
        params = project(optax.apply_updates(state.params, updates))
        return SupervisedState(params, opt_state, model_state), loss

    def predict(state: SupervisedState, x: jax.Array, task: jax.Array) -> jax.Array:
        del task
        return model.apply({"params": state.params, **state.model_state}, x)

    return Learner(init=init, update=update, predict=predict)
