"""Where the tests find the real data sets (``mot/TUD-Campus``, ...), and a mark that skips
a test, saying where it looked, when they are not there.

The folder is ``AISLE_SHARED_DATA`` if set, else ``../shared/data`` beside the
repository (where the project keeps it); the first of the two that holds what a test
needs is used. A clone elsewhere (CI) sets the variable or skips those tests. Not
``AISLE_DATA_DIR``: that is aisle's own data folder (the embedded server's store, the
outboxes), which tests and commands write to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = ["ENV", "ROOT", "candidates", "needs", "shared"]

ROOT = Path(__file__).resolve().parent.parent
ENV = "AISLE_SHARED_DATA"


def candidates(env: Mapping[str, str] | None = None) -> list[Path]:
    """The folders looked in, in order."""
    env = os.environ if env is None else env
    found = [Path(env[ENV]).expanduser()] if env.get(ENV) else []
    return [*found, ROOT.parent / "shared" / "data"]


def shared(relative: str, env: Mapping[str, str] | None = None) -> Path | None:
    """``relative`` in the first folder that holds it; None if none does."""
    for folder in candidates(env):
        if (folder / relative).exists():
            return folder / relative
    return None


def needs(relative: str) -> tuple[Path, pytest.MarkDecorator]:
    """Where ``relative`` is (or would be), and a mark that skips the tests using it
    where it is not, naming the folders looked in and the variable to set."""
    path = shared(relative)
    looked = " and ".join(str(folder / relative) for folder in candidates())
    reason = f"real data not found: no {looked} (set {ENV} to the folder that holds {relative})"
    return path or candidates()[-1] / relative, pytest.mark.skipif(path is None, reason=reason)
