"""Config and sweep files: Python modules read by calling one function, and config diffs."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lmx.config.convert import apply_overrides
from lmx.config.tree import Config
from lmx.errors import ConfigError


def load_config(path: str | Path, overrides: Mapping[str, Any] | Iterable[str] = ()) -> Config:
    """Imports a config file (a Python module defining ``get_config()``, or a resolved config saved
    as JSON, like a run's ``config.json``) and applies overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.suffix == ".json":
        try:
            return apply_overrides(Config.from_json(path.read_text(encoding="utf-8")), overrides)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except (UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"{path}: cannot read it as UTF-8 JSON ({e})") from None
    cfg = call_python_file(path, "get_config", "config file")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, expected lmx.config.Config")
    return apply_overrides(cfg, overrides)


def call_python_file(path: str | Path, function: str, what: str) -> Any:
    """Imports the Python file `path` and returns what its `function()` returns: how config files
    (``get_config``) and sweep files (``get_sweep``) are read. Errors are ConfigErrors naming the
    file; `what` says what it is ("config file", "sweep file")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    module_name = f"lmx_{function}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} {str(path)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses defined in the file need their module registered
    try:
        try:
            spec.loader.exec_module(module)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except Exception as e:
            raise ConfigError(f"{_where(path, e)}: {what} failed to import: {type(e).__name__}: {e}") from e
        fn = getattr(module, function, None)
        if not callable(fn):
            raise ConfigError(f"{what} {str(path)!r} defines no {function}() function")
        try:
            return fn()
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except Exception as e:  # the user's code: one line naming where it failed, no traceback
            raise ConfigError(f"{_where(path, e)}: {function}() raised {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(module_name, None)


def _where(path: Path, error: BaseException) -> str:
    """``path:line`` of the innermost frame of `error`'s traceback in the file `path`, else the path
    (a SyntaxError carries its own line)."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"model.d_model": 256, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two flattened configs (or are in only one)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
