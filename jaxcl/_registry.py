"""The one registry type: factories by name, with their hyperparameters checked.

Optimizers, activations, regularizers and scenarios are each a :class:`Registry`, a
read-only mapping ``name -> factory``. :meth:`Registry.build` refuses an unknown name
(listing the valid ones, sorted) and unknown or missing hyperparameters (naming the
accepted ones) before the factory runs, in the grammar of :mod:`jaxcl._checks`.

A factory's hyperparameters are the parameters it takes by keyword, except private ones
(a leading ``_``); its inputs (an activation's ``x``, a scenario's dataset) are
positional-only, so they are never mistaken for hyperparameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from jaxcl._checks import fail, one_of

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable[..., Any])

_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Registry(Mapping[str, F]):
    """A read-only mapping ``name -> factory`` that builds entries with checked keywords.

    Iteration follows the registration order; error messages list names sorted.

    Args:
      kind: what an entry is, for messages (``"optimizer"``, ``"activation"``, ...).
      factories: ``name -> factory``. A factory may not take ``**kwargs``: its accepted
        hyperparameters must be visible in its signature (``__signature__`` counts).

    Examples:
      >>> def line(x, /, *, slope, offset=0.0):
      ...     return slope * x + offset
      >>> LINES = Registry("line", {"line": line})
      >>> LINES.hyperparameters("line")
      ('slope', 'offset')
      >>> LINES.build("line", 2.0, slope=3.0)
      6.0
      >>> LINES.build("curve", 2.0)
      Traceback (most recent call last):
      ...
      ValueError: line must be one of 'line', got 'curve'
      >>> LINES.build("line", 2.0, slope=3.0, bias=1.0)
      Traceback (most recent call last):
      ...
      TypeError: hyperparameters of line 'line' must be among 'offset', 'slope', got 'bias'
    """

    def __init__(self, kind: str, factories: Mapping[str, F]) -> None:
        self._kind = kind
        self._factories = dict(factories)
        self._signatures = {}
        for name, factory in self._factories.items():
            signature = inspect.signature(factory)
            if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
                fail(f"{kind} {name!r}", "a factory without **kwargs", factory, TypeError)
            self._signatures[name] = signature

    def __getitem__(self, name: str) -> F:
        return self._factories[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self._kind!r}, {list(self)})"

    def hyperparameters(self, name: str) -> tuple[str, ...]:
        """The hyperparameters entry ``name`` accepts, in its signature's order."""
        one_of(self._kind, name, self)
        return tuple(
            p.name
            for p in self._signatures[name].parameters.values()
            if p.kind in _BY_KEYWORD and not p.name.startswith("_")
        )

    def lookup(self, name: str, **hparams: Any) -> F:
        """The factory ``name``, once ``hparams`` are known to be what it accepts.

        Raises:
          ValueError: unknown ``name``: ``"<kind> must be one of <sorted names>, got ..."``.
          TypeError: a hyperparameter the entry does not accept, or a required one missing
            (the message names the accepted or the required ones).
        """
        accepted = self.hyperparameters(name)
        owner = f"hyperparameters of {self._kind} {name!r}"
        unknown = set(hparams) - set(accepted)
        if unknown:
            allowed = f"among {_names(accepted)}" if accepted else "none"
            raise TypeError(f"{owner} must be {allowed}, got {_names(unknown)}")
        parameters = self._signatures[name].parameters
        required = [n for n in accepted if parameters[n].default is inspect.Parameter.empty]
        if not set(required) <= set(hparams):
            raise TypeError(f"{owner} must include {_names(required)}, got {_names(hparams)}")
        return self._factories[name]

    def build(self, name: str, /, *inputs: Any, **hparams: Any) -> Any:
        """``factory(*inputs, **hparams)`` for the entry ``name``, after :meth:`lookup`."""
        return self.lookup(name, **hparams)(*inputs, **hparams)


def _names(names: Any) -> str:
    """``'a', 'b'``: sorted and quoted as :func:`jaxcl._checks.one_of` lists names."""
    return ", ".join(map(repr, sorted(names))) or "nothing"
