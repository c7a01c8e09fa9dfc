"""Paging: ``limit`` and ``offset``, one row more fetched to know whether a next page is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime

MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


FIRST_YEAR, LAST_YEAR = 2000, 2200


def _bounded(at: datetime) -> datetime:
    """A time the stores can have: far dates overflow the arithmetic of ranges and zones."""
    try:
        year = at.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"a time between the years {FIRST_YEAR} and {LAST_YEAR} is needed")
    return at


Moment = Annotated[AwareDatetime, AfterValidator(_bounded)]
"""A query's time: with its zone, between 2000 and 2200."""


def next_offset(rows: Sequence[Any], limit: int, offset: int) -> int | None:
    return offset + limit if len(rows) > limit else None
