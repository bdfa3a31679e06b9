"""Dynamic sparse training as a continual learner: one frozen sparse subnetwork per task.

Yildirim et al., "Continual Learning with Dynamic Sparse Training: Exploring Algorithms for
Effective Model Updates", CPAL 2024 (arXiv 2308.14831; code ``muratonuryildirim/CL-with-DST``).
Per task t:

1. a fresh random mask M_t with the configured per-layer densities (ERK or uniform) is drawn
   over *all* weights, free and frozen; free weights inside it start from their initial
   values (the model's initialiser, drawn once), free weights outside it are zero;
2. every step trains ``W ⊙ M_t`` on the task's own logits; weights of earlier tasks
   (``frozen``, the union of M_0..M_{t−1}) have their gradient zeroed and never move;
3. every ``update_frequency`` steps the topology changes: a cosine-annealed fraction of each
   layer's mask (0.5 → 0.005 over the task's steps, which the engine passes in
   ``Batch.task_steps``) with the smallest magnitudes is pruned and as
   many positions regrow by the task's growth criterion (random, unfired, gradient or
   momentum), ties at random; regrown free weights start at zero with reset optimizer
   moments;
4. task t is evaluated with ``W ⊙ M_t``, selected by the task identity
   (see :mod:`jaxcl.sparse._evaluation` for the evaluation variants).

Masks and counters are arrays in the learner state: the whole stream runs inside the
engine's scan without host round trips. The per-layer counts and the growth schedule
(:class:`DSTConfig`, from :func:`dst_config`) are arrays the learner is built with: given
as traced hyperparameters of a grid (:func:`jaxcl.engine.grid`), one compiled program
serves every density, init and growth setting of a model.

Deviations from the authors' code (deliberate): masks have exact per-layer counts
(``bernoulli=True`` restores their draws); the optimizer moments of regrown weights are
reset (their Adam keeps them); free weights entering a task's mask restart from their
initial values (theirs are zero from the second task on, as the merged network stores
zeros there); a
frozen weight regrown into the current mask is used with its frozen value in training as
at evaluation (theirs is zero during training and restored for evaluation); the final
weights of a task are kept (no checkpoint at the best training-accuracy epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcl import _checks
from jaxcl._checks import fail, positive_int
from jaxcl.losses import masked_mean_cross_entropy
from jaxcl.optim import became_active, reset_moments
from jaxcl.sparse import (
    GROWTH,
    apply_masks,
    check_masks,
    cosine_death_rate,
    density_counts,
    growth_scores,
    label_shift_maps,
    leaf_shapes,
    mask_counts,
    prune_and_regrow,
    random_masks,
)
from jaxcl.sparse._evaluation import check_evaluation
from jaxcl.sparse._prune_grow import check_growth
from jaxcl.types import Batch, Learner, PyTree

MOMENTUM_EPS = 1e-8  # the authors' m / (sqrt(v) + 1e-8)


class DSTConfig(NamedTuple):
    """A sparsity setting as arrays, which may be traced (the cells of a grid).

    Attributes:
      counts: ``[L]`` int32 kept weights per layer (parameter leaf order).
      densities: ``[L]`` float32 per-layer densities (used by Bernoulli masks).
      growth: ``[T]`` int32 growth criterion of each task, an index into ``GROWTH``.
    """

    counts: jax.Array
    densities: jax.Array
    growth: jax.Array


class DSTState(NamedTuple):
    """State of the DST learner (one seed).

    Attributes:
      params: dense weights: frozen weights of earlier tasks, the current task's weights
        inside ``mask``, zeros elsewhere.
      initial: the initial value of every weight (drawn once, at ``init``).
      opt_state: optimizer state, re-initialised at every task.
      mask: bool, the current task's mask M_t (all true before the first task, so the
        untrained baseline is the dense network).
      frozen: bool, union of the masks of tasks before the current one.
      task_masks: bool ``[T, ...]``, M_j of every task so far (row ``task`` mirrors
        ``mask``).
      fired: bool, positions in the mask at any time during the current task.
      task: int32, the current task, −1 before the first.
    """

    params: PyTree
    initial: PyTree
    opt_state: optax.OptState
    mask: PyTree
    frozen: PyTree
    task_masks: PyTree
    fired: PyTree
    task: jax.Array


def growth_schedule(growth: str | Sequence[str], num_tasks: int) -> tuple[str, ...]:
    """One growth criterion per task: a name for every task, or one name per task."""
    names = (growth,) * num_tasks if isinstance(growth, str) else tuple(growth)
    if len(names) != num_tasks:
        raise ValueError(f"growth needs one name per task ({num_tasks}), got {len(names)}")
    for name in names:
        check_growth(name)
    return names


def adaptive_growth(
    num_tasks: int, *, first: str = "random", then: str = "gradient", switch_at: int | None = None
) -> tuple[str, ...]:
    """The paper's adaptive schedule: ``first`` for tasks < ``switch_at``, ``then`` after.

    ``switch_at`` defaults to ``num_tasks // 2`` (random for the first five of ten tasks,
    gradient for the last five, as in the paper's final experiment).
    """
    switch_at = num_tasks // 2 if switch_at is None else switch_at
    if not 0 <= switch_at <= num_tasks:
        raise ValueError(f"switch_at must be in [0, {num_tasks}], got {switch_at}")
    return growth_schedule((first,) * switch_at + (then,) * (num_tasks - switch_at), num_tasks)


def sparsity_config(
    shapes: Sequence[Sequence[int]],
    *,
    density: float,
    init: str,
    growth: str | Sequence[str],
    num_tasks: int,
) -> DSTConfig:
    """The :class:`DSTConfig` of a density, an init (``"erk"``/``"uniform"``) and growth.

    Args:
      shapes: the parameter leaf shapes (``leaf_shapes(params)``).
      density: overall fraction of weights per task mask, in (0, 1], and large enough
        that every layer keeps a weight (:func:`jaxcl.sparse.min_density`).
      init: per-layer densities, ``"erk"`` or ``"uniform"``.
      growth: a :data:`GROWTH` name, or one per task (e.g. :func:`adaptive_growth`).
      num_tasks: T.
    """
    d, counts = density_counts(shapes, density, init=init)
    names = growth_schedule(growth, num_tasks)
    return DSTConfig(
        counts=jnp.asarray(counts, jnp.int32),
        densities=jnp.asarray(d, jnp.float32),
        growth=jnp.asarray([GROWTH.index(n) for n in names], jnp.int32),
    )


def dst_config(
    model: nn.Module,
    *,
    input_dim: int,
    num_tasks: int,
    density: float,
    init: str = "erk",
    growth: str | Sequence[str] = "random",
) -> DSTConfig:
    """The :class:`DSTConfig` of a density, an init and growth for :func:`dst` on ``model``.

    :func:`sparsity_config` with the model's parameter shapes, read from its initialisation
    traced abstractly (``jax.eval_shape``: nothing is computed). Its fields
    (``._asdict()``) are a grid cell's hyperparameters: one compiled program runs every
    setting (``experiments/dst.py``).

    Args:
      model: the Flax module :func:`dst` trains.
      input_dim: D.
      num_tasks: T.
      density, init, growth: as :func:`sparsity_config`.
    """
    dummy = jnp.zeros((1, input_dim), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)["params"]
    return sparsity_config(
        leaf_shapes(params), density=density, init=init, growth=growth, num_tasks=num_tasks
    )


def check_sparsity(sparsity: DSTConfig, shapes: Sequence[Sequence[int]], num_tasks: int) -> None:
    """Refuses a :class:`DSTConfig` of the wrong shapes, or with concrete values out of range
    (a count outside ``[1, layer size]``, a growth index outside ``GROWTH``); traced values
    were checked as a grid's cells."""
    if not isinstance(sparsity, DSTConfig):
        fail("sparsity", "a DSTConfig (dst_config)", type(sparsity).__name__, TypeError)
    expected = {"counts": (len(shapes),), "densities": (len(shapes),), "growth": (num_tasks,)}
    for name, shape in expected.items():
        _checks.shape(f"sparsity.{name}", getattr(sparsity, name), shape)
    sizes = np.asarray([np.prod(s, dtype=np.int64) for s in shapes])
    bounds = {"counts": (1, sizes), "growth": (0, len(GROWTH) - 1)}
    for name, (low, high) in bounds.items():
        value = getattr(sparsity, name)
        if not isinstance(value, jax.core.Tracer) and not np.all(
            (low <= np.asarray(value)) & (np.asarray(value) <= high)
        ):
            allowed = "in [1, layer size]" if name == "counts" else f"in [0, {len(GROWTH) - 1}]"
            fail(f"sparsity.{name}", allowed, np.asarray(value).tolist())


