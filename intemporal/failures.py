"""Turning exceptions into journal records, and back with the same type and message.

A record names the class (`module`, `type`, and `script` when the class was defined in a
script run as `python shop.py`), keeps `message`, `traceback` and `notes` for people, and
keeps what rebuilding needs, chosen when the exception is recorded and checked then:

- `"how": "reduce"`: what `pickle` would do: `cls(*ctor)`, then `state`. Fits classes
  whose arguments are their constructor's, and builtins such as `OSError`.
- `"how": "new"`: `cls.__new__(cls, *args)`, then `args` and `attrs` set as they were,
  without calling `__init__`: for a class whose `__init__` builds the message from other
  arguments (`CodeError(503)` -> "service answered 503", never doubled) or takes several.

Each part is a value of the codec (plain JSON, or pickled with `codec="auto"`); an
attribute that cannot be stored is left out (named in `dropped`). `__cause__` (or else an
unsuppressed `__context__`) is recorded the same way, a few levels deep.

When the class cannot be found or rebuilt here, `decode_error` gives a `RemoteError`
naming the original type; a replay stops the run on it instead (`rebuild_error` raises).

    record = encode_error(KeyError("k"))
    decode_error(record)          # KeyError('k')
"""

from __future__ import annotations

import traceback
import weakref
from typing import Any

from . import codec, pickling
from .errors import RemoteError, SerializationError

MAX_CAUSES = 8  # links of a __cause__ / __context__ chain that are recorded
_seen: weakref.WeakValueDictionary[tuple[str, str], type] = weakref.WeakValueDictionary()
"""Exception classes recorded by this process: a replay here finds even a class defined in
a function (`<locals>`), which no import can."""


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def encode_error(exc: BaseException, codec_name: str = "auto", _depth: int = 0) -> dict[str, Any]:
    """Describe an exception for the journal: its class, message, traceback and state.

    Never raises: what cannot be stored is left out, and a record without `how` reads
    back as a `RemoteError`.
    """
    t = type(exc)
    message = _text(exc)
    out: dict[str, Any] = {"type": t.__qualname__, "module": t.__module__, "message": message}
    if _depth == 0:
        try:
            out["traceback"] = "".join(traceback.format_exception(exc))
        except Exception:
            out["traceback"] = ""
    script = pickling.script_of(t.__module__)
    if script:
        out["script"] = script
    try:
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list) and notes:
            out["notes"] = [str(n) for n in notes]
        _seen[(t.__module__, t.__qualname__)] = t
        out.update(_state(exc, message, codec_name))
    except Exception:  # an exception too odd to rebuild: it reads back as a RemoteError
        pass
    linked = exc.__cause__
    if linked is None and not exc.__suppress_context__:
        linked = exc.__context__
        key = "context"
    else:
        key = "cause"
    if linked is not None and _depth < MAX_CAUSES:
        out[key] = encode_error(linked, codec_name, _depth + 1)
    return out


def _parts(exc: BaseException, how: str) -> dict[str, Any]:
    """The raw values that rebuild `exc` the `how` way; raise if that way does not apply."""
    if how == "reduce":
        reduced = exc.__reduce_ex__(4)
        if not isinstance(reduced, tuple) or reduced[0] is not type(exc):
            raise TypeError("reduces to something other than its class")
        if any(x is not None for x in reduced[3:]):
            raise TypeError("reduces with list or dict items")
        state = reduced[2] if len(reduced) > 2 else None
        if state is not None and not isinstance(state, dict):
            raise TypeError("its state is not a dict")
        return {"ctor": list(reduced[1]), "state": state}
    return {"args": list(exc.args), "attrs": dict(vars(exc))}


def _rebuild(cls: type, how: str, parts: dict[str, Any]) -> BaseException:
    if how == "reduce":
        exc = cls(*parts["ctor"])
        if parts.get("state"):
            exc.__setstate__(parts["state"])
    else:
        args = tuple(parts["args"])
        exc = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(parts.get("attrs") or {})
    if not isinstance(exc, BaseException):
        raise TypeError(f"{cls.__qualname__} did not build an exception")
    return exc


