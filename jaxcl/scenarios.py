"""Task streams as arrays: class splits, permutations, class pairs, dataset sequences.

A :class:`Scenario` keeps every example once (``train_x``/``test_x``, already preprocessed)
and describes task ``t`` by index arrays into them, padded to a common length with a count
of valid entries, so ragged tasks are exact inside one compiled program. Permuted streams
store one pixel permutation per task and apply it when a batch is gathered: no task is
ever materialised. :func:`class_groups` cuts C classes into T tasks (equal blocks, or
rounds of class pairs) for :func:`from_class_groups`.

Heads: ``"shared"`` (class- or domain-incremental: argmax over every logit) or ``"task"``
(task-incremental: logits outside the task's classes are masked out in training and at
evaluation).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl import data as data_lib
from jaxcl._registry import Registry

__all__ = [
    "HEADS",
    "SCENARIOS",
    "Scenario",
    "class_groups",
    "class_pairs",
    "from_class_groups",
    "get_scenario",
    "pair_rounds",
    "permutations",
    "permuted",
    "sequence",
    "split",
]

HEADS = ("shared", "task")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scenario:
    """A continual-learning stream of ``T`` tasks over ``C`` classes.

    Attributes:
      train_x: ``[N, D]`` float32 training inputs of every task.
      train_y: ``[N]`` int32 labels.
      test_x: ``[M, D]`` float32 test inputs.
      test_y: ``[M]`` int32 labels.
      train_idx: ``[T, L]`` int32 rows of ``train_x`` per task, padded with 0.
      train_count: ``[T]`` int32 number of valid entries of each ``train_idx`` row.
      test_idx: ``[T, L']`` int32 rows of ``test_x`` per task, padded with 0.
      test_count: ``[T]`` int32 valid entries of each ``test_idx`` row.
      class_mask: ``[T, C]`` bool, the classes that occur in each task.
      input_perm: ``[T, D]`` int32 per-task input permutation, or None (identity).
      num_classes: ``C`` (static).
      head: ``"shared"`` or ``"task"`` (static).
      task_names: one name per task (static).
    """

    train_x: jax.Array
    train_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array
    train_idx: jax.Array
    train_count: jax.Array
    test_idx: jax.Array
    test_count: jax.Array
    class_mask: jax.Array
    input_perm: jax.Array | None
    num_classes: int = dataclasses.field(metadata=dict(static=True))
    head: str = dataclasses.field(metadata=dict(static=True))
    task_names: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def input_dim(self) -> int:
        return int(self.train_x.shape[-1])

    def inputs(self, x: jax.Array, task: jax.Array) -> jax.Array:
        """Applies task ``task``'s input transform to a batch ``x`` of shape ``[B, D]``."""
        if self.input_perm is None:
            return x
        return jnp.take(x, self.input_perm[task], axis=-1)

    def test_inputs(self) -> jax.Array:
        """``[sum(test_count), D]``: every task's test inputs, task by task, as the task sees
        them (its input permutation applied). Host-side (concrete counts), not under ``jit``;
        e.g. the probe set on which a model's dead units are counted."""
        counts = np.asarray(self.test_count)
        rows = [self.test_x[self.test_idx[t, :n]] for t, n in enumerate(counts)]
        return jnp.concatenate([self.inputs(x, t) for t, x in enumerate(rows)])

    def logit_mask(self, task: jax.Array) -> jax.Array:
        """``[C]`` bool: the logits that compete on task ``task`` under this head."""
        if self.head == "task":
            return self.class_mask[task]
        return jnp.ones((self.num_classes,), bool)


def _pad_rows(rows: Sequence[np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray([len(r) for r in rows], np.int32)
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        raise ValueError(f"every task must have {name} examples, got none in task(s) {empty}")
    padded = np.zeros((len(rows), counts.max()), np.int32)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return padded, counts


def _check_subset_size(name: str, value: object) -> None:
    """Refuses anything but None or an int >= 1.

    A size goes into a slice ``[:n]``, where -1 would silently drop the last example and a
    float or bool would be misread, so each is refused by name.
    """
    if value is not None:
        _checks.positive_int(name, value)


def from_class_groups(
    data: data_lib.ArrayDataset,
    groups: Sequence[Sequence[int]],
    /,
    *,
    head: str = "shared",
    input_perm: np.ndarray | None = None,
    max_train_per_task: int | None = None,
    max_test_per_task: int | None = None,
    task_names: Sequence[str] | None = None,
) -> Scenario:
    """One task per group of classes, in the given order; examples keep dataset order.

    Args:
      data: a preprocessed dataset (``[N, D]`` inputs).
      groups: the classes of each task, e.g. ``[(0, 1), (2, 3), ...]``.
      head: ``"shared"`` (class-incremental) or ``"task"`` (task-incremental).
      input_perm: optional ``[T, D]`` per-task permutation.
      max_train_per_task: None (all) or an int >= 1: keep only the first this many
        training examples per task (smoke configurations).
      max_test_per_task: None (all) or an int >= 1: keep only the first this many test
        examples per task (long streams evaluate every task after every task).
      task_names: defaults to the classes joined by "/".

    Raises:
      ValueError, TypeError: an unknown head, bad groups, or a subset size that is not None
        or an int >= 1.
    """
    _checks.one_of("head", head, HEADS)
    _check_subset_size("max_train_per_task", max_train_per_task)
    _check_subset_size("max_test_per_task", max_test_per_task)
    _checks.rank("data.train_x", data.train_x, 2, "flattened, [N, D]")
    if not groups:
        _checks.fail("groups", "non-empty (a scenario needs at least one task)", groups)
    for g in groups:
        if not g or not all(0 <= c < data.num_classes for c in g):
            _checks.fail("a class group", f"non-empty, of classes in [0, {data.num_classes})", g)
    train_rows = [np.flatnonzero(np.isin(data.train_y, g))[:max_train_per_task] for g in groups]
    test_rows = [np.flatnonzero(np.isin(data.test_y, g))[:max_test_per_task] for g in groups]
    class_mask = np.zeros((len(groups), data.num_classes), bool)
    for t, g in enumerate(groups):
        class_mask[t, list(g)] = True
    names = tuple(task_names or ("/".join(map(str, g)) for g in groups))
    return _build(data, train_rows, test_rows, class_mask, names, head, input_perm)


def _build(
    data: data_lib.ArrayDataset,
    train_rows: Sequence[np.ndarray],
    test_rows: Sequence[np.ndarray],
    class_mask: np.ndarray,
    names: tuple[str, ...],
    head: str,
    input_perm: np.ndarray | None = None,
) -> Scenario:
    if len(names) != len(train_rows):
        _checks.fail("task_names", f"one name for each of the {len(train_rows)} tasks", names)
    train_idx, train_count = _pad_rows(train_rows, "training")
    test_idx, test_count = _pad_rows(test_rows, "test")
    return Scenario(
        train_x=jnp.asarray(data.train_x, jnp.float32),
        train_y=jnp.asarray(data.train_y, jnp.int32),
        test_x=jnp.asarray(data.test_x, jnp.float32),
        test_y=jnp.asarray(data.test_y, jnp.int32),
        train_idx=jnp.asarray(train_idx),
        train_count=jnp.asarray(train_count),
        test_idx=jnp.asarray(test_idx),
        test_count=jnp.asarray(test_count),
        class_mask=jnp.asarray(class_mask),
        input_perm=None if input_perm is None else jnp.asarray(input_perm, jnp.int32),
        num_classes=int(data.num_classes),
        head=head,
        task_names=names,
    )


def split(
    data: data_lib.ArrayDataset,
    /,
    *,
    classes_per_task: int = 2,
    head: str = "shared",
    max_train_per_task: int | None = None,
    max_test_per_task: int | None = None,
) -> Scenario:
    """Split-X: consecutive class groups {0,1}, {2,3}, ... (Split-MNIST for MNIST).

    ``head`` and the subset sizes as in :func:`from_class_groups`.
    """
    c = data.num_classes
    _checks.positive_int("classes_per_task", classes_per_task)
    if c % classes_per_task:
        _checks.fail("classes_per_task", f"a divisor of num_classes = {c}", classes_per_task)
    groups = [tuple(range(i, i + classes_per_task)) for i in range(0, c, classes_per_task)]
    sizes = dict(max_train_per_task=max_train_per_task, max_test_per_task=max_test_per_task)
    return from_class_groups(data, groups, head=head, **sizes)


def class_pairs(
    data: data_lib.ArrayDataset,
    /,
    *,
    num_tasks: int | None = None,
    head: str = "shared",
    max_train_per_task: int | None = None,
    max_test_per_task: int | None = None,
) -> Scenario:
    """Every pair of classes as a task, in lexicographic order: (0,1), (0,2), ..., (8,9).

    ``num_tasks``: the first this many pairs, in [1, C(C − 1)/2] (None: all). ``head`` and
    the subset sizes as in :func:`from_class_groups`.
    """
    groups = list(itertools.combinations(range(data.num_classes), 2))
    if num_tasks is not None:
        if not 1 <= _checks.integer("num_tasks", num_tasks) <= len(groups):
            _checks.fail("num_tasks", f"in [1, {len(groups)}]", num_tasks)
        groups = groups[:num_tasks]
    sizes = dict(max_train_per_task=max_train_per_task, max_test_per_task=max_test_per_task)
    return from_class_groups(data, groups, head=head, **sizes)


def pair_rounds(num_classes: int, *, rounds: int) -> list[tuple[int, int]]:
    """``rounds`` perfect matchings of the classes into pairs, no pair twice.

    Round r of the circle method of round-robin scheduling (the standard 1-factorisation of
    the complete graph; "Round-robin tournament", Wikipedia, §Circle method): class ``n − 1``
    stays put and meets ``r``, and ``(r + k) mod (n − 1)`` meets ``(r − k) mod (n − 1)`` for
    ``k = 1 … n/2 − 1``. The classes are relabelled so that round 0 is {0,1}, {2,3}, …
    (Split-MNIST's pairs); each round lists its pairs by their smaller class, and every class
    occurs once per round.

    Args:
      num_classes: n, even and >= 2.
      rounds: how many rounds, in [1, n − 1] (n − 1 rounds hold every pair once).

    Returns:
      ``rounds * n / 2`` pairs ``(a, b)`` with ``a < b``, round after round.

    Raises:
      ValueError, TypeError: an odd or non-positive ``num_classes`` or ``rounds`` outside
        [1, n − 1].
    """
    n = _checks.positive_int("num_classes", num_classes)
    if n % 2:
        _checks.fail("num_classes", "even (classes are cut into pairs)", num_classes)
    if _checks.positive_int("rounds", rounds) > n - 1:
        _checks.fail("rounds", f"in [1, {n - 1}] for {n} classes", rounds)

    def circle_round(r):
        return [(r, n - 1)] + [((r + k) % (n - 1), (r - k) % (n - 1)) for k in range(1, n // 2)]

    relabel = {}
    for a, b in circle_round(0):
        relabel[a], relabel[b] = len(relabel), len(relabel) + 1
    out = []
    for r in range(rounds):
        out += sorted(tuple(sorted((relabel[a], relabel[b]))) for a, b in circle_round(r))
    return out


def class_groups(num_classes: int, *, num_tasks: int) -> list[tuple[int, ...]]:
    """The classes of each of ``num_tasks`` tasks: equal consecutive blocks, else pair rounds.

    Blocks of ``num_classes / num_tasks >= 2`` classes when they divide evenly (CIFAR-100 in
    T = 5, 10, 20 blocks, as Yildirim et al., CPAL 2024, split it: ``cifar100.py`` of
    ``muratonuryildirim/CL-with-DST``). Otherwise whole rounds of class pairs
    (:func:`pair_rounds`, ``2 T / C`` of them): ten classes cannot be cut into 10 or 20
    disjoint tasks of two, so T = 10, 20 take 2 and 4 rounds, each class recurs once per
    round and shares its head units across its tasks. For :func:`from_class_groups`.

    Raises:
      ValueError, TypeError: counts that are not positive integers, or a ``num_tasks`` that
        is neither a divisor of ``num_classes`` leaving >= 2 classes per task nor whole
        rounds of pairs.
    """
    _checks.positive_int("num_classes", num_classes)
    per_task, rest = divmod(num_classes, _checks.positive_int("num_tasks", num_tasks))
    if per_task >= 2 and not rest:
        return [tuple(range(t * per_task, (t + 1) * per_task)) for t in range(num_tasks)]
    rounds, rest = divmod(2 * num_tasks, num_classes)
    if rest or num_classes % 2 or rounds > num_classes - 1:
        allowed = f"a divisor of num_classes = {num_classes} leaving >= 2 classes per task"
        if num_classes % 2 == 0:
            half = num_classes // 2
            allowed += f", or a multiple of {half} up to {half * (num_classes - 1)} (pair rounds)"
        _checks.fail("num_tasks", allowed, num_tasks)
    return pair_rounds(num_classes, rounds=rounds)


def permutations(num_tasks: int, dim: int, *, seed: int, identity_first: bool) -> np.ndarray:
    """``[num_tasks, dim]`` pixel permutations drawn from ``seed`` (fixed across run seeds)."""
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(dim) for _ in range(num_tasks)]).astype(np.int32)
    if identity_first:
        perms[0] = np.arange(dim)
    return perms


def permuted(
    data: data_lib.ArrayDataset,
    /,
    *,
    num_tasks: int,
    seed: int = 0,
    identity_first: bool = False,
    max_train_per_task: int | None = None,
    max_test_per_task: int | None = None,
) -> Scenario:
    """Permuted-X: every task holds all classes under its own fixed pixel permutation.

    Domain-incremental: one shared head, the same labels in every task. The permutations
    come from ``seed`` and are shared by every run seed, as usual for this benchmark. The
    subset sizes are as in :func:`from_class_groups`.
    """
    _checks.positive_int("num_tasks", num_tasks)
    perms = permutations(
        num_tasks, data.train_x.shape[-1], seed=seed, identity_first=identity_first
    )
    groups = [tuple(range(data.num_classes))] * num_tasks
    return from_class_groups(
        data,
        groups,
        input_perm=perms,
        max_train_per_task=max_train_per_task,
        max_test_per_task=max_test_per_task,
        task_names=tuple(f"perm{t}" for t in range(num_tasks)),
    )


def sequence(
    datasets: Sequence[tuple[str, data_lib.ArrayDataset]],
    /,
    *,
    label_offset: bool = False,
    head: str = "shared",
    max_train_per_task: int | None = None,
    max_test_per_task: int | None = None,
) -> Scenario:
    """One task per dataset, in order (e.g. MNIST then Fashion-MNIST).

    Args:
      datasets: ``(name, preprocessed dataset)`` pairs with the same input size.
      label_offset: False shares one head across datasets (labels 0..C−1 in every task,
        as the CLASSP code does); True gives each dataset its own label range.
      head: see the module docstring.
      max_train_per_task, max_test_per_task: None (all) or an int >= 1: keep only each
        dataset's first this many training (test) examples, as :func:`from_class_groups`.
    """
    _checks.one_of("head", head, HEADS)
    _check_subset_size("max_train_per_task", max_train_per_task)
    _check_subset_size("max_test_per_task", max_test_per_task)
    if not datasets:
        _checks.fail("datasets", "non-empty (a sequence needs at least one dataset)", datasets)
    train, test = slice(max_train_per_task), slice(max_test_per_task)
    kept = {"train_x": train, "train_y": train, "test_x": test, "test_y": test}
    datasets = [
        (name, d._replace(**{field: getattr(d, field)[rows] for field, rows in kept.items()}))
        for name, d in datasets
    ]
    dims = {d.train_x.shape[1:] for _, d in datasets}
    if len(dims) != 1:
        _checks.fail("the datasets' input shapes", "all the same", sorted(dims))
    offsets = (
        np.cumsum([0] + [d.num_classes for _, d in datasets])[:-1]
        if label_offset
        else ([0] * len(datasets))
    )
    num_classes = (
        sum(d.num_classes for _, d in datasets)
        if label_offset
        else max(d.num_classes for _, d in datasets)
    )
    merged = data_lib.ArrayDataset(
        np.concatenate([d.train_x for _, d in datasets]),
        np.concatenate([d.train_y + o for (_, d), o in zip(datasets, offsets, strict=True)]),
        np.concatenate([d.test_x for _, d in datasets]),
        np.concatenate([d.test_y + o for (_, d), o in zip(datasets, offsets, strict=True)]),
        num_classes,
    )
    # Task t owns a contiguous block of rows; its classes are those that occur in it.
    sizes = np.asarray([[len(d.train_y), len(d.test_y)] for _, d in datasets])
    starts = np.concatenate([[[0, 0]], np.cumsum(sizes, axis=0)[:-1]])
    train_rows = [np.arange(s, s + n) for s, n in zip(starts[:, 0], sizes[:, 0], strict=True)]
    test_rows = [np.arange(s, s + n) for s, n in zip(starts[:, 1], sizes[:, 1], strict=True)]
    class_mask = np.zeros((len(datasets), num_classes), bool)
    for t, rows in enumerate(train_rows):
        class_mask[t, np.unique(merged.train_y[rows])] = True
    names = tuple(name for name, _ in datasets)
    return _build(merged, train_rows, test_rows, class_mask, names, head)


SCENARIOS: Registry[Callable[..., Scenario]] = Registry(
    "scenario",
    {"split": split, "class_pairs": class_pairs, "permuted": permuted, "sequence": sequence},
)


def get_scenario(
    name: str,
    data: data_lib.ArrayDataset | Sequence[tuple[str, data_lib.ArrayDataset]],
    /,
    **hparams: Any,
) -> Scenario:
    """Builds the scenario ``name`` of :data:`SCENARIOS` from ``data`` with ``hparams``.

    Args:
      name: ``"split"``, ``"class_pairs"``, ``"permuted"`` or ``"sequence"``.
      data: a preprocessed dataset, or for ``"sequence"`` its ``(name, dataset)`` pairs.
      **hparams: the keyword arguments of that function, e.g. ``num_tasks=10``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid ones, sorted) or bad values.
      TypeError: a hyperparameter the scenario does not take (the message names the ones it
        takes), a required one missing, or one of the wrong type.
    """
    return SCENARIOS.build(name, data, **hparams)
