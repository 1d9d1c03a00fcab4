"""Turning values into journal-ready JSON, and back.

A value that JSON round-trips exactly (None, bool, int, finite float, str, and lists and
str-keyed dicts of those, nested at most `MAX_JSON_DEPTH` deep) is stored as itself, so a
journal stays readable with `jq`. Anything else (a tuple, a set, bytes, a datetime, a
dataclass, an enum) is pickled (`pickling.py`) and stored as `{"$dill": "<base64>",
"$type": "module.Class"}`: the type name beside the blob lets `intemporal show` say what it
is without unpickling it (`peek`). A `Secret` is stored as `{"$secret": <its value>}`, and
`bytes` as `{"$bytes": "<base64>"}` (no pickle: read back as bytes, with `codec="json"` too);
inside plain JSON they sit in a `{"$tree": ...}`.

What is accepted comes back equal, or is refused at once with `SerializationError`: a
reference cycle, containers nested deeper than `MAX_DEPTH`, an int too long to write as
text, anything a pickler cannot store. No encoder's own error (`RecursionError`,
`ValueError`, `OverflowError`...) escapes.

Reading: `decode(data, codec)` unpickles only with `codec="auto"`; `"json"` (an
`Engine(codec="json")`) and `READ_ONLY` (listing, showing, checking) refuse with
`DillRefused`. `peek` never unpickles.

    >>> encode((1, 2))["$type"]
    'tuple'
    >>> decode(encode({"a": [1, 2]}))
    {'a': [1, 2]}
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from typing import Any, Generic, TypeVar

from . import pickling
from .errors import DillRefused, SerializationError

DILL_TAG = "$dill"
TYPE_TAG = "$type"
SCRIPTS_TAG = "$scripts"
SECRET_TAG = "$secret"
TREE_TAG = "$tree"  # a list or dict holding secrets among plain JSON
HIDDEN_TAG = "$hidden"  # beside a pickle that holds a Secret: never printed
BYTES_TAG = "$bytes"  # bytes, as base64: no pickle
_TAGS = (DILL_TAG, SECRET_TAG, TREE_TAG, BYTES_TAG)
_TAG_SET = frozenset(_TAGS)
READ_ONLY = "read-only"  # decode's policy for commands that only look: never unpickle

MAX_JSON_DEPTH = 100  # deeper lists/dicts are pickled: a journal line stays easy to parse
MAX_DEPTH = 500  # deeper containers are refused: reading them back could not be sure to work
_READ_DEPTH = 2 * MAX_JSON_DEPTH  # stored JSON nests less; walking deeper risks RecursionError
_DIGITS = sys.get_int_max_str_digits()
_INT_LIMIT = 10**_DIGITS if _DIGITS else None  # ints from here on cannot be written as text
_SMALL = 1 << 62  # an int this small is written as text whatever the limit (>= 640 digits)
_MIN_SMALL = -_SMALL

T = TypeVar("T")


class Secret(Generic[T]):
    """A value the run needs but nobody should read over a shoulder: `intemporal.Secret(token)`.

    `.value` is the value. `repr`/`str` are `Secret(***)`; the journal keeps the value
    (a resumed run needs it) and `intemporal show` / `list --json` print `***` for it.

        engine.start(sync_repo, intemporal.Secret(os.environ["TOKEN"]))
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.value == other.value

    def __hash__(self) -> int:
        return hash((Secret, self.value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self.value,))


class DillValue:
    """A pickled value seen without unpickling it: its type name (if recorded) and size.

    What `RunInfo.result`, `intemporal list` and `intemporal show` give for a value stored
    with dill; `repr` is `<dill: tuple, 48 B>`.
    """

    __slots__ = ("size", "type_name")

    def __init__(self, type_name: str | None, size: int) -> None:
        self.type_name, self.size = type_name, size

    def __repr__(self) -> str:
        what = f"{self.type_name}, " if self.type_name else ""
        return f"<dill: {what}{_size(self.size)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DillValue) and (self.type_name, self.size) == (
            other.type_name,
            other.size,
        )

    def __hash__(self) -> int:
        return hash((self.type_name, self.size))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_f = n / 1024
        if n_f < 1024 or unit == "GiB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"  # pragma: no cover