def _momentum_reader(optimizer: optax.GradientTransformation, params: PyTree):
    """How momentum growth reads the optimizer: Adam's m/(√v+ε), else SGD's trace."""
    state = jax.eval_shape(optimizer.init, params)
    if optax.tree.get(state, "mu") is not None and optax.tree.get(state, "nu") is not None:

        def adam(s):
            return jax.tree.map(
                lambda m, v: m / (jnp.sqrt(v) + MOMENTUM_EPS),
                optax.tree.get(s, "mu"),
                optax.tree.get(s, "nu"),
            )

        return adam
    if optax.tree.get(state, "trace") is not None:
        return lambda s: optax.tree.get(s, "trace")
    raise ValueError(
        "momentum growth reads the optimizer's moments: the optimizer state needs fields "
        "'mu' and 'nu' (Adam, jaxcl.optim.masked_adam) or 'trace' (SGD momentum); got "
        f"{jax.tree.structure(state)}"
    )


def dst(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    input_dim: int,
    task_classes: Any,
    sparsity: DSTConfig,
    update_frequency: int = 100,
    death_rate: float = 0.5,
    final_death_rate: float = 0.005,
    bernoulli: bool = False,
    evaluation: str = "task_il",
) -> Learner:
    r"""The DST continual learner (module docstring), for :func:`jaxcl.engine.make_run`.

    Every parameter leaf is a masked layer (use models without biases or normalisation
    parameters, like :class:`jaxcl.models.cnn.CNN` and :class:`jaxcl.models.resnet.ResNet`).
    A step with mask M, frozen set F, dense gradient :math:`g = \nabla L(W \odot M)`:

    .. math::

      A = M \wedge \neg F, \qquad
      (u, s) = \mathrm{opt}(g \odot \neg F, s;\ \texttt{mask}=\neg F),
      \qquad W \leftarrow W + u \odot A .

    The optimizer sees the dense gradient at every non-frozen position, as the authors'
    Adam does (their mask only zeroes the weights after the step), so its moments exist
    outside the mask too and momentum growth can rank the candidates by them; only the
    update at A is applied. With an element-wise optimizer such as
    :func:`jaxcl.optim.masked_adam` the trained weights move exactly as with
    ``mask=A``: the moments of a weight that enters the mask are reset, and from then on
    it is updated at every step either way. (A transform that mixes entries, e.g.
    :func:`optax.clip_by_global_norm`, sees the gradient outside A as well.) SGD's
    ``trace`` likewise moves at every free position; the authors multiply their SGD
    momentum buffer by the mask after each step, which leaves their momentum criterion
    with nothing to rank outside the mask.

    Every ``update_frequency``-th step s of the task (s is the batch's ``index + 1``):
    prune/regrow with rate ``cosine_death_rate(s, batch.task_steps, initial=death_rate,
    final=final_death_rate)`` (the cosine runs over the task's batch positions, which the
    engine passes in :attr:`jaxcl.types.Batch.task_steps`) and the scores of criterion
    ``growth[t]`` (gradient scores use g, zero on F; momentum scores the optimizer's
    moments, zero on F), equal magnitudes and scores ranked at random, then zero the free
    weights that left or entered the mask and reset their moments
    (:func:`jaxcl.optim.reset_moments`).

    Args:
      model: Flax module ``[B, input_dim] -> [B, C]`` logits with only ``params``.
      optimizer: optax transformation, re-initialised at each task; it receives the
        non-frozen set as ``mask=`` (e.g. :func:`jaxcl.optim.masked_adam`), where its
        moments move. Its state must hold Adam moments ``mu``/``nu`` or SGD's ``trace`` for
        momentum growth. Any LR schedule in it restarts with each task, as in the authors'
        code.
      input_dim: D.
      task_classes: ``[T, C]`` bool classes of each task (``scenario.class_mask``); the
        loss uses the task's logits only (the authors slice the head).
      sparsity: the per-layer counts and densities and the growth criterion of each task
        (:func:`dst_config`: a density, ``"erk"`` or ``"uniform"`` per-layer densities, a
        criterion of ``GROWTH`` or one per task, :func:`adaptive_growth`). Its arrays may
        be traced, e.g. a grid cell's hyperparameters inside the engine's program.
      update_frequency: steps between topology updates, ≥ 1.
      death_rate: initial prune fraction (0.5), also the bound compiled into the top-k.
      final_death_rate: prune fraction at the end of the task (0.005).
      bernoulli: draw masks element-wise with the layer density (the authors' code) instead
        of exact counts.
      evaluation: ``"task_il"`` or ``"authors_code"`` (``EVALUATIONS``; pair it with the
        scenario head it names).

    Returns:
      A :class:`jaxcl.types.Learner` whose state is a :class:`DSTState`.
    """
    task_classes = np.asarray(task_classes, bool)
    if task_classes.ndim != 2:
        raise ValueError(f"task_classes must be [T, C] bool, got shape {task_classes.shape}")
    num_tasks = task_classes.shape[0]
    positive_int("update_frequency", update_frequency)
    if not 0.0 <= final_death_rate <= death_rate <= 1.0:
        raise ValueError(
            "need 0 <= final_death_rate <= death_rate <= 1, got "
            f"final_death_rate={final_death_rate!r}, death_rate={death_rate!r}"
        )
    check_evaluation(evaluation)
    shift_maps = (
        jnp.asarray(label_shift_maps(task_classes)) if evaluation == "authors_code" else None
    )

    dummy = jnp.zeros((1, input_dim), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)
    if set(variables) != {"params"}:
        raise ValueError(
            "the DST learner needs a model whose only collection is 'params', got "
            f"{sorted(variables)}"
        )
    shapes = leaf_shapes(variables["params"])
    check_sparsity(sparsity, shapes, num_tasks)
    sparsity = DSTConfig(*(jnp.asarray(x) for x in sparsity))
    read_momentum = _momentum_reader(optimizer, variables["params"])
    optimizer = optax.with_extra_args_support(optimizer)
    classes = jnp.asarray(task_classes)

    def fill(params, value):
        return jax.tree.map(lambda p: jnp.full(p.shape, value), params)

    def init(key: jax.Array) -> DSTState:
        params = model.init(key, dummy)["params"]
        return DSTState(
            params=params,
            initial=params,
            opt_state=optimizer.init(params),
            mask=fill(params, True),
            frozen=fill(params, False),
            task_masks=jax.tree.map(lambda p: jnp.zeros((num_tasks, *p.shape), bool), params),
            fired=fill(params, True),
            task=jnp.int32(-1),
        )

    def check_state(state: DSTState) -> None:
        """A state built or edited by hand: its masks must fit the parameters (trace time)."""
        for name in ("mask", "frozen", "fired"):
            check_masks(getattr(state, name), state.params, name=f"state.{name}")

    def store(state: DSTState) -> DSTState:
        rows = jax.tree.map(lambda ms, m: ms.at[state.task].set(m), state.task_masks, state.mask)
        return state._replace(task_masks=rows)

    def begin_task(state: DSTState, task: jax.Array, key: jax.Array) -> DSTState:
        check_state(state)
        # The finished task's weights join the frozen set (no-op before the first task).
        finished = state.task >= 0
        frozen = jax.tree.map(lambda f, m: f | (m & finished), state.frozen, state.mask)
        mask = random_masks(
            key, state.params, sparsity.counts, densities=sparsity.densities, bernoulli=bernoulli
        )
        params = jax.tree.map(
            lambda p, w0, f, m: jnp.where(f, p, jnp.where(m, w0, jnp.zeros_like(p))),
            state.params,
            state.initial,
            frozen,
            mask,
        )
        state = state._replace(
            params=params,
            opt_state=optimizer.init(params),
            mask=mask,
            frozen=frozen,
            fired=mask,
            task=jnp.asarray(task, jnp.int32),
        )
        return store(state)

    def loss_fn(weights: PyTree, batch: Batch) -> jax.Array:
        logits = model.apply({"params": weights}, batch.x)
        own = batch._replace(logit_mask=batch.logit_mask & classes[batch.task])
        return masked_mean_cross_entropy(logits, own)

    def topology(
        state: DSTState, step: jax.Array, total: jax.Array, grads: PyTree, key: jax.Array
    ) -> DSTState:
        rate = cosine_death_rate(step, total, initial=death_rate, final=final_death_rate)
        scores = growth_scores(
            sparsity.growth[state.task],
            key,
            grads=grads,
            momentum=read_momentum(state.opt_state),
            fired=state.fired,
            frozen=state.frozen,
        )
        new = prune_and_regrow(
            state.params,
            state.mask,
            scores,
            rate,
            max_death_rate=death_rate,
            key=jax.random.fold_in(key, 1),  # ties; ``key`` itself draws the random scores
        ).masks
        # Free weights that left or entered the mask are zero; frozen ones keep their value.
        params = jax.tree.map(
            lambda p, f, old, m: jnp.where(f | (old & m), p, jnp.zeros_like(p)),
            state.params,
            state.frozen,
            state.mask,
            new,
        )
        state = state._replace(
            params=params,
            opt_state=reset_moments(state.opt_state, became_active(state.mask, new)),
            mask=new,
            fired=jax.tree.map(jnp.logical_or, state.fired, new),
        )
        return store(state)

    def update(state: DSTState, batch: Batch, key: jax.Array) -> tuple[DSTState, jax.Array]:
        check_state(state)
        loss, grads = jax.value_and_grad(loss_fn)(apply_masks(state.params, state.mask), batch)
        # Frozen weights get no gradient (the authors zero it before the step and growth).
        grads = jax.tree.map(lambda g, f: jnp.where(f, jnp.zeros_like(g), g), grads, state.frozen)
        free = jax.tree.map(jnp.logical_not, state.frozen)
        active = jax.tree.map(jnp.logical_and, state.mask, free)
        # Moments move at every free position (momentum growth ranks the candidates by
        # them); only the trained weights A = M ∧ ¬F move.
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, mask=free)
        params = jax.tree.map(lambda p, u, a: jnp.where(a, p + u, p), state.params, updates, active)
        state = state._replace(params=params, opt_state=opt_state)
        # The step count comes from the batch, the same for every seed: a real branch.
        step = batch.index + 1
        state = jax.lax.cond(
            step % update_frequency == 0,
            topology,
            lambda s, *_: s,
            state,
            step,
            batch.task_steps,
            grads,
            key,
        )
        return state, loss

    def predict(state: DSTState, x: jax.Array, task: jax.Array) -> jax.Array:
        seen = task <= state.task
        mask = jax.tree.map(
            lambda rows, m: jnp.where(seen, rows[task], m), state.task_masks, state.mask
        )
        logits = model.apply({"params": apply_masks(state.params, mask)}, x)
        if shift_maps is None:
            return logits
        shifted = jnp.take(logits, shift_maps[jnp.maximum(state.task, 0), task], axis=-1)
        return jnp.where(seen, logits, shifted)

    def diagnostics(state: DSTState) -> dict[str, jax.Array]:
        sizes = jnp.asarray([np.prod(s, dtype=np.int64) for s in shapes], jnp.float32)
        used = jax.tree.map(jnp.logical_or, state.frozen, state.mask)
        return {
            "layer_density": mask_counts(state.mask) / sizes,
            "used_fraction": jnp.sum(mask_counts(used)) / jnp.sum(sizes),
        }

    return Learner(
        init=init,
        update=update,
        predict=predict,
        begin_task=begin_task,
        diagnostics=diagnostics,
    )
