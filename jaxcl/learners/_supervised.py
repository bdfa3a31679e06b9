"""The gradient learner: a Flax module trained by an optax chain on masked cross-entropy."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcl.losses import masked_mean_cross_entropy
from jaxcl.regularizers import Regularizer
from jaxcl.types import Batch, Learner, PyTree

# Batch fields passed to a module whose __call__ accepts them as keywords (training only).
MODEL_BATCH_KEYWORDS = ("epoch", "valid")


class SupervisedState(NamedTuple):
    """State of :func:`supervised`.

    Attributes:
      params: the module's ``params`` collection.
      opt_state: the optimizer's state.
      model_state: the module's other collections (e.g. SDM's activation counters).
      regularizer_state: the regularizer's state (``()`` without one).
    """

    params: PyTree
    opt_state: optax.OptState
    model_state: PyTree
    regularizer_state: PyTree = ()


def _accepted_keywords(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """The ``names`` that the module's ``__call__`` accepts."""
    try:
        params = inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name in names if name in params)


def supervised(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    input_dim: int,
    projection: Callable[[PyTree], PyTree] | None = None,
    regularizer: Regularizer | None = None,
) -> Learner:
    """A learner trained by gradient steps of ``optimizer`` on masked cross-entropy.

    Each step computes ``g = ∇ L(w)`` with ``L = CE(w) + penalty(w)`` on the batch, then
    ``u, s = optimizer.update(g, s, w, grad_fn=∇L)`` (``grad_fn`` lets SAM/GNP evaluate
    the gradient elsewhere), ``w ← projection(w + u)``.

    Args:
      model: a Flax linen module mapping ``[B, D]`` to ``[B, C]`` logits. Collections other
        than ``params`` (e.g. activation counters) are carried in the state and are
        mutable during training steps only. If its ``__call__`` takes the keyword
        arguments ``epoch`` (int32 global epoch, for epoch-indexed schedules) or ``valid``
        (``[B]`` bool, False on padding rows), training steps pass them from the
        :class:`Batch`; evaluation calls it with ``x`` alone. If it takes ``train``
        (dropout), training steps pass ``train=True`` and the step's key as the
        ``"dropout"`` PRNG stream; evaluation, ``predict`` and the regulariser use its
        default (evaluation mode).
      optimizer: any optax transformation; extra arguments are passed when it accepts them.
      input_dim: ``D``, to initialise the module.
      projection: applied to the parameters after every step and at init (e.g.
        non-negativity and row normalisation for SDMLP, a sparse mask for DST).
      regularizer: a :class:`jaxcl.regularizers.Regularizer` (EWC, MAS, SI, L2): its
        penalty is added to the loss, its ``step`` (if any) runs after every update and
        its ``end_task`` at every task boundary, on ``boundary_examples`` examples of the
        finished task. Its functions see the model in evaluation mode.

    Returns:
      A :class:`Learner` whose state is a :class:`SupervisedState`.
    """
    optimizer = optax.with_extra_args_support(optimizer)
    project = projection or (lambda p: p)
    batch_keywords = _accepted_keywords(model, MODEL_BATCH_KEYWORDS)
    train_mode = bool(_accepted_keywords(model, ("train",)))

    def logits_fn(model_state: PyTree) -> Callable[[PyTree, jax.Array], jax.Array]:
        return lambda params, x: model.apply({"params": params, **model_state}, x)

    def init(key: jax.Array) -> SupervisedState:
        variables = model.init(key, jnp.zeros((1, input_dim), jnp.float32))
        params = project(variables["params"])
        model_state = {k: v for k, v in variables.items() if k != "params"}
        reg_state = regularizer.init(params) if regularizer is not None else ()
        return SupervisedState(params, optimizer.init(params), model_state, reg_state)

    def update(state: SupervisedState, batch: Batch, key: jax.Array) -> tuple[Any, jax.Array]:
        mutable = list(state.model_state)
        keywords = {name: getattr(batch, name) for name in batch_keywords}
        rngs = None
        if train_mode:  # SAM/GNP's second gradient (grad_fn) reuses the same dropout mask
            keywords["train"] = True
            rngs = {"dropout": key}

        def loss_fn(params):
            variables = {"params": params, **state.model_state}
            if mutable:
                logits, new_state = model.apply(
                    variables, batch.x, mutable=mutable, rngs=rngs, **keywords
                )
            else:
                logits, new_state = model.apply(variables, batch.x, rngs=rngs, **keywords), {}
            loss = masked_mean_cross_entropy(logits, batch)
            if regularizer is not None:
                loss = loss + regularizer.penalty(params, state.regularizer_state)
            return loss, new_state

        grad_fn = jax.grad(lambda p: loss_fn(p)[0])
        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
        params = project(optax.apply_updates(state.params, updates))
        reg_state = state.regularizer_state
        if regularizer is not None and regularizer.step is not None:
            reg_state = regularizer.step(
                reg_state, state.params, params, logits_fn(state.model_state), batch
            )
        return SupervisedState(params, opt_state, model_state, reg_state), loss

    def predict(state: SupervisedState, x: jax.Array, task: jax.Array) -> jax.Array:
        del task
        return logits_fn(state.model_state)(state.params, x)

    if regularizer is None:
        return Learner(init=init, update=update, predict=predict)

    def end_task(state: SupervisedState, batch: Batch, key: jax.Array) -> SupervisedState:
        reg_state = regularizer.end_task(
            state.params, state.regularizer_state, logits_fn(state.model_state), batch, key
        )
        return state._replace(regularizer_state=reg_state)

    return Learner(
        init=init,
        update=update,
        predict=predict,
        end_task=end_task,
        boundary_examples=regularizer.boundary_examples,
    )
