"""Turning values and exceptions into journal-ready JSON, and back.

A value that JSON round-trips exactly (None, bool, int, finite float, str, and lists and
str-keyed dicts of those) is stored as itself, so a journal stays readable with `jq`.
Anything else (a tuple, a set, bytes, a datetime, a dataclass) is stored as
`{"$dill": "<base64>"}` and comes back with its type. `dill` is imported only then, which
keeps `import intemporal` fast.

    >>> encode((1, 2))["$dill"][:4]
    'gASV'
    >>> decode(encode({"a": [1, 2]}))
    {'a': [1, 2]}
"""

from __future__ import annotations

import base64
import importlib
import math
import pickle
import traceback
from typing import Any

from .errors import RemoteError, SerializationError

DILL_TAG = "$dill"
_SCALARS = (str, int, bool, type(None))


def is_exact_json(value: Any) -> bool:
    """Tell whether `value` survives `json.loads(json.dumps(value))` with its exact types."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(is_exact_json(v) for v in value)
    if t is dict:
        if DILL_TAG in value:  # would be mistaken for an encoded value on the way back
            return False
        return all(type(k) is str and is_exact_json(v) for k, v in value.items())
    return False


def _dill_dumps(value: Any) -> bytes:
    import dill  # lazy: ~60 ms of import that most runs never need

    return dill.dumps(value, protocol=4)


def encode(value: Any, codec: str = "auto") -> Any:
    """Return a JSON-ready form of `value`; raise `SerializationError` if it cannot be stored."""
    if is_exact_json(value):
        return value
    if codec == "json":
        raise SerializationError(
            f"{type(value).__name__} value {_short(value)} is not plain JSON and codec='json'"
        )
    try:
        blob = _dill_dumps(value)
    except Exception as exc:  # dill raises many types (PicklingError, TypeError, ...)
        raise SerializationError(
            f"cannot store {type(value).__name__} value {_short(value)}: {exc}"
        ) from exc
    return {DILL_TAG: base64.b64encode(blob).decode("ascii")}


def decode(data: Any) -> Any:
    """Rebuild a value from `encode`'s output."""
    if type(data) is dict and DILL_TAG in data:
        import dill

        return dill.loads(base64.b64decode(data[DILL_TAG]))
    return data


def dill_copy(obj: Any) -> str | None:
    """Return a base64 dill copy of `obj` (a function, say), or None when it cannot be made."""
    try:
        return base64.b64encode(_dill_dumps(obj)).decode("ascii")
    except Exception:  # a best-effort last resort: its absence is reported when needed
        return None


def encode_error(exc: BaseException) -> dict[str, Any]:
    """Describe an exception for the journal: type, message, traceback and a pickled copy."""
    t = type(exc)
    out: dict[str, Any] = {
        "type": t.__qualname__,
        "module": t.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    notes = getattr(exc, "__notes__", None)
    if notes:
        out["notes"] = [str(n) for n in notes]
    try:  # plain pickle first: it stores the class by reference and needs no dill
        blob = pickle.dumps(exc, protocol=4)
        pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt (bad __init__)
        out["pickle"] = base64.b64encode(blob).decode("ascii")
    except Exception:
        pass
    return out


def decode_error(data: dict[str, Any]) -> BaseException:
    """Rebuild a recorded exception with its type and message, as far as the code allows."""
    blob = data.get("pickle")
    if blob:
        try:
            exc = pickle.loads(base64.b64decode(blob))
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    try:
        cls = getattr(importlib.import_module(data["module"]), data["type"])
        exc = cls(data["message"])
        if isinstance(exc, BaseException):
            return exc
    except Exception:
        pass
    return RemoteError(f"{data['module']}.{data['type']}", data.get("message", ""))


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
