"""Pickles for the journal: classes stored by reference, scripts found again by their file.

A value that JSON cannot hold is pickled with the standard `pickle` when it can be (classes
and functions by reference: no code in the journal), else with `dill` (lambdas, closures,
classes defined in a function). A class defined in a script run as `python shop.py` lives
in the module `__main__`, a name that means another file in every other process: the
blob's record keeps the script's path beside it (`scripts`), and reading maps that
module to the one loaded from the same file here (`script_module`), so `shop.OutOfStock`
and the script's own `OutOfStock` are one class.

Unpickling runs code named by the blob. Only the engine executing a run (and a handle
reading its own result) calls `loads`, and never with `Engine(codec="json")`.

    blob, scripts = dumps((1, 2))
    loads(blob, scripts)          # (1, 2)
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import re
import sys
from types import ModuleType
from typing import Any

SCRIPT_PREFIX = "__intemporal_script_"  # the loader's name for a script loaded as a module
MODULE_REF = "module:"  # in `scripts`: the module `__main__` was when run as `python -m`
_SCRIPT_NAME = re.compile(rb"__intemporal_script_[0-9a-f]+")
_by_file: dict[str, ModuleType] = {}  # a script's real path -> the module loaded from it here


def dumps(value: Any) -> tuple[bytes, dict[str, str]]:
    """Pickle `value`; return the blob and the scripts it names (`{"__main__": "/abs/shop.py"}`).

    Raises whatever the picklers raise (the codec turns it into `SerializationError`).
    """
    try:
        blob = pickle.dumps(value, protocol=4)
    except Exception:
        import dill  # lazy: ~60 ms of import that most runs never need

        try:  # classes by reference even when dill takes over (a lambda in a dataclass)
            blob = dill.dumps(value, protocol=4, byref=True)
        except Exception:
            blob = dill.dumps(value, protocol=4)
    return blob, scripts_named(blob)


def scripts_named(blob: bytes) -> dict[str, str]:
    """The script modules a pickle refers to, with the file each was loaded from."""
    out: dict[str, str] = {}
    names = [m.decode() for m in set(_SCRIPT_NAME.findall(blob))]
    if b"__main__" in blob:
        names.append("__main__")
    for name in names:
        path = script_of(name)
        if path:
            out[name] = path
    return out


def script_of(module: str) -> str | None:
    """Where another process finds module `module` if its name means nothing there.

    For `__main__` and the loader's script modules: the script's absolute path, or
    `"module:pkg.mod"` when `__main__` was run as `python -m pkg.mod`. None otherwise.
    """
    if module != "__main__" and not module.startswith(SCRIPT_PREFIX):
        return None
    mod = sys.modules.get(module)
    spec = getattr(mod, "__spec__", None)
    if module == "__main__" and spec is not None and spec.name and spec.name != "__main__":
        return MODULE_REF + spec.name  # `python -m package.module`: importable by its name
    path = getattr(mod, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


def _by_name(name: str) -> ModuleType:
    """Module `name`; `__main__` itself if this process runs it as `python -m name`."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == name and main is not None:
        return main
    return importlib.import_module(name)


def _file_of(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if isinstance(path, str) else None


def _is_from(module: Any, real: str) -> bool:
    """Whether `module` was loaded from the file `real` (a real path)."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or os.path.basename(path) != os.path.basename(real):
        return False  # cheap first: realpath costs system calls, and this runs per module
    return os.path.realpath(path) == real


def script_module(path: str, load: bool = True) -> ModuleType | None:
    """The module loaded from script `path` in this process.

    `__main__` if this process runs that script, else a module imported from that file
    (`import shop`), else one the loader loaded; failing those, with `load`, the script is
    loaded now (its top level runs, not its `if __name__ == "__main__":` block).
    """
    real = os.path.realpath(path)
    known = _by_file.get(real)
    if known is not None and sys.modules.get(known.__name__) is known:
        return known
    main = sys.modules.get("__main__")
    found: ModuleType | None = main if _file_of(main) == real else None
    if found is None:
        named = [m for m in list(sys.modules.values()) if _is_from(m, real)]
        named.sort(key=lambda m: m.__name__.startswith(SCRIPT_PREFIX))  # imported names first
        found = named[0] if named else None
    if found is None and load and os.path.isfile(path):
        from .loader import load_script  # the loader imports the codec: import it late

        found = load_script(path)
    if found is not None:
        _by_file[real] = found
    return found


def find_object(module: str, qualname: str, scripts: dict[str, str], load: bool = True) -> Any:
    """`module.qualname` (a class, a function) as this process knows it; raise on failure.

    `scripts` maps script modules (`__main__`) to their files; those resolve to the module
    loaded from that file here (`script_module`). Other modules are imported by name.
    """
    path = scripts.get(module)
    mod: Any
    if path and path.startswith(MODULE_REF):
        mod = _by_name(path[len(MODULE_REF) :])
    elif path:
        mod = script_module(path, load)
        if mod is None:
            raise LookupError(f"script {path} is not loaded here")
    else:
        mod = importlib.import_module(module)
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def loads(blob: bytes, scripts: dict[str, str]) -> Any:
    """Unpickle a blob made by `dumps`; script modules named in `scripts` are found by file."""
    if b"dill._dill" in blob:
        import dill

        base: type = dill.Unpickler
    else:
        base = pickle.Unpickler
    return _unpickler(base)(io.BytesIO(blob), scripts).load()


_unpicklers: dict[type, type] = {}


def _unpickler(base: Any) -> Any:
    """An unpickler class over `base` whose `find_class` maps script modules to files."""
    cls = _unpicklers.get(base)
    if cls is None:

        class _ScriptUnpickler(base):
            def __init__(self, file: Any, scripts: dict[str, str]) -> None:
                super().__init__(file)
                self.scripts = scripts

            def find_class(self, module: str, name: str) -> Any:
                if module in self.scripts:
                    return find_object(module, name, self.scripts)
                return super().find_class(module, name)

        cls = _unpicklers[base] = _ScriptUnpickler
    return cls
