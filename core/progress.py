"""The progress of a long command, on stderr so that stdout stays the command's result.

At a terminal, rich's bar. Elsewhere (a pipe, a file, a CI log) a plain line at most every
``every_s`` seconds and one at the end: a bar there printed nothing until the command
ended, and a bar drawn into a log would fill it.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import Progress

from core.console import Console


class Steps:
    """``with Steps("publishing", total) as steps: steps.advance(n)``."""

    def __init__(
        self, label: str, total: float, *, console: Console | None = None, every_s: float = 10.0
    ) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.console = console or Console(stderr=True)
        self.done = 0.0
        self._bar: Progress | None = None
        self._task = None
        self._said = 0.0
        self._said_done: float | None = None

    def __enter__(self) -> Steps:
        if self.console.is_terminal:
            self._bar = Progress(console=self.console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        self._said = time.monotonic()
        return self

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, completed: float) -> None:
        self.done = completed
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed)
        elif time.monotonic() - self._said >= self.every_s:
            self._say()

    def _say(self) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        self.console.print(
            f"{self.label}: {self.done:,.0f} of {self.total:,.0f}{share}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        self._said, self._said_done = time.monotonic(), self.done

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
        elif kind is None and self._said_done != self.done:
            self._say()
