"""Checks for mask pytrees: structure, exact shapes and boolean dtype, at trace time.

Masks may be traced (under ``jit``, ``vmap``, ``lax.scan``), so only static properties are
checked, never values.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcl._checks import fail

PyTree = Any


def is_none(x: Any) -> bool:
    """``is_leaf`` for pytrees whose ``None`` leaves stand for a whole parameter."""
    return x is None


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _paths(tree: PyTree, allow_none: bool) -> list[str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_none if allow_none else None)
    return [jax.tree_util.keystr(p) for p, _ in leaves]


def _structure_error(mask: PyTree, like: PyTree, name: str, allow_none: bool) -> ValueError:
    m_paths, l_paths = _paths(mask, allow_none), _paths(like, allow_none)
    missing = [p for p in l_paths if p not in m_paths]
    extra = [p for p in m_paths if p not in l_paths]
    detail = [f"missing leaves {missing}"] if missing else []
    detail += [f"unexpected leaves {extra}"] if extra else []
    nones = " (None leaves allowed)" if allow_none else ""
    m_def = jax.tree.structure(mask, is_leaf=is_none if allow_none else None)
    return ValueError(
        f"{name} must have the parameters' structure{nones} {jax.tree.structure(like)} "
        f"({'; '.join(detail) or 'other node types'}), got {m_def}"
    )


def check_boolean(mask: PyTree, *, name: str = "mask") -> None:
    """Raises TypeError unless every (non-None) leaf of ``mask`` has a boolean dtype."""
    for path, m in jax.tree_util.tree_leaves_with_path(mask):
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} must be a boolean array, "
                f"got dtype {jnp.result_type(m)}"
            )


def check_mask(
    mask: PyTree,
    like: PyTree,
    *,
    name: str = "mask",
    allow_none: bool = False,
    boolean: bool = True,
) -> None:
    """Raises unless ``mask`` has the structure, exact leaf shapes and dtype of a mask of ``like``.

    Args:
      mask: the pytree to check.
      like: the parameters (or updates) it masks: arrays or shape structs.
        :class:`optax.MaskedNode` sub-trees (what :func:`optax.masked` and
        :func:`optax.multi_transform` pass to inner transforms) must be ``MaskedNode`` in
        ``mask`` too: see :func:`subset_like`.
      name: how the error messages call ``mask``; leaf paths are appended.
      allow_none: a ``None`` leaf of ``mask`` may stand for a whole leaf of ``like``.
      boolean: require a boolean dtype; ``False`` for trees that only share the shapes
        (e.g. growth scores).

    Raises:
      ValueError: on a different tree structure (the missing and unexpected leaf paths are
        named) or on a leaf whose shape is not exactly the parameter's (no broadcasting).
      TypeError: on a non-boolean leaf when ``boolean``.
    """
    is_leaf = is_none if allow_none else None
    if jax.tree.structure(mask, is_leaf=is_leaf) != jax.tree.structure(like, is_leaf=is_leaf):
        raise _structure_error(mask, like, name, allow_none)
    pairs = zip(
        jax.tree_util.tree_leaves_with_path(mask, is_leaf=is_leaf),
        jax.tree.leaves(like, is_leaf=is_leaf),
        strict=True,
    )
    for (path, m), p in pairs:
        if m is None or p is None:
            continue
        if jnp.shape(m) != jnp.shape(p):
            fail(
                f"{name}{jax.tree_util.keystr(path)}",
                f"of the parameter's shape {jnp.shape(p)} (no broadcasting)",
                jnp.shape(m),
            )
    if boolean:
        check_boolean(mask, name=name)


def subset_like(mask: PyTree, like: PyTree) -> PyTree:
    """``mask`` with a :class:`optax.MaskedNode` wherever ``like`` has one.

    :func:`optax.masked` and :func:`optax.multi_transform` hand their inner transforms the
    updates with every excluded sub-tree replaced by ``MaskedNode``, but pass extra
    arguments such as ``mask=`` whole. This subsets such a mask the same way. A mask whose
    structure does not fit is returned unchanged, for :func:`check_mask` to report.
    """
    if not any(_is_masked_node(x) for x in jax.tree.leaves(like, is_leaf=_is_masked_node)):
        return mask
    try:
        return jax.tree.map(
            lambda u, m: optax.MaskedNode() if _is_masked_node(u) else m,
            like,
            mask,
            is_leaf=_is_masked_node,
        )
    except (ValueError, TypeError):
        return mask