def is_exact_json(value: Any, depth: int = 0) -> bool:
    """Tell whether `value` survives `json.loads(json.dumps(value))` with its exact types."""
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return _INT_LIMIT is None or -_INT_LIMIT < value < _INT_LIMIT
    if t is float:
        return math.isfinite(value)
    if depth >= MAX_JSON_DEPTH:
        return False
    depth += 1
    # Loops, not all(generator): this runs for every value stored, ~30% faster so; a text
    # or a small int inside is taken without a call (most results are flat: ~2x faster).
    if t is list:
        for v in value:
            tv = type(v)
            if tv is str or (tv is int and _MIN_SMALL < v < _SMALL):
                continue
            if not is_exact_json(v, depth):
                return False
        return True
    if t is dict:
        if not _TAG_SET.isdisjoint(value):
            return False  # would be mistaken for an encoded value on the way back
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is str or (tv is int and _MIN_SMALL < v < _SMALL):
                continue
            if not is_exact_json(v, depth):
                return False
        return True
    return False


def encode(value: Any, codec: str = "auto") -> Any:
    """Return a JSON-ready form of `value`; raise `SerializationError` if it cannot be stored.

    `codec="json"` refuses what JSON cannot hold (a `Secret` of a JSON value is fine).
    """
    if is_exact_json(value):
        return value
    if type(value) is bytes:
        return {BYTES_TAG: _b64(value)}
    try:
        # One walk finds what cannot be stored and whether a secret or bytes sit inside;
        # only then is the value walked again to tag them.
        problem, tagged = _tree_problem(value)
        if problem:
            raise SerializationError(f"{type(value).__name__} value {_short(value)}: {problem}")
        if type(value) is Secret:
            return {SECRET_TAG: encode(value.value, codec)}
        tree = _with_secrets(value, 0) if tagged else None
        if tree is not None:
            return {TREE_TAG: tree}
        if codec == "json":
            raise SerializationError(
                f"{type(value).__name__} value {_short(value)} is not plain JSON and codec='json'"
            )
        blob, scripts = pickling.dumps(value)
        pickling.loads(blob, scripts)  # what cannot be read back is refused now, not on replay
    except SerializationError:
        raise
    except Exception as exc:  # pickle and dill raise anything (RecursionError, TypeError...)
        raise SerializationError(
            f"cannot store {type(value).__name__} value {_short(value)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    out: dict[str, Any] = {
        DILL_TAG: base64.b64encode(blob).decode("ascii"),
        TYPE_TAG: type_name(type(value)),
    }
    if scripts:
        out[SCRIPTS_TAG] = scripts
    if b"intemporal.codec" in blob and b"Secret" in blob:  # `masked` hides the whole pickle
        out[HIDDEN_TAG] = True
    return out


def type_name(t: type) -> str:
    """`module.Qualname` of a class; builtins by their bare name."""
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _tree_problem(value: Any) -> tuple[str | None, bool]:
    """Why the built-in containers of `value` cannot be stored (a cycle, depth, a huge int),
    and whether a `Secret` or `bytes` sits among them (then it may be stored as a tree)."""
    containers = (list, tuple, dict, set, frozenset)
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    tagged = False
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(item))
            continue
        t = type(item)
        if t is int and _INT_LIMIT is not None and not -_INT_LIMIT < item < _INT_LIMIT:
            return f"an int of more than {_DIGITS} digits cannot be written as text", tagged
        if t is bytes:
            tagged = True
        if t not in containers and t is not Secret:
            continue
        tagged = tagged or t is Secret
        if id(item) in on_path:
            return "it contains a reference cycle (a container that holds itself)", tagged
        if depth >= MAX_DEPTH:
            return f"containers nested more than {MAX_DEPTH} deep", tagged
        on_path.add(id(item))
        stack.append((item, depth, True))
        if t is dict:
            children: Any = [*item.keys(), *item.values()]
        elif t is Secret:
            children = [item.value]
        else:
            children = item
        stack.extend((c, depth + 1, False) for c in children)
    return None, tagged


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _with_secrets(value: Any, depth: int) -> Any:
    """`value` with its secrets and bytes tagged, if it is plain JSON apart from them; else None."""
    t = type(value)
    if t is bytes:
        return {BYTES_TAG: _b64(value)}
    if t is Secret:
        inner = value.value
        return {SECRET_TAG: inner} if is_exact_json(inner) else None
    if depth >= MAX_JSON_DEPTH or t not in (list, dict):
        return value if is_exact_json(value, depth) else None
    if t is dict and any(tag in value for tag in _TAGS):
        return None
    if t is dict:
        items = [(k, _with_secrets(v, depth + 1)) for k, v in value.items()]
        ok = all(type(k) is str and (v is not None or value[k] is None) for k, v in items)
        return dict(items) if ok else None
    elems = [_with_secrets(v, depth + 1) for v in value]
    ok = all(e is not None or v is None for e, v in zip(elems, value, strict=True))
    return elems if ok else None


