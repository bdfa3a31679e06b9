"""What a run returns: per-seed counts, losses and diagnostics, seed axis first.

:class:`Results` is a pytree (a NamedTuple of arrays and a dict of arrays) whose every
leaf has the seed axis first, so any selection of seeds is
``jax.tree.map(lambda x: x[sel], results)`` and runs of different seeds join with
:func:`concatenate_results`. Seeds are independent (no quantity mixes two seeds), so a
seed's row is the same whichever seeds it was run or stored with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

__all__ = ["Results", "concatenate_results"]


class Results(NamedTuple):
    """Per-seed results of a run (leading axis of every array: seed).

    Attributes:
      correct: ``[S, T, T]`` correct test predictions on task j after task i (−1 where
        not evaluated).
      count: ``[S, T]`` test examples per task (the same for every seed).
      init_correct: ``[S, T]`` correct predictions before training (−1 if not evaluated),
        the random-init baseline of forward transfer.
      train_loss: ``[S, T]`` mean training loss per task.
      diverged_at: ``[S]`` first training step with a non-finite loss, −1 if none.
      diagnostics: learner-defined ``{name: [S, T, ...]}`` (and ``[S, ...]`` measures of
        the trained learners, see :func:`jaxcl.execution.run_seeds`).
    """

    correct: np.ndarray
    count: np.ndarray
    init_correct: np.ndarray
    train_loss: np.ndarray
    diverged_at: np.ndarray
    diagnostics: dict[str, np.ndarray]

    @property
    def accuracy(self) -> np.ndarray:
        """``R[s, i, j]``: accuracy on task j after task i (NaN where not evaluated)."""
        return _ratio(self.correct, self.count[..., None, :])

    @property
    def init_accuracy(self) -> np.ndarray:
        """``[S, T]`` accuracy of the untrained model on each task."""
        return _ratio(self.init_correct, self.count)

    @property
    def pooled_accuracy(self) -> np.ndarray:
        """``[S, T]`` sample-pooled accuracy over all tasks' test sets after each task.

        After the last task of a class split this is the accuracy on the full test set.
        """
        correct = np.where(self.correct < 0, np.nan, self.correct)
        return correct.sum(-1) / self.count.sum(-1, keepdims=True)

    @property
    def diverged(self) -> np.ndarray:
        """``[S]`` bool: seeds whose training loss became NaN or infinite."""
        return self.diverged_at >= 0


def _ratio(correct: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(correct < 0, np.nan, correct / count)


def concatenate_results(parts: Sequence[Results]) -> Results:
    """``parts`` joined along the seed axis, in order (same tasks and diagnostics)."""
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
