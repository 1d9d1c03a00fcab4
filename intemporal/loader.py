"""Finding a workflow's code again, in a process that did not start the run.

The run's first event records a reference: the import path (`module:qualname`), the
script's path when the workflow was defined in a script run as `python script.py`, and a
copy of the function (dill, with the globals it uses) when it cannot be imported by name.
`load_workflow` resolves them in that order: the workflow defined at that import path in
this process, the module imported, the script loaded, the code the user pointed at
(`imports`), the copy. Only when all of these fail does the display name decide, if a
single workflow of this process has it (with a warning naming both places): a workflow
of the same name at another import path never wins over the recorded one.

A script named only by a journal is loaded if `trust.untrusted` finds nothing against it;
a folder named only by a journal is never added to `sys.path`; code the user names
(`imports=`, `--import`) is loaded as given.
"""

from __future__ import annotations

import base64
import contextlib
import dis
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any

from . import codec
from .api import REGISTRY, SCRIPT_PREFIX, Workflow, as_workflow, import_path
from .errors import WorkflowNotFound
from .trust import untrusted

log = logging.getLogger("intemporal.loader")  # the CLI prints its warnings
_refs: dict[int, dict[str, Any]] = {}  # computed once per workflow object: dill is not free


# -- recording ------------------------------------------------------------------------------------
def workflow_ref(wf: Workflow[Any, Any]) -> dict[str, Any]:
    """The record a later process needs to find `wf`'s code."""
    ref = _refs.get(id(wf))
    if ref is not None and ref["_wf"] is wf:
        return ref["ref"]
    fn = wf.fn
    module, qualname = import_path(fn).split(":", 1)
    script = None
    if module == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path and _defines(main, qualname, fn):
            script = os.path.abspath(path)  # else a copy loaded from a journal: no file of its own
    elif module.startswith(SCRIPT_PREFIX):  # a script loaded here: named by its file, as above
        module, script = "__main__", getattr(sys.modules.get(module), "__file__", None)
    out: dict[str, Any] = {"module": module, "qualname": qualname, "script": script}
    if module != "__main__":
        out["path"] = _import_root(module)
    if module == "__main__" or "<locals>" in qualname:
        out["dill"] = code_copy(fn)
    _refs[id(wf)] = {"_wf": wf, "ref": out}
    return out


def _defines(module: Any, qualname: str, fn: Any) -> bool:
    """Whether `fn` is the function `module` defines at `qualname` (any local one counts)."""
    if "<locals>" in qualname:
        return True
    try:
        found = attr_path(module, qualname)
    except AttributeError:
        return False
    return found is fn or getattr(found, "fn", None) is fn


