"""The consoles the commands print to.

rich wraps its output at the terminal's width, and at 80 columns when there is no
terminal: a table piped into ``grep`` or a file had its ids and numbers cut in two.
Without a terminal the lines stay whole (unless ``COLUMNS`` says otherwise); at a
terminal nothing changes.
"""

from __future__ import annotations

import os

import rich.console

# Wide enough for any row a command prints; tables still take only what they need.
PIPE_WIDTH = 4096


class Console(rich.console.Console):
    """rich's console, whole lines when the output is no terminal."""

    @property
    def size(self) -> rich.console.ConsoleDimensions:
        size = super().size
        explicit = self._width is not None or os.environ.get("COLUMNS", "").isdigit()
        if self.is_terminal or explicit:
            return size
        return rich.console.ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        rich.console.Console.size.fset(self, new_size)  # type: ignore[attr-defined]
