"""Paging: ``limit`` and ``offset``, one row more fetched to know whether a next page is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Query

MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def next_offset(rows: Sequence[Any], limit: int, offset: int) -> int | None:
    return offset + limit if len(rows) > limit else None
