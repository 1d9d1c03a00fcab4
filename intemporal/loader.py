"""Finding a workflow's code again, in a process that did not start the run.

The run's first event records a reference: the import path (`module:qualname`), the
script's path when the workflow was defined in a script run as `python script.py`, and a
dill copy of the function as the last resort. `load_workflow` tries them in that order,
after the workflows already defined in this process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

from . import codec
from .api import REGISTRY, Workflow, as_workflow
from .errors import WorkflowNotFound

_refs: dict[int, dict[str, Any]] = {}  # computed once per workflow object: dill is not free


def workflow_ref(wf: Workflow[Any, Any]) -> dict[str, Any]:
    """The record a later process needs to find `wf`'s code."""
    ref = _refs.get(id(wf))
    if ref is not None and ref["_wf"] is wf:
        return ref["ref"]
    fn = wf.fn
    module = getattr(fn, "__module__", None) or "__main__"
    script = None
    by_value = module == "__main__" or "<locals>" in fn.__qualname__
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # run as `python -m package.module`: importable by name
        else:
            path = getattr(main, "__file__", None)
            script = os.path.abspath(path) if path else None
    out: dict[str, Any] = {"module": module, "qualname": fn.__qualname__, "script": script}
    if script is None:
        out["path"] = _import_root(module)
    if by_value:
        out["dill"] = codec.dill_copy(fn)
    _refs[id(wf)] = {"_wf": wf, "ref": out}
    return out


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


def _import(module: str, root: str | None) -> Any:
    """Import `module`, from `root` too if it is not importable from here."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if not root or root in sys.path or not os.path.isdir(root):
            raise
        sys.path.append(root)
        return importlib.import_module(module)


def attr_path(obj: Any, qualname: str) -> Any:
    """`obj.a.b.c` for qualname "a.b.c": a nested class or function found by its qualname."""
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_script(path: str) -> ModuleType:
    """Execute a script as a module without running its `if __name__ == "__main__":` block."""
    name = "__intemporal_script_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the script's own sibling imports work
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkflowNotFound(f"cannot load script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_workflow(first: dict[str, Any], imports: list[str] | None = None) -> Workflow[Any, Any]:
    """Return the workflow of a run from its first event; raise `WorkflowNotFound` otherwise."""
    name = first.get("workflow", "?")
    ref = first.get("ref") or {}
    tried: list[str] = []
    for mod in imports or []:
        importlib.import_module(mod)
    if name in REGISTRY:
        return REGISTRY[name]
    module, qualname = ref.get("module"), ref.get("qualname")
    if module and module != "__main__" and qualname:
        try:
            return as_workflow(attr_path(_import(module, ref.get("path")), qualname))
        except Exception as exc:
            tried.append(f"import {module}:{qualname} ({type(exc).__name__}: {exc})")
    script = ref.get("script")
    if script:
        if os.path.exists(script):
            try:
                load_script(script)
                if name in REGISTRY:
                    return REGISTRY[name]
                tried.append(f"script {script} (defines no workflow {name!r})")
            except Exception as exc:
                tried.append(f"script {script} ({type(exc).__name__}: {exc})")
        else:
            tried.append(f"script {script} (missing)")
    if ref.get("dill"):
        try:
            return as_workflow(codec.decode({codec.DILL_TAG: ref["dill"]}))
        except Exception as exc:
            tried.append(f"dill copy ({type(exc).__name__}: {exc})")
    raise WorkflowNotFound(
        f"cannot find the code of workflow {name!r}; tried: {'; '.join(tried) or 'nothing recorded'}"
        " (pass --import MODULE, or import the module that defines it)"
    )
