"""Optimizers by name, for configs and experiment scripts."""

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcl import _checks
from jaxcl._registry import Registry
from jaxcl.optim._classp import classp
from jaxcl.optim._clipping import clip_updates as _clip_updates
from jaxcl.optim._dtypes import accumulator_dtype
from jaxcl.optim._masked_adam import masked_adam
from jaxcl.optim._sam import gnp, sam


def _at_least_float32(x: Any) -> Any:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(accumulator_dtype(x, None))


def _float32_state(opt: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``opt`` computed and accumulated in (at least) float32, its updates cast back.

    optax's accumulators follow the parameter dtype (``optax.adam``'s ``mu_dtype`` covers the
    first moment only); in bfloat16 a sum of squares stops growing once each increment is
    below half its last bit.
    """
    opt = optax.with_extra_args_support(opt)

    def init_fn(params):
        return opt.init(jax.tree.map(_at_least_float32, params))

    def update_fn(updates, state, params=None, **extra_args):
        wide_updates, wide_params = jax.tree.map(_at_least_float32, (updates, params))
        new, state = opt.update(wide_updates, state, wide_params, **extra_args)
        return jax.tree.map(lambda n, u: n.astype(u.dtype), new, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _sgd(*, learning_rate):
    return optax.sgd(learning_rate)


def _decay(name: str, value: Any) -> None:
    """Moment decay rates (b1, b2, momentum, decay) are in [0, 1)."""
    _checks.in_range(name, value, 0, 1, "[)")


def _momentum(*, learning_rate, momentum=0.9, nesterov=False):
    _decay("momentum", momentum)
    return _float32_state(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def _adam(*, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    _decay("b1", b1)
    _decay("b2", b2)
    _checks.non_negative("eps", eps)
    return _float32_state(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def _adam_nobc(*, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    # Dense semantics: every entry active unless the caller passes an explicit mask.
    return masked_adam(learning_rate, b1, b2, eps, bias_correction=False, mask_by_gradient=False)


def _rmsprop(*, learning_rate, decay=0.9, eps=1e-8, eps_in_sqrt=True):
    _decay("decay", decay)
    _checks.non_negative("eps", eps)
    return _float32_state(
        optax.rmsprop(learning_rate, decay=decay, eps=eps, eps_in_sqrt=eps_in_sqrt)
    )


def _adagrad(*, learning_rate, initial_accumulator_value=0.1, eps=1e-7):
    _checks.non_negative("initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative("eps", eps)
    return _float32_state(
        optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator_value, eps=eps)
    )


def _sgd_base(learning_rate, momentum, pre):
    if momentum is not None:
        _decay("momentum", momentum)
    return _float32_state(optax.chain(*pre, optax.sgd(learning_rate, momentum=momentum)))


def _sam(*, learning_rate, rho, momentum=None, _pre=()):
    return sam(_sgd_base(learning_rate, momentum, _pre), rho)


def _gnp(*, learning_rate, r, alpha, normalize_first=True, momentum=None, _pre=()):
    return gnp(_sgd_base(learning_rate, momentum, _pre), r, alpha, normalize_first=normalize_first)


OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry(
    "optimizer",
    {
        "sgd": _sgd,
        "momentum": _momentum,
        "adam": _adam,
        "adam_nobc": _adam_nobc,
        "rmsprop": _rmsprop,
        "adagrad": _adagrad,
        "classp": classp,
        "masked_adam": masked_adam,
        "sam": _sam,
        "gnp": _gnp,
    },
)
# Wrappers that evaluate a second gradient: gradient clipping must go inside their base.
_WRAPPERS = ("sam", "gnp")


class _Unset:
    """Stands for "not passed" in get_optimizer's declared signature (defaults differ by name)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _declared_signature(function) -> inspect.Signature:
    """``function``'s signature with ``**hparams`` spelled out as every entry's keywords.

    ``optax.inject_hyperparams`` binds its arguments to the factory's signature: with
    ``**hparams`` it would inject one dict named ``hparams`` instead of ``learning_rate``.
    """
    params = list(inspect.signature(function).parameters.values())[:-1]  # drop **hparams
    names = dict.fromkeys(n for name in OPTIMIZERS for n in OPTIMIZERS.hyperparameters(name))
    keywords = (inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_UNSET) for n in names)
    return inspect.signature(function).replace(parameters=[*params, *keywords])


