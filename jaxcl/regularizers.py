"""Weight-importance regularisers: EWC, MAS, SI and L2, as a penalty plus boundary updates.

Each regulariser is a :class:`Regularizer`, a bundle of pure functions over its own
NamedTuple state; ``jaxcl.learners.supervised(..., regularizer=r)`` adds
``r.penalty(params, state)`` to the loss, calls ``r.step`` after every optimizer update (SI's
path integral) and ``r.end_task`` at every task boundary, inside the engine's scan. They
work with any model and optimizer (SDMLP + EWC included).

All of them penalise ``λ Σ_i Ω_i (θ_i − θ*_i)²`` (no ½, as in the authors' code), with
λ their ``strength``:

* EWC (one slot per task, ``online_reg=False``): ``Σ_t λ Σ_i F_{t,i} (θ_i − θ*_{t,i})²``,
  kept exactly in O(1) memory by merging quadratics (:class:`QuadraticState`).
* MAS, SI, L2 (online, one slot): Ω accumulates across tasks (L2: Ω = 1), θ* is the
  parameter vector at the last boundary.

The hyperparameter defaults reproduce the SDM authors' code (``TrentBrick/
SDMContinualLearner`` ``models/CL_Benchmarks.py``, itself from GT-RIPL's
Continual-Learning-Benchmark; Bricken et al. App. G.1, Eq. 18): importance from 6 batches
of 512 random examples of the finished task (``boundary_examples = 3072``), the EWC Fisher
divided by 5·512, labels the model's own predictions, and the softmax temperature β.

References:
  Kirkpatrick et al. 2017 (EWC), https://arxiv.org/abs/1612.00796;
  Aljundi et al. 2018 (MAS), https://arxiv.org/abs/1711.09601;
  Zenke et al. 2017 (SI), https://arxiv.org/abs/1703.04200;
  Bricken et al. 2023, App. G.1 (the β coefficient), https://arxiv.org/abs/2303.11934.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcl import _checks
from jaxcl._registry import Registry
from jaxcl.losses import mask_logits
from jaxcl.types import Batch

__all__ = [
    "REGULARIZERS",
    "QuadraticState",
    "Regularizer",
    "SIState",
    "ewc",
    "get_regularizer",
    "l2",
    "mas",
    "merge_quadratic",
    "quadratic_penalty",
    "si",
    "tempered_nll",
]

PyTree = Any
LogitsFn = Callable[[PyTree, jax.Array], jax.Array]  # (params, x [B, D]) -> logits [B, C]


class Regularizer(NamedTuple):
    """Pure functions of a weight-importance regulariser (see the module docstring).

    Attributes:
      init: ``params -> state``.
      penalty: ``(params, state) -> scalar`` added to the loss (λ included).
      end_task: ``(params, state, logits_fn, batch, key) -> state`` at a task boundary;
        ``batch`` holds ``boundary_examples`` random training examples of the finished
        task and ``logits_fn(params, x)`` is the model in evaluation mode.
      step: ``(state, old_params, new_params, logits_fn, batch) -> state`` after every
        optimizer update, or None.
      boundary_examples: examples ``end_task`` needs (0: none).
    """

    init: Callable[[PyTree], PyTree]
    penalty: Callable[[PyTree, PyTree], jax.Array]
    end_task: Callable[[PyTree, PyTree, LogitsFn, Batch, jax.Array], PyTree]
    step: Callable[[PyTree, PyTree, PyTree, LogitsFn, Batch], PyTree] | None = None
    boundary_examples: int = 0


class QuadraticState(NamedTuple):
    """A quadratic penalty ``Σ_i Ω_i (θ_i − θ*_i)² + offset``.

    Attributes:
      importance: Ω, the params' structure.
      anchor: θ*, the params' structure.
      offset: float32 scalar; the minimum of a sum of merged quadratics (EWC), else 0.
    """

    importance: PyTree
    anchor: PyTree
    offset: jax.Array


class SIState(NamedTuple):
    """State of :func:`si`: the quadratic penalty plus this task's path integral ω."""

    quadratic: QuadraticState
    path: PyTree


# ----------------------------------------------------------------------------- helpers