def decode(data: Any, codec: str = "auto", where: str = "a stored value") -> Any:
    """Rebuild a value from `encode`'s output.

    `codec="auto"` unpickles; `"json"` and `READ_ONLY` raise `DillRefused` for a pickled
    value (`where` names it in the message: the run and the journal line). A pickle that
    cannot be read raises `SerializationError`.
    """
    if type(data) is not dict:
        return data
    if SECRET_TAG in data:
        return Secret(decode(data[SECRET_TAG], codec, where))
    if TREE_TAG in data:
        return _untree(data[TREE_TAG])
    if BYTES_TAG in data:
        return _unbytes(data, where)
    if DILL_TAG not in data:
        return data
    if codec != "auto":
        why = (
            "Engine(codec='json') never unpickles"
            if codec == "json"
            else "reading a store never unpickles"
        )
        raise DillRefused(f"{where} is stored with dill ({peek(data)!r}): {why}")
    try:
        blob = base64.b64decode(data[DILL_TAG], validate=True)
        scripts = data.get(SCRIPTS_TAG) or {}
        return pickling.loads(blob, scripts if isinstance(scripts, dict) else {})
    except (binascii.Error, TypeError) as exc:
        raise SerializationError(f"{where} is not a valid dill value: {exc}") from exc
    except Exception as exc:
        raise SerializationError(
            f"{where} ({peek(data)!r}) cannot be rebuilt here: {type(exc).__name__}: {exc}"
        ) from exc


def _unbytes(data: dict[str, Any], where: str = "a stored value") -> bytes:
    """The bytes of `{"$bytes": "<base64>"}`; `SerializationError` if it is not base64."""
    try:
        return base64.b64decode(data[BYTES_TAG], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise SerializationError(f"{where} is not valid base64 bytes: {exc}") from exc


def _untree(data: Any, depth: int = 0) -> Any:
    if depth > _READ_DEPTH:  # only a hand-made journal gets here: `encode` nests far less
        raise SerializationError(f"a stored value is nested more than {_READ_DEPTH} deep")
    if type(data) is list:
        return [_untree(v, depth + 1) for v in data]
    if type(data) is dict:
        if SECRET_TAG in data:
            return Secret(data[SECRET_TAG])
        if BYTES_TAG in data:
            return _unbytes(data)
        return {k: _untree(v, depth + 1) for k, v in data.items()}
    return data


def peek(data: Any) -> Any:
    """A stored value as far as it can be seen without running anything.

    Plain JSON as itself, a secret as a `Secret`, a pickled value as a `DillValue`;
    never raises (a hand-made value nested too deep reads as a short text).
    """
    if type(data) is not dict:
        return data
    try:
        return _peek(data)
    except (RecursionError, SerializationError):
        return "<a value nested too deep to show>"


def _peek(data: Any) -> Any:
    if type(data) is not dict:
        return data
    if SECRET_TAG in data:
        return Secret(_peek(data[SECRET_TAG]))
    if TREE_TAG in data:
        return _untree(data[TREE_TAG])
    if BYTES_TAG in data:
        return _unbytes(data)
    if DILL_TAG in data:
        blob = data[DILL_TAG]
        size = len(blob) * 3 // 4 - blob.count("=") if isinstance(blob, str) else 0
        name = data.get(TYPE_TAG)
        return DillValue(name if isinstance(name, str) else None, size)
    return data


def masked(data: Any, depth: int = 0) -> Any:
    """A stored value (or a journal event) with every secret's content replaced by `"***"`.

    What is nested deeper than JSON values are stored (a hand-made journal) is replaced too.
    """
    if depth > _READ_DEPTH:
        return "<nested too deep to show>"
    if type(data) is list:
        return [masked(v, depth + 1) for v in data]
    if type(data) is dict:
        if SECRET_TAG in data:
            return {**data, SECRET_TAG: "***"}
        if DILL_TAG in data:
            return {**data, DILL_TAG: "***"} if data.get(HIDDEN_TAG) else data
        return {k: masked(v, depth + 1) for k, v in data.items()}
    return data


def code_ref(ref: dict[str, Any], codec: str) -> dict[str, Any]:
    """A run's code reference as `codec` may use it: without the dill copy unless "auto"."""
    return ref if codec == "auto" else {k: v for k, v in ref.items() if k != "dill"}


def dill_copy(obj: Any) -> str | None:
    """Return a base64 dill copy of `obj` (a function, say), or None when it cannot be made."""
    try:
        import dill

        return base64.b64encode(dill.dumps(obj, protocol=4)).decode("ascii")
    except Exception:  # a best-effort last resort: its absence is reported when needed
        return None


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
