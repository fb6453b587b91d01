"""Where effagent finds data: one resolver, and the recorded routing outcomes that ship with the package.

Order: an explicit folder (a ``--data-dir`` option) > ``$EFFAGENT_DATA_DIR`` > the data shipped in this package.
The first two point at a folder laid out like the project's shared data (``routing/…``, ``tasks/…``); the
shipped data is the compact form of the recorded sets that ``effagent bench replay`` needs (see
``effagent.data.recorded`` and ``LICENSES.md`` next to this file).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "EFFAGENT_DATA_DIR"
PACKAGE_DATA = Path(__file__).resolve().parent

__all__ = ["DATA_ENV", "PACKAGE_DATA", "DataNotFoundError", "data_dir", "require"]


class DataNotFoundError(FileNotFoundError):
    """A data file effagent needs is in none of the places it looks."""


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The raw data folder: ``explicit``, else ``$EFFAGENT_DATA_DIR``, else None (use the shipped data)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return None


def require(relative: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """``relative`` (e.g. ``routing/llmrouter_train.json``) inside the raw data folder, or a clear error."""
    base = data_dir(explicit)
    if base is None:
        raise DataNotFoundError(
            f"{relative} is not shipped with effagent: pass --data-dir DIR or set {DATA_ENV}=DIR "
            "(a folder holding routing/ and tasks/ as in the project's shared data)"
        )
    path = base / relative
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: check --data-dir / {DATA_ENV} ({base})")
    return path