def _check_batches(num_batches: int, batch_size: int) -> None:
    _checks.positive_int("num_batches", num_batches)
    _checks.positive_int("batch_size", batch_size)


def _zeros_state(params: PyTree) -> QuadraticState:
    zeros = jax.tree.map(jnp.zeros_like, params)
    return QuadraticState(zeros, params, jnp.zeros((), jnp.float32))


def quadratic_penalty(params: PyTree, state: QuadraticState) -> jax.Array:
    """``Σ_i Ω_i (θ_i − θ*_i)² + offset`` (without λ)."""
    terms = jax.tree.map(
        lambda p, w, a: jnp.sum(w * jnp.square(p - a)), params, state.importance, state.anchor
    )
    return sum(jax.tree.leaves(terms), state.offset)


def merge_quadratic(state: QuadraticState, importance: PyTree, anchor: PyTree) -> QuadraticState:
    """Adds ``Σ_i F_i (θ_i − a_i)²`` to a quadratic, exactly, keeping one (Ω, θ*) pair.

    Uses ``A(θ − p)² + F(θ − a)² = (A + F)(θ − m)² + A F / (A + F) · (p − a)²`` with
    ``m = (A p + F a) / (A + F)``, so the merged penalty and its gradient
    ``2 Σ_t F_t (θ − θ*_t)`` equal those of one slot per task (EWC with
    ``online_reg=False``) without storing every task's parameters.
    """

    total = jax.tree.map(jnp.add, state.importance, importance)

    def center(a, p, f, q, t):
        # Exact where one side has no weight, so a single task's anchor is θ* bit for bit.
        mixed = (a * p + f * q) / jnp.where(t > 0, t, 1.0)
        return jnp.where(a == 0, q, jnp.where(f == 0, p, mixed))

    def gap(a, p, f, q, t):
        return jnp.sum(jnp.where(t > 0, a * f / jnp.where(t > 0, t, 1.0), 0.0) * jnp.square(p - q))

    args = (state.importance, state.anchor, importance, anchor, total)
    gaps = jax.tree.leaves(jax.tree.map(gap, *args))
    return QuadraticState(
        total, jax.tree.map(center, *args), state.offset + sum(gaps, jnp.zeros((), jnp.float32))
    )


def _sub_batches(batch: Batch, num_batches: int, batch_size: int) -> tuple[jax.Array, ...]:
    n = num_batches * batch_size
    x = batch.x[:n].reshape(num_batches, batch_size, -1)
    y = batch.y[:n].reshape(num_batches, batch_size)
    valid = batch.valid[:n].reshape(num_batches, batch_size)
    return x, y, valid


def _sum_over_batches(fn: Callable, batch: Batch, num_batches: int, batch_size: int) -> PyTree:
    """``Σ_b fn(x_b, y_b, valid_b)`` over ``num_batches`` consecutive sub-batches."""
    xs = _sub_batches(batch, num_batches, batch_size)

    def body(total, xb):
        return jax.tree.map(jnp.add, total, fn(*xb)), None

    shapes = jax.eval_shape(fn, *(x[0] for x in xs))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return jax.lax.scan(body, zeros, xs)[0]


def tempered_nll(logits: jax.Array, labels: jax.Array, valid: jax.Array, beta: float):
    """``−Σ_b log softmax(β · z_b)[y_b]`` over valid rows (the authors' sum reduction)."""
    logp = jax.nn.log_softmax(beta * logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0))


# ----------------------------------------------------------------------------- EWC