def _state(exc: BaseException, message: str, codec_name: str) -> dict[str, Any]:
    """The first way to rebuild `exc` that gives back its type and message, encoded."""
    for how in ("reduce", "new"):
        try:
            parts = _parts(exc, how)
        except Exception:
            continue
        encoded: dict[str, Any] = {"how": how}
        dropped: list[str] = []
        try:
            for key, value in parts.items():
                if isinstance(value, dict):  # state and attrs: leave out what cannot be stored
                    kept = {}
                    for name, v in value.items():
                        try:
                            kept[name] = codec.encode(v, codec_name)
                        except SerializationError:
                            dropped.append(str(name))
                    parts[key] = {k: v for k, v in value.items() if k in kept}
                    encoded[key] = kept
                else:
                    encoded[key] = codec.encode(value, codec_name)
            back = _rebuild(type(exc), how, parts)
        except Exception:
            continue
        if type(back) is type(exc) and _text(back) == message:
            if dropped:
                encoded["dropped"] = dropped
            return encoded
    return {"how": None}  # no way gives it back: it reads back as a RemoteError


def _resolve(data: dict[str, Any], load: bool) -> type:
    module, qualname = str(data.get("module")), str(data.get("type"))
    cls = _seen.get((module, qualname))
    if cls is None:
        script = data.get("script")
        scripts = {module: script} if isinstance(script, str) else {}
        cls = pickling.find_object(module, qualname, scripts, load)
    if not isinstance(cls, type) or not issubclass(cls, BaseException):
        raise TypeError(f"{module}.{qualname} is not an exception class")
    return cls


def rebuild_error(
    data: dict[str, Any], codec_name: str = "auto", where: str = "a recorded exception"
) -> BaseException:
    """Rebuild a recorded exception with its type and message.

    Raises `RemoteError` (naming the original type) when its class cannot be found or
    rebuilt here, and `DillRefused` when a part is pickled and `codec_name` refuses dill.
    """
    type_name = f"{data.get('module')}.{data.get('type')}"
    message = str(data.get("message", ""))
    try:
        cls = _resolve(data, load=codec_name == "auto")
    except Exception as exc:
        raise RemoteError(type_name, message, f"its class cannot be found here: {exc}") from None
    how = data.get("how")
    try:
        if how in ("reduce", "new"):
            parts: dict[str, Any] = {}
            for k in ("ctor", "args"):
                if k in data:
                    parts[k] = codec.decode(data[k], codec_name, where)
            for k in ("state", "attrs"):  # encoded attribute by attribute
                if isinstance(data.get(k), dict):
                    parts[k] = {n: codec.decode(v, codec_name, where) for n, v in data[k].items()}
            rebuilt = _rebuild(cls, str(how), parts)
        elif "how" in data:
            raise TypeError("no recorded form rebuilds it (its message or type changed on trial)")
        else:
            rebuilt = _legacy(cls, data, codec_name)
    except SerializationError:
        raise
    except Exception as err:
        reason = f"it cannot be rebuilt here: {type(err).__name__}: {err}"
        raise RemoteError(type_name, message, reason) from None
    for key in ("cause", "context"):
        linked = data.get(key)
        if isinstance(linked, dict):
            setattr(rebuilt, f"__{key}__", decode_error(linked, codec_name, where))
    return rebuilt


def _legacy(cls: type, data: dict[str, Any], codec_name: str) -> BaseException:
    """A record written before `how` existed: its plain pickle, else `cls(message)`."""
    blob = data.get("pickle")
    if blob and codec_name == "auto":
        try:
            exc = codec.decode({codec.DILL_TAG: blob})
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    exc = cls(data.get("message", ""))
    if not isinstance(exc, BaseException):
        raise TypeError(f"{cls.__qualname__} did not build an exception")
    return exc


def decode_error(
    data: dict[str, Any], codec_name: str = "auto", where: str = "a recorded exception"
) -> BaseException:
    """Rebuild a recorded exception; a `RemoteError` (or `DillRefused`) when it cannot be."""
    try:
        return rebuild_error(data, codec_name, where)
    except (RemoteError, SerializationError) as exc:
        return exc
