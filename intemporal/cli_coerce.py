"""Option values of the usual kinds read without Pydantic: the command line starts ~0.1 s sooner.

Typer (0.2x) turns every option's text into its type with a Pydantic `TypeAdapter`, built
for each option of the command that runs, which imports Pydantic (~60 ms) and costs ~2 ms
an option: most of `intemporal list`'s start-up. Here a text for a `str` option is taken
as it is, one for an `int` option made of ASCII digits within the option's bounds is read
with `int()`, and a default already of its type is kept: what the adapter returns for
those. Anything else (a value out of
bounds, a sign, a float, an enum, a path, a list) goes to Typer's own adapter, built then,
so every error message and every other conversion stays Typer's.

`install()` does nothing with a Typer that has no such coercion (an older one).
"""

from __future__ import annotations

from typing import Any

_SLOW = object()  # "not a usual value: ask Typer"


def quick(annotation: Any, info: Any, value: Any) -> Any:
    """`value` as `annotation` for the usual cases, else `_SLOW`."""
    if annotation is bool:
        return value if isinstance(value, bool) else _SLOW
    if annotation is str:
        return value if isinstance(value, str) else _SLOW
    if annotation is not int or isinstance(value, bool):
        return _SLOW
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            return _SLOW
        value = int(value)
    if not isinstance(value, int) or getattr(info, "clamp", False):
        return _SLOW
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if (low is not None and value < low) or (high is not None and value > high):
        return _SLOW  # Typer says why, as it would
    return value


def install() -> None:
    """Make Typer's options read usual values without Pydantic (see the module docstring)."""
    try:
        from typer import _coercion, core

        param_class = core._TyperParameter
        base = _coercion.RuntimeParam
        build = _coercion.build_runtime_param
    except (ImportError, AttributeError):  # another Typer: nothing to do
        return
    if getattr(param_class, "_intemporal_quick", False):
        return

    class Quick(base):  # type: ignore[misc, valid-type]
        """Usual values here; the rest through Typer's adapter, built on first need."""

        def __init__(self, descriptor: Any) -> None:
            # (Typer's runtime params are frozen dataclasses: set as their __init__ would)
            object.__setattr__(self, "annotation", descriptor.annotation)
            object.__setattr__(self, "parameter_info", descriptor.parameter_info)
            object.__setattr__(self, "descriptor", descriptor)
            object.__setattr__(self, "slow", [])

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            got = quick(self.annotation, self.parameter_info, value)
            if got is not _SLOW:
                return got
            if not self.slow:
                self.slow.append(build(self.descriptor))
            return self.slow[0]._coerce_value(value, param=param, ctx=ctx)

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            descriptor = self.type_descriptor
            usual = descriptor.file_annotation is None and descriptor.annotation in (str, int, bool)
            self._runtime_param = Quick(descriptor) if usual else build(descriptor)
        return self._runtime_param

    param_class.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
    param_class._intemporal_quick = True  # type: ignore[attr-defined]
