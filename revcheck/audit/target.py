"""Resolve a candidate given as text: ``package.module:function`` or ``path/to/file.py:function``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from revcheck.errors import UsageError

__all__ = ["TargetError", "load_target"]


class TargetError(UsageError):
    """The target text names nothing callable; the message is one line saying why."""


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def load_target(target: str) -> Callable[..., Any]:
    """The callable that ``MODULE:FUNCTION`` or ``FILE.py:FUNCTION`` names (attributes may be dotted)."""
    module_part, sep, attribute = target.rpartition(":")
    if not sep or not module_part or not attribute:
        raise TargetError(
            f"target {target!r} is not MODULE:FUNCTION; use e.g. mypackage.kernels:pam_mul "
            "or path/to/file.py:pam_mul"
        )
    module = _load_file(module_part) if _is_path(module_part) else _import(module_part)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(
                f"{module_part} has no attribute {attribute!r}; its functions are: {_functions_of(module)}"
            ) from None
    if not callable(obj):
        raise TargetError(f"{target} is a {type(obj).__name__}, not a function; name a callable kernel")
    return obj  # type: ignore[no-any-return]


def _import(name: str) -> Any:
    # Like `python -m`: the current directory is importable, so `revcheck audit mykernels:f` works.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except SystemExit as exit_:  # a script-like module that ends the process at import
        raise TargetError(_exit_message(f"module {name!r}", exit_)) from None
    except Exception as error:  # any failure while importing the user's module is a usage error
        raise TargetError(
            f"cannot import module {name!r}: {type(error).__name__}: {_one_line(error)}"
        ) from None


def _load_file(path_text: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise TargetError(
            f"no such file {path_text!r}; give an existing .py file or an importable module name"
        )
    module_name = f"_revcheck_target_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {path_text!r} as a Python module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exit_:
        del sys.modules[module_name]
        raise TargetError(_exit_message(repr(path_text), exit_)) from None
    except Exception as error:
        del sys.modules[module_name]
        raise TargetError(
            f"cannot import {path_text!r}: {type(error).__name__}: {_one_line(error)}"
        ) from None
    return module


def _exit_message(what: str, exit_: SystemExit) -> str:
    return (
        f"importing {what} called sys.exit({exit_.code!r}); a kernel module must not exit when imported "
        "(put script code under `if __name__ == '__main__':`)"
    )


def _functions_of(module: Any) -> str:
    names = sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    )
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return shown or "none"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""