def ewc(
    *,
    strength: float,
    beta: float = 1.0,
    predicted_labels: bool = True,
    num_batches: int = 6,
    batch_size: int = 512,
    divisor: float | None = None,
) -> Regularizer:
    """Elastic Weight Consolidation with a diagonal Fisher per task (one slot per task).

    At the end of task t, with ``boundary_examples = num_batches · batch_size`` random
    training examples split into batches b::

        F_t = Σ_b (∇_θ Σ_{x ∈ b} −log softmax(β · z(x))[ŷ(x)])² / divisor
        penalty = λ Σ_t Σ_i F_{t,i} (θ_i − θ*_{t,i})²

    with ŷ the model's own argmax prediction (``predicted_labels``) or the true label, θ*_t
    the parameters at the end of task t. Note the authors' accounting: the square is of a
    *batch-summed* gradient (not per-example), and ``divisor=None`` means
    ``(num_batches − 1) · batch_size`` (their loop uses 6 batches but divides by 5·512).
    β < 1 softens confident softmaxes, so the Fisher does not vanish (SDM paper App. G.1:
    β = 0.005 and λ = 200 on Split-MNIST). The per-task quadratics are merged exactly
    (:func:`merge_quadratic`).

    Args:
      strength: λ >= 0.
      beta: softmax temperature β > 0 of the Fisher's log-likelihood.
      predicted_labels: use the model's argmax (True, the authors') or the true labels.
      num_batches: batches of the Fisher estimate.
      batch_size: examples per batch.
      divisor: the Fisher's normaliser (> 0); None for the authors' ``(n − 1) · size``.

    Returns:
      A :class:`Regularizer` with :class:`QuadraticState`.
    """
    lam = _checks.non_negative("strength", strength, scalar=True)
    beta = _checks.positive("beta", beta, scalar=True)
    _check_batches(num_batches, batch_size)
    if divisor is None:
        divisor = max(num_batches - 1, 1) * batch_size
    divisor = _checks.positive("divisor", divisor, scalar=True)

    def end_task(params, state, logits_fn, batch, key):
        del key

        def squared_grad(x, y, valid):
            def loss(p):
                logits = mask_logits(logits_fn(p, x), batch.logit_mask)
                labels = jnp.argmax(logits, axis=-1) if predicted_labels else y
                return tempered_nll(logits, labels, valid, beta)

            return jax.tree.map(jnp.square, jax.grad(loss)(params))

        fisher = _sum_over_batches(squared_grad, batch, num_batches, batch_size)
        fisher = jax.tree.map(lambda f: f / divisor, fisher)
        return merge_quadratic(state, fisher, params)

    return Regularizer(
        init=_zeros_state,
        penalty=lambda params, state: lam * quadratic_penalty(params, state),
        end_task=end_task,
        boundary_examples=num_batches * batch_size,
    )


# ----------------------------------------------------------------------------- MAS


def mas(
    *,
    strength: float,
    num_batches: int = 6,
    batch_size: int = 512,
    divisor: float | None = None,
) -> Regularizer:
    """Memory Aware Synapses (online): importance from the output's squared norm.

    At the end of every task, with ``num_batches`` batches b of ``batch_size`` examples::

        Ω ← Ω + Σ_b |∇_θ mean_{x ∈ b, c} z_c(x)²| / divisor,   θ* ← θ

    (mean over examples and the task head's logits). The authors divide by the number of
    batches of the whole task's loader (``len(dataloader)``, about 24 for a Split-MNIST
    task at 512) although only 6 are used; ``divisor=None`` uses ``num_batches``.

    Args:
      strength: λ >= 0 (SDM paper: 0.5 on Split-MNIST).
      num_batches: batches used.
      batch_size: examples per batch.
      divisor: normaliser (> 0), None for ``num_batches``.

    Returns:
      A :class:`Regularizer` with :class:`QuadraticState`.
    """
    lam = _checks.non_negative("strength", strength, scalar=True)
    _check_batches(num_batches, batch_size)
    divisor = _checks.positive("divisor", num_batches if divisor is None else divisor, scalar=True)

    def end_task(params, state, logits_fn, batch, key):
        del key
        mask = batch.logit_mask

        def abs_grad(x, y, valid):
            def loss(p):
                sq = jnp.where(mask, jnp.square(logits_fn(p, x)), 0.0)
                return jnp.sum(jnp.where(valid[:, None], sq, 0.0)) / (
                    jnp.maximum(jnp.sum(valid), 1) * jnp.sum(mask)
                )

            return jax.tree.map(jnp.abs, jax.grad(loss)(params))

        new = _sum_over_batches(abs_grad, batch, num_batches, batch_size)
        importance = jax.tree.map(lambda o, n: o + n / divisor, state.importance, new)
        return QuadraticState(importance, params, state.offset)

    return Regularizer(
        init=_zeros_state,
        penalty=lambda params, state: lam * quadratic_penalty(params, state),
        end_task=end_task,
        boundary_examples=num_batches * batch_size,
    )