def code_copy(fn: Any) -> str | None:
    """A base64 dill copy of `fn` with the globals it uses (None when one cannot be made).

    Modules are kept by name (imported again on load), everything else the function
    reaches by value: the copy runs without the script that defined it.
    """
    import dill

    class _Pickler(dill.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            by_name = isinstance(obj, types.ModuleType) and sys.modules.get(obj.__name__) is obj
            if by_name and not obj.__name__.startswith(("__main__", SCRIPT_PREFIX)):
                return importlib.import_module, (obj.__name__,)
            return NotImplemented

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # dill warns on stderr for what it cannot reach
            warnings.simplefilter("ignore")  # (a script's Enum): the copy is best effort
            _Pickler(buf, protocol=4, recurse=True).dump(fn)
    except Exception:  # a best-effort last resort: its absence is reported when needed
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _import_root(module: str) -> str | None:
    """The folder to put on `sys.path` so that `module` imports (None if unknown)."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return None
    root = os.path.dirname(os.path.abspath(path))
    depth = module.count(".") + (os.path.basename(path) == "__init__.py")
    for _ in range(depth):
        root = os.path.dirname(root)
    return root


def same_code(ref: dict[str, Any], wf: Workflow[Any, Any]) -> bool:
    """Whether a recorded reference names the code of `wf` (the same import path or file)."""
    if not ref.get("qualname"):
        return True  # recorded before import paths were: the name alone decides
    mine = workflow_ref(wf)
    if (ref.get("module"), ref["qualname"]) != (mine["module"], mine["qualname"]):
        if ref["qualname"] != mine["qualname"]:
            return False
        return _file_of(ref) is not None and _file_of(ref) == _file_of(mine)
    if ref.get("module") != "__main__" or None in (ref.get("script"), mine["script"]):
        return True  # a script's copy, run from a journal: its file is unknown, the name decides
    return _file_of(ref) == _file_of(mine)


def _file_of(ref: dict[str, Any]) -> str | None:
    """The source file a reference names: its script, or its module's file."""
    if ref.get("module") == "__main__":
        return os.path.realpath(ref["script"]) if ref.get("script") else None
    loaded = getattr(sys.modules.get(str(ref.get("module"))), "__file__", None)
    if loaded:
        return os.path.realpath(loaded)
    base = os.path.join(ref.get("path") or "", *str(ref.get("module")).split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if ref.get("path") and os.path.isfile(candidate):
            return os.path.realpath(candidate)
    return None


# -- loading -----------------------------------------------------------------------------------------
def attr_path(obj: Any, qualname: str) -> Any:
    """`obj.a.b.c` for qualname "a.b.c": a nested class or function found by its qualname."""
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_code(spec: str) -> types.ModuleType:
    """Import what the user names: a module ("shop.flows") or a script ("path/to/shop.py")."""
    if spec.endswith(".py") or os.sep in spec:
        if not os.path.isfile(spec):
            raise ImportError(f"no script at {spec}")
        return load_script(os.path.abspath(spec), trusted=True)
    return importlib.import_module(spec)


def script_module_name(path: str) -> str:
    """The name `load_script` gives the module of the script at `path`."""
    return SCRIPT_PREFIX + hashlib.sha1(path.encode()).hexdigest()[:12]


def load_script(path: str, *, trusted: bool = False) -> types.ModuleType:
    """Execute a script as a module without running its `if __name__ == "__main__":` block.

    A script named only by a journal (`trusted=False`) must pass `trust.untrusted`, else
    `WorkflowNotFound` says why and how to confirm it. Runs the script's top level starts
    are logged as a warning: that code runs again on every resume.
    """
    name = script_module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    why = None if trusted else untrusted(path)
    if why is not None:
        raise WorkflowNotFound(
            f"refusing to load script {path}, named by a journal: {why}; check it, then "
            f"pass --import {path} (imports=[{path!r}]) to load it"
        )
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the script's own sibling imports work
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkflowNotFound(f"cannot load script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _watching_starts() as started:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    if started:
        log.warning(
            "loading %s to find a workflow ran its top level, which started %d run(s): %s; "
            'put the code that starts runs under `if __name__ == "__main__":`',
            path,
            len(started),
            ", ".join(started),
        )
    return module


_loading = threading.local()


@contextlib.contextmanager
def _watching_starts() -> Iterator[list[str]]:
    outer = getattr(_loading, "started", None)
    started: list[str] = []
    _loading.started = started
    try:
        yield started
    finally:
        _loading.started = outer


def note_start(run_id: str) -> None:
    """Tell the loader a run is being started on this thread (a script's top level may do it)."""
    started = getattr(_loading, "started", None)
    if started is not None:
        started.append(run_id)


def load_workflow(
    first: dict[str, Any], imports: list[str] | None = None, copies: bool = True
) -> Workflow[Any, Any]:
    """Return the workflow of a run from its first event; raise `WorkflowNotFound` otherwise.

    `imports`: modules (or script paths) the user names, loaded first. `copies=False`
    (an engine with `codec="json"`) never unpickles the journal's copy of the function.
    """
    name = first.get("workflow", "?")
    ref = first.get("ref") or {}
    pointed = [import_code(spec) for spec in imports or []]
    module, qualname = ref.get("module"), ref.get("qualname")
    tried: list[str] = []
    where = f"{module}:{qualname}" if module != "__main__" else f"{qualname} in {ref.get('script')}"
    if module and qualname:
        for step in (_defined_here, _imported, _from_script):
            wf = step(ref, name, tried)
            if wf is not None:
                return wf
        wf = _pointed_at(ref, name, pointed)
        if wf is not None:
            return wf
    if ref.get("dill") and not copies:
        tried.append("the journal's copy (not loaded: codec='json' unpickles nothing)")
    elif ref.get("dill"):
        wf = _from_copy(ref["dill"], name, tried)
        if wf is not None:
            return wf
    found = REGISTRY.named(name)  # the last resort: the display name, if only one has it
    if len(found) == 1:
        if module and qualname:
            log.warning(
                "the code of workflow %r recorded as %s cannot be found; resuming with the only "
                "workflow of that name defined here, %s",
                name,
                where,
                import_path(found[0].fn),
            )
        return found[0]
    others = ", ".join(import_path(wf.fn) for wf in found)
    note = f"; several workflows here have that name, none at that place: {others}" if found else ""
    raise WorkflowNotFound(
        f"cannot find the code of workflow {name!r} (recorded as {where}); tried: "
        f"{'; '.join(tried) or 'nothing recorded'}{note}. The run is left as it was: point at "
        "the code with --import MODULE or --import path/to/script.py "
        "(Engine.resume(run_id, imports=[...])) and resume it again"
    )


def _defined_here(ref: dict[str, Any], name: str, tried: list[str]) -> Workflow[Any, Any] | None:
    """The workflow this process defined at the recorded import path (or in the recorded script)."""
    module, qualname = ref["module"], ref["qualname"]
    if module != "__main__":
        return REGISTRY.find(f"{module}:{qualname}", name)
    script = ref.get("script")
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not script:  # defined in `python -c` or a REPL: only this very process has it
        return None if main else REGISTRY.find(f"__main__:{qualname}", name)
    module = loaded_module_of(script)  # run as __main__, imported (`import shop`), or loaded
    if module is None:
        return None
    try:
        return _lookup(module, qualname, name)
    except WorkflowNotFound as exc:
        tried.append(str(exc))
        return None


def loaded_module_of(path: str) -> types.ModuleType | None:
    """The module of this process loaded from the file at `path` (a script's), if any.

    `__main__` when the script runs as `python script.py`, the module when an application
    imported it (`import shop`), or the one `load_script` made.
    """
    real, base = os.path.realpath(path), os.path.basename(path)
    main = sys.modules.get("__main__")
    candidates = [main, sys.modules.get(script_module_name(path)), *list(sys.modules.values())]
    for module in candidates:
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or os.path.basename(file) != base:
            continue  # cheap first: most modules have another file name
        if os.path.realpath(file) == real:
            return module
    return None


def _imported(ref: dict[str, Any], name: str, tried: list[str]) -> Workflow[Any, Any] | None:
    module, qualname = ref["module"], ref["qualname"]
    if module == "__main__":
        return None
    try:
        mod = _import(module, ref.get("path"))
        return _lookup(mod, qualname, name)
    except WorkflowNotFound as exc:
        tried.append(str(exc))
    except Exception as exc:  # the module's own top level may raise anything
        tried.append(f"import {module}:{qualname} ({type(exc).__name__}: {exc})")
    return None


def _from_script(ref: dict[str, Any], name: str, tried: list[str]) -> Workflow[Any, Any] | None:
    script = ref.get("script")
    if ref["module"] != "__main__" or not script:
        return None
    if not os.path.exists(script):
        tried.append(f"script {script} (missing)")
        return None
    try:
        return _lookup(load_script(script), ref["qualname"], name)
    except WorkflowNotFound as exc:
        tried.append(str(exc))
    except Exception as exc:
        tried.append(f"script {script} ({type(exc).__name__}: {exc})")
    return None


def _lookup(mod: types.ModuleType, qualname: str, name: str) -> Workflow[Any, Any]:
    """The workflow `qualname` of a loaded module: as registered, else its attribute."""
    found = REGISTRY.find(f"{mod.__name__}:{qualname}", name)
    if found is not None:
        return found
    try:
        return as_workflow(attr_path(mod, qualname))
    except (AttributeError, TypeError):
        raise WorkflowNotFound(f"{mod.__name__} defines no workflow {qualname!r}") from None


def _pointed_at(
    ref: dict[str, Any], name: str, pointed: list[types.ModuleType]
) -> Workflow[Any, Any] | None:
    """The workflow in the code the user named: by qualname, else by its unique display name."""
    for mod in pointed:
        with contextlib.suppress(WorkflowNotFound):
            return _lookup(mod, ref["qualname"], name)
    names = {mod.__name__ for mod in pointed}
    found = [wf for wf in REGISTRY.named(name) if import_path(wf.fn).split(":")[0] in names]
    return found[0] if len(found) == 1 else None


def _from_copy(blob: str, name: str, tried: list[str]) -> Workflow[Any, Any] | None:
    """The journal's copy of the function, if it holds every global its code reads.

    It is this run's code only: kept out of the registry, so no other run resumes with it.
    """
    try:
        fn = codec.decode({codec.DILL_TAG: blob})
    except Exception as exc:
        tried.append(f"the journal's copy ({type(exc).__name__}: {exc})")
        return None
    missing = sorted(_missing_globals(fn))
    if missing:
        tried.append(f"the journal's copy (it lacks the globals {', '.join(missing)})")
        return None
    return Workflow(fn, name=name, _register=False)


def _missing_globals(fn: Any) -> set[str]:
    """The global names `fn`'s code (and its nested code) reads that it cannot find."""
    code = getattr(fn, "__code__", None)
    scope = getattr(fn, "__globals__", {})
    builtins = scope.get("__builtins__", {})
    names = vars(builtins) if isinstance(builtins, types.ModuleType) else builtins
    missing: set[str] = set()
    todo = [code] if code is not None else []
    while todo:
        co = todo.pop()
        todo.extend(c for c in co.co_consts if isinstance(c, types.CodeType))
        for ins in dis.get_instructions(co):
            known = ins.argval in scope or ins.argval in names
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and not known:
                missing.add(str(ins.argval))
    return missing


def _import(module: str, root: str | None) -> types.ModuleType:
    """Import `module` from this process's `sys.path`: a folder a journal names is never added."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if not root:
            raise
        raise WorkflowNotFound(
            f"cannot import {module} ({exc}); refusing to add {root}, a folder named by a "
            f"journal, to sys.path: resume from that folder, add it to PYTHONPATH, or pass "
            f"--import with the code's module or script"
        ) from None
