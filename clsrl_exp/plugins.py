"""Load a user's object by name: `package.module:attr` or `path/to/file.py:attr` (EasyR1's reward-function style).

Registries (rewards, generation backends, dataset formats) accept such a name wherever they accept one of their
own keys, so a new reward or backend needs no edit to this package. A file path is taken relative to the working
directory (Hydra does not change it here: `hydra.job.chdir=false`) unless absolute.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def is_import_path(name: str) -> bool:
    """True for `module:attr` / `file.py:attr` names (registry keys never contain a colon).

    >>> is_import_path("accuracy"), is_import_path("my_rewards.py:length_bonus"), is_import_path("pkg.mod:f")
    (False, True, True)
    """
    return ":" in name


def file_of(name: str) -> Path | None:
    """The file a `path.py:attr` name points at (None for `module:attr` names)."""
    target = name.rpartition(":")[0]
    return Path(target).expanduser() if target.endswith(".py") else None


def load_object(name: str) -> Any:
    """Import `module:attr` or execute `path/to/file.py` (once per path) and return `attr`.

    Raises ImportError with a message naming what was not found.
    """
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise ImportError(f"{name!r} is not of the form 'module:attr' or 'path/to/file.py:attr'")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ImportError(f"{name!r}: file not found: {path}")
        mod_name = "clsrl_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module  # before exec: pickling (multiprocess rewards) finds it by name
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise ImportError(f"{name!r}: cannot import module {target!r} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{name!r}: {target} has no attribute {attr!r}") from None
