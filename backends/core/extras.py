"""Optional dependencies (pip extras): a feature imports its package through :func:`require`, so
a missing extra reads as the one ``pip install`` line that fixes it, never an ImportError
traceback from deep inside a run.

The base install is the console, the host CPU, phones and power; ``pyproject.toml`` lists the
extras (``openvino``, ``cluster``, ``plots``, ``parquet``, ``agent``; ``all`` is every one).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class MissingExtra(ImportError):
    """A feature's optional package is not installed; the message names the extra to install.

    An ImportError, so code that already falls back on a missing import keeps doing so; the CLI
    turns it into a one-line error and a usage exit code.
    """

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        self.feature = feature
        super().__init__(missing_message(module, extra, feature), name=module)


def install_command(extra: str) -> str:
    """The command that installs ``extra`` (quoted: shells expand the brackets)."""
    return f"pip install 'devlab[{extra}]'"


def missing_message(module: str, extra: str, feature: str) -> str:
    """``OpenVINO devices need the openvino extra: pip install 'devlab[openvino]' (...)``;
    ``feature`` is a plural noun phrase."""
    top = module.partition(".")[0]
    return (
        f"{feature} need the {extra} extra: {install_command(extra)} "
        f"(the {top} package is not installed)"
    )


def available(module: str) -> bool:
    """Whether ``module``'s top-level package is installed, without importing it (cheap enough
    for discovery polls)."""
    top = module.partition(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except ValueError:  # imported already, without a spec (a test's stand-in module)
        return True


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``module`` imported; MissingExtra naming ``extra`` when its package is not installed.

    Only the package's own absence becomes MissingExtra: a package that is installed but fails
    to import (a broken wheel, a missing system library) raises its own error, which is the
    one worth reading then.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if not _names_module(error.name, module):
            raise
        raise MissingExtra(module, extra, feature) from None


def ensure(module: str, extra: str, feature: str) -> None:
    """MissingExtra naming ``extra`` unless ``module``'s package is installed; imports nothing,
    for a package (``backends.cluster``) to check on its own import what its modules need."""
    if not available(module):
        raise MissingExtra(module, extra, feature)


def _names_module(missing: str | None, module: str) -> bool:
    """Whether a ModuleNotFoundError for ``missing`` means ``module`` itself is absent (it or
    one of its parent packages), not one of its own dependencies."""
    return missing is not None and (module == missing or module.startswith(missing + "."))