def get_optimizer(
    name: str,
    *,
    clip_global_norm: float | None = None,
    clip_updates: float | None = None,
    **hparams,
) -> optax.GradientTransformationExtraArgs:
    """Build an optimizer by name.

    ======================  ==============================================================
    name                    optimizer and hyperparameters (defaults)
    ======================  ==============================================================
    ``"sgd"``               ``optax.sgd(learning_rate)``
    ``"momentum"``          ``optax.sgd`` with a PyTorch-style trace ``t = g + μ t``:
                            learning_rate, momentum (0.9), nesterov (False)
    ``"adam"``              ``optax.adam``: learning_rate, b1 (0.9), b2 (0.999), eps (1e-8)
    ``"adam_nobc"``         Adam without bias correction (Hard ASH), dense:
                            :func:`masked_adam` with ``bias_correction=False,
                            mask_by_gradient=False``; same hyperparameters as ``"adam"``.
                            Dense means an entry whose gradient is exactly zero still
                            decays its moments, as in any Adam; an explicit ``mask`` passed
                            to ``update`` is still honoured.
    ``"rmsprop"``           ``optax.rmsprop``: learning_rate, decay (0.9), eps (1e-8),
                            eps_in_sqrt (True, optax's default and Hard ASH's)
    ``"adagrad"``           ``optax.adagrad``: learning_rate, initial_accumulator_value
                            (0.1; Hard ASH uses 1e-6), eps (1e-7)
    ``"classp"``            :func:`classp`: learning_rate, threshold, power (1.0), eps
                            (1e-5), mode, include_current, initial_accumulator_value,
                            accumulate_only, accumulator_dtype
    ``"masked_adam"``       :func:`masked_adam` (inactive = zero gradient unless a mask is
                            passed): learning_rate, b1, b2, eps, bias_correction (True),
                            mask_by_gradient (True), accumulator_dtype
    ``"sam"``               :func:`sam` around SGD: learning_rate, rho, momentum (None)
    ``"gnp"``               :func:`gnp` around SGD: learning_rate, r, alpha,
                            normalize_first (True), momentum (None)
    ======================  ==============================================================

    Every result accepts ``update(grads, state, params, **extra)`` with any extra keyword
    arguments (``grad_fn``, ``mask``, ...); each part of the chain takes the ones it knows.

    Accumulating state (moments, sums of squares, traces) is kept in float32 (at least) for
    any parameter dtype, and updates come back in the gradient's dtype: in bfloat16 an
    accumulator stops growing once each increment is below half its last bit. The optax
    entries get this from a float32 wrapper; ``"classp"``, ``"masked_adam"`` and
    ``"adam_nobc"`` from :func:`classp` and :func:`masked_adam` themselves.

    To change hyperparameters mid-run, wrap the registry in
    :func:`optax.inject_hyperparams`: ``optax.inject_hyperparams(get_optimizer)("adam",
    learning_rate=1e-3)`` keeps every numeric hyperparameter *passed* (not the defaults)
    in ``state.hyperparams``, e.g. ``state.hyperparams["learning_rate"]``, which may be
    set between steps or given as a schedule. A callable that is not a schedule (CLASSP's
    ``accumulate_only``) must be named in ``static_args``.

    Args:
      name: one of :data:`OPTIMIZERS`.
      clip_global_norm: if given (> 0), ``optax.clip_by_global_norm`` is applied to the
        gradient first (inside the base optimizer for ``"sam"``/``"gnp"``, so that the
        gradient they evaluate is clipped too).
      clip_updates: if given (> 0), :func:`clip_updates` is applied to the final update.
      **hparams: the optimizer's hyperparameters, as listed above.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    Raises:
      ValueError: unknown ``name``, or a hyperparameter out of range.
      TypeError: unknown or missing hyperparameters.
    """
    hparams = {k: x for k, x in hparams.items() if x is not _UNSET}
    factory = OPTIMIZERS.lookup(name, **hparams)
    _checks.non_negative("learning_rate", hparams["learning_rate"])

    pre: tuple[optax.GradientTransformation, ...] = ()
    if clip_global_norm is not None:
        _checks.positive("clip_global_norm", clip_global_norm)
        pre = (optax.clip_by_global_norm(clip_global_norm),)
    post = () if clip_updates is None else (_clip_updates(clip_updates),)

    if name in _WRAPPERS:
        opt = factory(_pre=pre, **hparams)
        pre = ()
    else:
        opt = factory(**hparams)
    return optax.chain(*pre, opt, *post)


get_optimizer.__signature__ = _declared_signature(get_optimizer)