# ----------------------------------------------------------------------------- SI


def si(*, strength: float, beta: float = 1.0, damping: float = 0.1) -> Regularizer:
    """Synaptic Intelligence (online): importance from each weight's path integral.

    After every optimizer step, with g the gradient of the *unregularised* loss at the old
    parameters (here, as in the authors' code, ``Σ_batch −log softmax(β z)[y]``)::

        ω ← ω − g ⊙ (θ_new − θ_old)

    and at the end of every task, with Δ = θ − θ* the task's total movement::

        Ω ← Ω + ω / (Δ² + ξ),   ω ← 0,   θ* ← θ

    θ* starts at the initial parameters. The extra gradient costs one more backward pass
    per step.

    Deviation: in the authors' code the β-gradient is left in ``.grad`` and *added to the
    training gradient* (``backward(retain_graph=True)`` before the main backward); here it
    is only used for ω.

    Args:
      strength: λ >= 0 (SDM paper: 1500 on Split-MNIST).
      beta: softmax temperature β > 0 of the unregularised loss (SDM paper: 0.005).
      damping: ξ >= 0.

    Returns:
      A :class:`Regularizer` with :class:`SIState`.
    """
    lam = _checks.non_negative("strength", strength, scalar=True)
    beta = _checks.positive("beta", beta, scalar=True)
    damping = _checks.non_negative("damping", damping, scalar=True)

    def init(params):
        return SIState(_zeros_state(params), jax.tree.map(jnp.zeros_like, params))

    def step(state, old_params, new_params, logits_fn, batch):
        def loss(p):
            logits = mask_logits(logits_fn(p, batch.x), batch.logit_mask)
            return tempered_nll(logits, batch.y, batch.valid, beta)

        g = jax.grad(loss)(old_params)
        path = jax.tree.map(
            lambda w, gi, new, old: w - gi * (new - old), state.path, g, new_params, old_params
        )
        return state._replace(path=path)

    def end_task(params, state, logits_fn, batch, key):
        del logits_fn, batch, key
        q = state.quadratic
        importance = jax.tree.map(
            lambda o, w, p, a: o + w / (jnp.square(p - a) + damping),
            q.importance,
            state.path,
            params,
            q.anchor,
        )
        zeros = jax.tree.map(jnp.zeros_like, state.path)
        return SIState(QuadraticState(importance, params, q.offset), zeros)

    return Regularizer(
        init=init,
        penalty=lambda params, state: lam * quadratic_penalty(params, state.quadratic),
        end_task=end_task,
        step=step,
    )


# ----------------------------------------------------------------------------- L2


def l2(*, strength: float) -> Regularizer:
    """L2 to the last task's parameters: Ω = 1, θ* ← θ at every boundary.

    Args:
      strength: λ >= 0 (SDM paper: 10 in its Table 9).

    Returns:
      A :class:`Regularizer` with :class:`QuadraticState`.
    """
    lam = _checks.non_negative("strength", strength, scalar=True)

    def end_task(params, state, logits_fn, batch, key):
        del logits_fn, batch, key
        return QuadraticState(jax.tree.map(jnp.ones_like, params), params, state.offset)

    return Regularizer(
        init=_zeros_state,
        penalty=lambda params, state: lam * quadratic_penalty(params, state),
        end_task=end_task,
    )


REGULARIZERS: Registry[Callable[..., Regularizer]] = Registry(
    "regularizer", {"ewc": ewc, "mas": mas, "si": si, "l2": l2}
)


def get_regularizer(name: str, **hparams: Any) -> Regularizer:
    """The regulariser ``name`` (``"ewc"``, ``"mas"``, ``"si"``, ``"l2"``) with ``hparams``.

    Example: ``get_regularizer("ewc", strength=200.0, beta=0.005)``.

    Raises:
      ValueError: unknown name (the message lists the valid ones, sorted) or bad values.
      TypeError: a hyperparameter the regulariser does not take (the message names the
        ones it takes), a required one missing, or one of the wrong type.
    """
    return REGULARIZERS.build(name, **hparams)
