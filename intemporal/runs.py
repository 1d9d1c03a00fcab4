"""How a run is recorded at its start: the first journal event, and finding protocols again."""

from __future__ import annotations

import importlib
import inspect
import os
import threading
import time
from typing import Any

from .api import Workflow
from .codec import code_ref, decode, encode
from .errors import RunConflict, SerializationError
from .events import JOURNAL_VERSION, RUN_STARTED
from .loader import attr_path, load_script, note_start, same_code, workflow_ref
from .store import Event

_ID_BYTES = 16
_random = bytearray()  # OS randomness not handed out yet
_random_lock = threading.Lock()
os.register_at_fork(after_in_child=_random.clear)  # a child must not repeat its parent's ids


def new_run_id() -> str:
    """A new random run id: 32 hex digits (128 bits from the OS, like a uuid4's hex).

    The bytes come from a buffer refilled 256 ids at a time: `uuid.uuid4()` costs a
    system call per id, and `start()` on a busy engine waits for the GIL after each one.
    """
    with _random_lock:
        if len(_random) < _ID_BYTES:
            _random.extend(os.urandom(_ID_BYTES * 256))
        chunk = _random[-_ID_BYTES:]
        del _random[-_ID_BYTES:]
    return chunk.hex()


def first_event(
    run_id: str,
    wf: Workflow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    codec: str,
    queue: str | None,
    protocols: dict[type, Any],
    parent: str | None = None,
    now: float | None = None,
) -> Event:
    """The `run_started` event: what a later process needs to execute the run again.

    `now` (epoch seconds, default the real time) is when the run was created.
    """
    if parent is None:
        note_start(run_id)  # a script's top level may be starting it: see `load_script`
    enc_args, enc_kwargs = _encode_args(wf, args, kwargs, codec)
    first: Event = {
        "type": RUN_STARTED,
        "version": JOURNAL_VERSION,
        "run_id": run_id,
        "workflow": wf.name,
        "args": enc_args,
        "kwargs": enc_kwargs,
        "ref": code_ref(workflow_ref(wf), codec),  # codec="json" writes no dill copy
        "queue": queue or wf.queue,
        "ts": round(time.time() if now is None else now, 6),
    }
    if parent is not None:
        first["parent"] = parent
    if protocols:
        first["protocols"] = {
            f"{p.__module__}:{p.__qualname__}": f"{type(i).__module__}:{type(i).__qualname__}"
            for p, i in protocols.items()
        }
    return first


def recorded_args(first: Event, codec: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A run's arguments, decoded from its first event with `codec` ("auto", "json", READ_ONLY).

    A value that cannot be read (or is refused: `DillRefused`) raises `SerializationError`
    naming the argument, the run and the journal line.
    """
    where = f"run {first.get('run_id')!r} (journal line 1)"
    args = tuple(
        decode(a, codec, f"argument {i} of {where}") for i, a in enumerate(first.get("args", []))
    )
    kwargs = {
        k: decode(v, codec, f"argument {k!r} of {where}")
        for k, v in first.get("kwargs", {}).items()
    }
    return args, kwargs


def check_same_run(
    run_id: str, first: Event, wf: Workflow[Any, Any], parent: str | None = None
) -> None:
    """Raise `RunConflict` unless the run recorded by `first` is a run of `wf`.

    Same workflow means the same display name and the same code (import path, or the
    same file). With `parent`, the run must also be that run's child: a run a user
    started at a child's id is never taken for the child.
    """
    recorded, ref = str(first.get("workflow")), first.get("ref") or {}
    if recorded != wf.name or not same_code(ref, wf):
        existing, wanted = recorded, wf.name
        if recorded == wf.name:  # the same name for other code: say where each is
            existing, wanted = (
                f"{recorded} ({_where(ref)})",
                f"{wf.name} ({_where(workflow_ref(wf))})",
            )
        raise RunConflict(run_id, existing, wanted)
    if parent is not None and first.get("parent") != parent:
        by = f"run {first['parent']!r}" if first.get("parent") else "no parent"
        raise RunConflict(run_id, f"{recorded}, started by {by}", f"a child of run {parent!r}")


def _where(ref: dict[str, Any]) -> str:
    if ref.get("module") == "__main__":
        return f"{ref.get('qualname')} in {ref.get('script')}"
    return f"{ref.get('module')}:{ref.get('qualname')}"


def _encode_args(
    wf: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], codec: str
) -> tuple[list[Any], dict[str, Any]]:
    """Encode a run's arguments, naming the one that cannot be stored."""
    out = []
    for i, value in enumerate(args):
        try:
            out.append(encode(value, codec))
        except SerializationError as exc:  # only now pay for the signature, to name it
            try:
                names = list(inspect.signature(wf.fn).parameters)
            except (TypeError, ValueError):
                names = []
            label = f"{names[i]!r} (position {i})" if i < len(names) else f"at position {i}"
            raise _arg_error(wf, label, exc) from exc
    return out, {k: _encode_arg(wf, repr(k), v, codec) for k, v in kwargs.items()}


def _arg_error(wf: Workflow[Any, Any], label: str, exc: SerializationError) -> SerializationError:
    return SerializationError(f"argument {label} of workflow {wf.name!r} cannot be stored: {exc}")


def _encode_arg(wf: Workflow[Any, Any], label: str, value: Any, codec: str) -> Any:
    try:
        return encode(value, codec)
    except SerializationError as exc:
        raise _arg_error(wf, label, exc) from exc


def rebuild_protocols(first: Event) -> dict[type, Any]:
    """Recreate protocol implementations recorded at start, where their class takes no arguments.

    Classes defined in a script run as `__main__` are found in that script, loaded as a module.
    """
    out: dict[type, Any] = {}
    script = (first.get("ref") or {}).get("script")
    for proto_ref, impl_ref in first.get("protocols", {}).items():
        try:
            proto, impl = _resolve(proto_ref, script), _resolve(impl_ref, script)
            if isinstance(proto, type) and isinstance(impl, type):  # never call what is not a class
                out[proto] = impl()
        except Exception:  # reported when the workflow calls the protocol without one
            continue
    return out


def _resolve(ref: str, script: str | None) -> Any:
    module, qualname = ref.split(":", 1)
    obj: Any
    if module == "__main__" and script:
        obj = load_script(script)
    else:
        obj = importlib.import_module(module)
    return attr_path(obj, qualname)
